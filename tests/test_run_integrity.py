"""Results you can trust: one config and one process per run directory, nothing non-finite kept (a diverged run is
recorded as such), checkpoints and run files that name their damage, files the group can read, wandb that never
stops a run, and a run counted once however many folders hold it."""

from __future__ import annotations

import errno
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import torch
import yaml

from varshift import training
from varshift.analysis.collect import collect
from varshift.identity import run_identity
from varshift.io import CorruptFile, atomic_write, atomic_write_text
from varshift.rundir import LOCK_FILE, RunDirInUse, locked
from varshift.tracking import WANDB_TIMEOUT_S, RunRecorder
from varshift.training import CHECKPOINT, CONFIG_FILE, ParentExited, Trainer, TrainingDiverged, load_checkpoint
from varshift.training import trainer as trainer_module
from varshift.training.loop import Evaluation

RESULT_FILES = (CONFIG_FILE, CHECKPOINT, "metrics.jsonl", "variance.csv", "alignment.csv", "summary.json")
# a hang guard for the subprocess tests, not a measurement
DEADLINE_S = 120


def snapshot(run_dir: Path) -> dict:
    """Every file under ``run_dir``: its bytes, modification time and mode."""
    return {path.relative_to(run_dir): (path.read_bytes(), path.stat().st_mtime_ns, path.stat().st_mode)
            for path in sorted(run_dir.rglob("*")) if path.is_file()}


def reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def read_strict_json(path: Path) -> list:
    return [json.loads(line, parse_constant=reject_constant) for line in path.read_text().splitlines()]


def die_in_epoch(epoch: int, monkeypatch) -> None:
    """Make ``Trainer.train_epoch`` raise KeyboardInterrupt (a kill) when it starts ``epoch``."""
    original = Trainer.train_epoch

    def train_one_epoch(self):
        if self.epoch == epoch:
            raise KeyboardInterrupt("killed")
        return original(self)

    monkeypatch.setattr(Trainer, "train_epoch", train_one_epoch)


# -- item 3: the run's config.yaml is the source of truth; a skip or a refusal changes no file --

def test_config_yaml_is_written_once_and_a_skip_or_a_refusal_changes_no_file(make_config, tmp_path):
    cfg = make_config("trainer.epochs=1")
    summary = training.run(cfg, tmp_path)
    assert yaml.safe_load((tmp_path / CONFIG_FILE).read_text()) == cfg
    before = snapshot(tmp_path)

    assert training.run(make_config("trainer.epochs=1", "trainer.progress=true"), tmp_path) == summary
    assert snapshot(tmp_path) == before
    with pytest.raises(ValueError, match=r"config.yaml was written with another config \(dropout.rate: 0.5 -> 0.3\)"
                                         r".*only logger, trainer.progress"):
        training.run(make_config("trainer.epochs=1", "dropout.rate=0.3"), tmp_path)
    assert snapshot(tmp_path) == before


def test_a_run_written_before_a_key_existed_is_the_same_run_at_the_keys_default(make_config, tmp_path):
    """config.yaml of an earlier varshift lacks the keys added since (trainer.sync_bn, dataset.resize): a rerun skips
    the complete run instead of refusing it, and the analysis and the sweep see one identity."""
    cfg = make_config("trainer.epochs=1")
    summary = training.run(cfg, tmp_path)
    older = yaml.safe_load((tmp_path / CONFIG_FILE).read_text())
    del older["trainer"]["sync_bn"], older["trainer"]["collective_timeout_s"], older["dataset"]["resize"]
    (tmp_path / CONFIG_FILE).write_text(yaml.safe_dump(older, sort_keys=False))
    before = snapshot(tmp_path)

    assert training.run(cfg, tmp_path) == summary
    assert snapshot(tmp_path) == before
    assert run_identity(older) == run_identity(cfg)
    with pytest.raises(ValueError, match=r"trainer.sync_bn: False -> True"):
        training.run(make_config("trainer.epochs=1", "trainer.sync_bn=true"), tmp_path)


def test_a_resume_with_another_neutral_value_keeps_the_original_config_yaml(make_config, tmp_path, monkeypatch):
    cfg = make_config("trainer.epochs=2")
    die_in_epoch(2, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        training.run(cfg, tmp_path)
    written = (tmp_path / CONFIG_FILE).read_text()
    monkeypatch.undo()
    training.run(make_config("trainer.epochs=2", "trainer.progress=true"), tmp_path)
    assert (tmp_path / CONFIG_FILE).read_text() == written


def test_an_incomplete_run_with_a_changed_config_is_refused_without_writing(make_config, tmp_path, monkeypatch):
    die_in_epoch(2, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        training.run(make_config("trainer.epochs=2"), tmp_path)
    monkeypatch.undo()
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match=r"optim.lr: 0.05 -> 0.1"):
        training.run(make_config("trainer.epochs=2", "optim.lr=0.1"), tmp_path)
    assert snapshot(tmp_path) == before


# -- item 4: one process per run directory; orphaned workers stop --

def test_a_second_process_fails_at_once_naming_the_holder(make_config, tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from varshift.rundir import locked\n"
                               "with locked(sys.argv[1]):\n    print('held', flush=True); sys.stdin.read()",
         str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        in_use = rf"run directory {re.escape(str(tmp_path))} is in use by process {holder.pid} \(started \d{{4}}-"
        with pytest.raises(RunDirInUse, match=in_use):
            training.run(make_config("trainer.epochs=1"), tmp_path)
        assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_FILE]
    finally:
        holder.kill()
        holder.wait()
    with locked(tmp_path):  # the kernel released the lock of the killed holder
        assert (tmp_path / LOCK_FILE).read_text().split()[0] == str(os.getpid())
    assert not (tmp_path / LOCK_FILE).exists()


def is_running(pid: int) -> bool:
    """Whether ``pid`` runs (an exited child that nobody reaped yet is a zombie, state Z)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting {DEADLINE_S} s for {what}")
        time.sleep(0.05)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_a_run_stops_when_the_process_that_started_it_is_killed(make_config, tmp_path):
    cfg = make_config("trainer.epochs=500", "trainer.threads=1")
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    run_dir, log = tmp_path / "run", tmp_path / "worker.log"
    worker = ("import json, sys; from varshift import training; "
              "training.run(json.load(open(sys.argv[1])), sys.argv[2], stop_with_parent=True)")
    # bash plays the multirun parent: it starts the worker, then is killed as the multirun would be
    parent = subprocess.Popen(["bash", "-c", '"$0" -c "$1" "$2" "$3" > "$4" 2>&1 & echo $!; wait',
                               sys.executable, worker, tmp_path / "cfg.json", run_dir, log],
                              stdout=subprocess.PIPE, text=True)
    worker_pid = int(parent.stdout.readline())
    try:
        wait_until(lambda: (run_dir / CHECKPOINT).exists() or not is_running(worker_pid), "the first checkpoint")
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        wait_until(lambda: not is_running(worker_pid), "the orphaned worker to stop")
    finally:
        if is_running(worker_pid):
            os.kill(worker_pid, signal.SIGKILL)
    output = log.read_text()
    assert f"{ParentExited.__name__}: the process that started this run (pid {parent.pid}) has exited" in output, output
    epochs = load_checkpoint(run_dir / CHECKPOINT)["epoch"]
    assert 1 <= epochs < 500 and len(read_strict_json(run_dir / "metrics.jsonl")) == epochs
    assert not (run_dir / "summary.json").exists() and not (run_dir / LOCK_FILE).exists()


# -- item 5: early stopping survives an interruption --

def test_an_early_stopped_run_interrupted_before_its_summary_does_not_train_on(make_config, tmp_path, monkeypatch):
    cfg = make_config("trainer.epochs=4", "dataset.val_split=0.2", "trainer.early_stopping.patience=1")
    monkeypatch.setattr(Trainer, "update_early_stopping", lambda self, val_acc: self.epoch < 2)
    finish = Trainer.finish

    def killed_before_the_summary(self):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(Trainer, "finish", killed_before_the_summary)
    with pytest.raises(KeyboardInterrupt):
        training.run(cfg, tmp_path)
    monkeypatch.setattr(Trainer, "finish", finish)
    summary = training.run(cfg, tmp_path)
    assert summary["epochs"] == 2 and summary["stopped_early"]
    assert [row["epoch"] for row in read_strict_json(tmp_path / "metrics.jsonl")] == [1, 2]


# -- item 6: nothing non-finite is kept --

def assert_diverged(run_dir: Path, epoch: int, checkpoint_epoch: int) -> None:
    """The run's summary.json says it diverged, in which epoch, and which checkpoint it kept."""
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["status"], summary["epoch"], summary["checkpoint_epoch"]) == ("diverged", epoch, checkpoint_epoch)
    assert summary["error"].startswith(f"training diverged in epoch {epoch}: ")


def test_a_nan_test_loss_stops_the_run_and_keeps_the_last_good_checkpoint(make_config, tmp_path, monkeypatch):
    evaluate = Trainer.evaluate
    monkeypatch.setattr(Trainer, "evaluate", lambda self, loader, label: (
        Evaluation(math.nan, 10.0) if self.epoch == 2 and loader is self.loaders.test
        else evaluate(self, loader, label)))
    with pytest.raises(TrainingDiverged, match=r"in epoch 2: the test loss became nan.*checkpoint \(epoch 1\)"):
        training.run(make_config("trainer.epochs=3"), tmp_path)
    assert load_checkpoint(tmp_path / CHECKPOINT)["epoch"] == 1
    assert_diverged(tmp_path, epoch=2, checkpoint_epoch=1)


def test_a_non_finite_bn_buffer_is_never_checkpointed(make_config, tmp_path, monkeypatch):
    original = Trainer.train_epoch

    def poison_running_var_in_epoch_two(self):
        row = original(self)
        if self.epoch == 2:
            self.model.get_submodule("hidden.bn").running_var[3] = math.inf
        return row

    monkeypatch.setattr(Trainer, "train_epoch", poison_running_var_in_epoch_two)
    with pytest.raises(TrainingDiverged, match=r"in epoch 2: hidden.bn.running_var holds NaN or inf"):
        training.run(make_config("trainer.epochs=3"), tmp_path)
    state = load_checkpoint(tmp_path / CHECKPOINT)
    assert state["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())


def test_a_non_finite_variance_probe_is_refused(make_config, tmp_path, monkeypatch):
    measure = trainer_module.measure_variance_shift

    def infinite_shift(*args, **kwargs):  # the trainer takes its per-layer table from the per-channel rows
        return measure(*args, **kwargs).assign(real_var=math.inf)

    monkeypatch.setattr(trainer_module, "measure_variance_shift", infinite_shift)
    with pytest.raises(TrainingDiverged, match=r"epoch 1: the variance probe \(probe\) of BN layer features.0.bn"):
        training.run(make_config("trainer.epochs=2", "probe.every=1"), tmp_path)
    assert not (tmp_path / CHECKPOINT).exists()
    assert_diverged(tmp_path, epoch=1, checkpoint_epoch=0)


def test_records_are_strict_json_with_null_for_non_finite_numbers(tmp_path):
    recorder = RunRecorder(tmp_path, {})
    recorder.log_epoch({"epoch": 1, "images_per_s": math.inf, "mean_shift": math.nan, "lr": 0.1})
    recorder.write_files()
    recorder.write_summary({"mean_shift": math.nan, "nested": {"max_shift": -math.inf}, "test_acc": 50.0})
    assert read_strict_json(tmp_path / "metrics.jsonl") == [
        {"epoch": 1, "images_per_s": None, "mean_shift": None, "lr": 0.1}]
    summary = json.loads((tmp_path / "summary.json").read_text(), parse_constant=reject_constant)
    assert summary == {"mean_shift": None, "nested": {"max_shift": None}, "test_acc": 50.0}


# -- item 7: device and threads --

def test_device_and_threads_are_recorded_a_change_of_them_refused_and_a_new_node_warned(make_config, tmp_path,
                                                                                         monkeypatch, capsys):
    cfg = make_config("trainer.epochs=2")
    die_in_epoch(2, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        training.run(cfg, tmp_path)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / CHECKPOINT)["hardware"] == {"device": "cpu", "threads": torch.get_num_threads()}
    with pytest.raises(ValueError, match=r"trainer.threads: None -> 2"):
        training.run(make_config("trainer.epochs=2", "trainer.threads=2"), tmp_path)

    threads = torch.get_num_threads()
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads + 6)  # requeued on a node with more cores
    summary = training.run(cfg, tmp_path)
    assert (f"ran until epoch 1 on cpu with {threads} torch threads and resumes on cpu with {threads + 6} torch "
            "threads") in capsys.readouterr().err
    assert (summary["device"], summary["threads"]) == ("cpu", threads + 6)


# -- item 12: checkpoints, temporary files, permissions, a full disk --

@pytest.mark.parametrize("damage,named", [
    (lambda data: data[: len(data) // 2], r"is truncated \(\d+ of \d+ bytes\)"),
    (lambda data: data[:-100] + bytes([data[-100] ^ 0x01]) + data[-99:], r"is corrupted \(sha256 mismatch\)"),
    (lambda data: b"", r"is truncated or corrupted \(its content-hash header is missing"),
], ids=["truncated", "bit-flipped", "empty"])
def test_a_damaged_checkpoint_is_named_and_never_trained_from(make_config, tmp_path, monkeypatch, damage, named):
    cfg = make_config("trainer.epochs=2")
    die_in_epoch(2, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        training.run(cfg, tmp_path)
    monkeypatch.undo()
    checkpoint = tmp_path / CHECKPOINT
    checkpoint.write_bytes(damage(checkpoint.read_bytes()))
    before = snapshot(tmp_path)
    with pytest.raises(CorruptFile, match=rf"checkpoint {re.escape(str(checkpoint))} {named}.*delete it to start"):
        training.run(cfg, tmp_path)
    assert snapshot(tmp_path) == before


def test_stale_temporary_files_are_removed_when_a_run_starts(make_config, tmp_path):
    stale = tmp_path / f".{CHECKPOINT}.0123456789ab.tmp"
    stale.write_bytes(b"half a checkpoint")
    training.run(make_config("trainer.epochs=1"), tmp_path)
    assert not stale.exists() and not list(tmp_path.glob(".*.tmp"))


def test_result_files_are_readable_by_the_group(make_config, tmp_path):
    previous = os.umask(0o027)
    try:
        training.run(make_config("trainer.epochs=1"), tmp_path)
    finally:
        os.umask(previous)
    assert {name: oct((tmp_path / name).stat().st_mode & 0o777) for name in RESULT_FILES} == dict.fromkeys(
        RESULT_FILES, oct(0o640))


def test_a_full_disk_is_named_and_keeps_the_previous_file(tmp_path):
    target = atomic_write_text(tmp_path / "summary.json", "previous\n")

    def disk_full(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")

    named = rf"no space left on {re.escape(str(tmp_path))} .*summary.json; its previous version is kept"
    with pytest.raises(OSError, match=named):
        atomic_write(target, disk_full)
    assert target.read_text() == "previous\n"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


# -- item 13: wandb never stops a run --

@pytest.fixture
def fake_wandb_init(monkeypatch):
    """``wandb.init`` replaced: it records its keyword arguments and then does what ``behave`` says."""
    wandb = pytest.importorskip("wandb")
    calls = []

    def install(behave):
        def init(**kwargs):
            calls.append(kwargs)
            return behave()

        monkeypatch.setattr(wandb, "init", init)
        return calls

    return install


def test_wandb_that_cannot_reach_its_server_leaves_the_run_to_its_local_files(make_config, tmp_path,
                                                                             fake_wandb_init, capsys, monkeypatch):
    import wandb

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_INIT_TIMEOUT", raising=False)

    def time_out():
        raise wandb.errors.CommError("Run initialization has timed out after 60.0 sec.")

    calls = fake_wandb_init(time_out)
    summary = training.run(make_config("trainer.epochs=1", "logger=wandb"), tmp_path)
    assert summary["status"] == "complete"
    assert calls[0]["settings"].init_timeout == WANDB_TIMEOUT_S
    assert ("wandb could not start (CommError: Run initialization has timed out after 60.0 sec.); this run records "
            "to its local files only") in capsys.readouterr().err


@pytest.mark.parametrize("logger,env_mode,expected", [("wandb", "disabled", None), ("disabled", "offline", "offline"),
                                                      ("wandb", None, "online")])
def test_wandb_mode_from_the_environment_overrides_the_config(make_config, tmp_path, fake_wandb_init, monkeypatch,
                                                              logger, env_mode, expected):
    if env_mode is None:
        monkeypatch.delenv("WANDB_MODE", raising=False)
    else:
        monkeypatch.setenv("WANDB_MODE", env_mode)
    calls = fake_wandb_init(lambda: types.SimpleNamespace(define_metric=lambda *args, **kwargs: None))
    RunRecorder(tmp_path, make_config(f"logger={logger}")).start_wandb()
    assert [call["mode"] for call in calls] == ([] if expected is None else [expected])


def test_a_complete_run_skipped_by_the_command_line_keeps_every_file_as_it_was(make_config, fashion_root, tmp_path):
    (tmp_path / CONFIG_FILE).write_text(yaml.safe_dump(make_config("trainer.epochs=1")))
    (tmp_path / "summary.json").write_text(json.dumps({"status": "complete", "test_acc": 50.0, "mean_shift": 1.5}))
    before = snapshot(tmp_path)
    result = subprocess.run([sys.executable, "-m", "varshift.cli", "scale=smoke", f"dataset.root={fashion_root}",
                             "dataset.download=false", "trainer.device=cpu", "trainer.epochs=1",
                             f"hydra.run.dir={tmp_path}"], capture_output=True, text=True, timeout=DEADLINE_S)
    assert result.returncode == 0 and "is complete; skipping it" in result.stdout, result.stderr
    assert snapshot(tmp_path) == before


# -- a run's identity is its setting and seed, not its folder's name --

def write_run(run_dir: Path, config: dict, status: str | None = "complete") -> Path:
    """A run directory as varshift-train leaves it: config.yaml, and summary.json unless ``status`` is None."""
    run_dir.mkdir(parents=True)
    (run_dir / CONFIG_FILE).write_text(yaml.safe_dump(config))
    if status is not None:
        (run_dir / "summary.json").write_text(json.dumps({"status": status, "test_error": 10.0}) + "\n")
    return run_dir


def setting(seed: int, rate: float = 0.1, root: str = "/data") -> dict:
    return {"seed": seed, "dropout": {"kind": "bernoulli", "rate": rate}, "dataset": {"name": "mnist", "root": root},
            "trainer": {"progress": True}}


def test_a_run_found_in_two_folders_is_counted_once_and_both_are_named(tmp_path):
    sweep = tmp_path / "sweep"
    first = write_run(sweep / "dropout.rate=0.1", setting(0))
    # the same sweep relaunched with seed=0 spelt out, another data copy: the same run in another folder
    again = write_run(sweep / "dropout.rate=0.1,seed=0", setting(0, root="/copy"))
    write_run(sweep / "dropout.rate=0.1,seed=1", setting(1))
    write_run(sweep / "dropout.rate=0.3,seed=0", setting(0, rate=0.3))
    with pytest.warns(UserWarning) as caught:
        runs = collect([sweep])
    assert sorted(zip(runs["dropout.rate"], runs["seed"], strict=True)) == [(0.1, 0), (0.1, 1), (0.3, 0)]
    assert runs["run_dir"].tolist().count(str(first)) == 1
    (message,) = [str(w.message) for w in caught]
    assert message.startswith(f"skipping {again}: it is the same run (the same setting and seed) as {first}")


def test_run_discovery_follows_links_once_and_says_what_it_skipped(tmp_path):
    store, links = tmp_path / "store", tmp_path / "links"
    write_run(store / "a", setting(0))
    write_run(store / "b", setting(1))
    links.mkdir()
    (links / "a").symlink_to(store / "a")
    (links / "also_a").symlink_to(store / "a")
    (links / "b").symlink_to(store / "b")
    (links / "loop").symlink_to(links)
    (links / "gone").symlink_to(tmp_path / "deleted")
    with pytest.warns(UserWarning) as caught:
        runs = collect([links])
    assert sorted(runs["run_dir"]) == [str(links / "a"), str(links / "b")]
    assert sorted(str(w.message) for w in caught) == [
        f"skipping {links / 'also_a'}: it leads to {links / 'a'}, which is searched already",
        f"skipping {links / 'gone'}: it is a broken link (to {tmp_path / 'deleted'})",
        f"skipping {links / 'loop'}: it leads to {links}, which is searched already"]


# -- a damaged or foreign run directory is named in one line, with how to recover --

@pytest.mark.parametrize("name,text,problem,recovery", [
    (CONFIG_FILE, "seed: 0\nmodel: [unclosed\n", "config.yaml is damaged (ParserError", "or delete {path} to train"),
    (CONFIG_FILE, "project: another tool\nepochs: 3\n", "is not the config of a varshift run (it has no seed, dataset",
     "move the folder away"),
    ("summary.json", "", "summary.json is empty", "delete {path} to finish the run again from its checkpoint"),
])
def test_a_damaged_or_foreign_run_file_is_named_with_how_to_recover(make_config, tmp_path, name, text, problem,
                                                                   recovery):
    path = tmp_path / name
    if name != CONFIG_FILE:
        (tmp_path / CONFIG_FILE).write_text(yaml.safe_dump(make_config()))
    path.write_text(text)
    with pytest.raises(ValueError) as caught:
        training.run(make_config(), tmp_path)
    message = str(caught.value)
    assert message.startswith(str(path)) and problem in message and recovery.format(path=path) in message, message
    assert "\n" not in message


# -- a diverged run is a result: recorded, skipped by a rerun, trained again when asked --

def test_a_diverged_run_is_skipped_by_a_rerun_unless_retry_diverged(make_config, tmp_path):
    cfg = make_config("optim.lr=1e30", "trainer.epochs=1")
    with pytest.raises(TrainingDiverged, match="^training diverged in epoch 1: the training loss became nan"):
        training.run(cfg, tmp_path)
    assert_diverged(tmp_path, epoch=1, checkpoint_epoch=0)
    before = snapshot(tmp_path)
    with pytest.raises(TrainingDiverged, match=rf"^{re.escape(str(tmp_path))} diverged in epoch 1 .*skipping it: "
                                               r"retry_diverged=true trains it again from the start"):
        training.run(cfg, tmp_path)
    assert snapshot(tmp_path) == before
    with pytest.raises(TrainingDiverged, match="^training diverged in epoch 1"):
        training.run(make_config("optim.lr=1e30", "trainer.epochs=1", "retry_diverged=true"), tmp_path)
    assert (tmp_path / "summary.json").stat().st_mtime_ns != before[Path("summary.json")][1]
    assert_diverged(tmp_path, epoch=1, checkpoint_epoch=0)
