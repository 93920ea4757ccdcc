"""An interrupt (SIGINT, SIGTERM) ends a run with one line: what it keeps and the command that resumes it."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys

import pandas as pd
import pytest
from hydra import compose, initialize_config_module

from varshift import training
from varshift.config import register_schema, to_plain, validate
from varshift.errors import RunInterrupted
from varshift.paths import CONF_PACKAGE
from varshift.training import Trainer, checkpoint, load_checkpoint

OVERRIDES = ["scale=smoke", "trainer.epochs=4", "trainer.threads=1", "probe.every=2"]


def metrics_without_timing(run_dir) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{key: value for key, value in row.items() if key not in ("seconds", "images_per_s")} for row in rows]


def test_ctrl_c_ends_the_command_with_one_line_naming_the_kept_epoch_and_the_resume_command_which_resumes(
        fashion_root, tmp_path, make_config):
    signum = signal.SIGINT
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "varshift.cli", *OVERRIDES, f"dataset.root={fashion_root}",
               f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "VARSHIFT_DEBUG": "0"}
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as process:
        lines = []
        for line in process.stdout:  # the run folder is named when the run starts; interrupt after epoch 1
            lines.append(line)
            if "epoch 1/4" in line:
                process.send_signal(signum)
                break
        lines += process.stdout.readlines()
        error = process.stderr.read()
        assert process.wait(timeout=120) == 128 + signum
    assert f"training in {run_dir}\n" in lines
    assert error.count("\n") == 1 and "Traceback" not in error, error
    kept = load_checkpoint(run_dir / checkpoint.CHECKPOINT)["epoch"]
    # the signal comes as epoch 1's line is read: during epoch 2, or between the two
    where = rf"(in epoch {kept + 1}/4|after epoch {kept}/4)"
    assert re.match(rf"varshift-train: SIGINT stopped the run {where}; {re.escape(str(run_dir))}/checkpoint.pt keeps "
                    rf"epoch {kept}, the last complete one; resume it with: varshift-train ", error), error
    resume = shlex.split(error.split("resume it with: ")[1])
    assert resume[1:] == [f"hydra.run.dir={run_dir}", *OVERRIDES, f"dataset.root={fashion_root}"]
    # the printed overrides resume the run (composed as varshift-train composes them) to an uninterrupted run's end
    register_schema()
    with initialize_config_module(config_module=CONF_PACKAGE, version_base="1.3"):
        resumed_config = validate(to_plain(compose("config", overrides=resume[2:])))
    training.run(resumed_config, run_dir)
    uninterrupted = tmp_path / "uninterrupted"
    training.run(make_config(*OVERRIDES[1:]), uninterrupted)
    assert metrics_without_timing(run_dir) == metrics_without_timing(uninterrupted)
    pd.testing.assert_frame_equal(pd.read_csv(run_dir / "variance.csv"), pd.read_csv(uninterrupted / "variance.csv"))


def test_an_interrupt_while_an_epoch_is_kept_waits_until_its_checkpoint_is_written(make_config, tmp_path,
                                                                                  monkeypatch):
    """SIGINT in the middle of writing epoch 1's checkpoint: the run stops once epoch 1 is kept, and says so."""
    save = checkpoint.save_checkpoint

    def interrupted_while_saving(path, state):
        os.kill(os.getpid(), signal.SIGINT)  # delivered now, while the write below is still to come
        save(path, state)

    monkeypatch.setattr(checkpoint, "save_checkpoint", interrupted_while_saving)
    with pytest.raises(RunInterrupted) as stop:
        training.run(make_config("trainer.epochs=3"), tmp_path)
    assert str(stop.value) == (f"SIGINT stopped the run after epoch 1/3; {tmp_path / checkpoint.CHECKPOINT} keeps "
                               "epoch 1, the last complete one")
    assert load_checkpoint(tmp_path / checkpoint.CHECKPOINT)["epoch"] == 1
    assert [row["epoch"] for row in metrics_without_timing(tmp_path)] == [1]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # given back


def test_sigterm_stops_the_run_keeping_the_last_complete_epoch(make_config, tmp_path, monkeypatch):
    original = Trainer.train_epoch

    def train_epoch(self):
        if self.epoch == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # Python runs the handler at once, in this thread
        return original(self)

    monkeypatch.setattr(Trainer, "train_epoch", train_epoch)
    with pytest.raises(RunInterrupted) as stop:
        training.run(make_config("trainer.epochs=3"), tmp_path)
    assert stop.value.signum == signal.SIGTERM
    assert str(stop.value) == (f"SIGTERM stopped the run in epoch 2/3; {tmp_path / checkpoint.CHECKPOINT} keeps "
                               "epoch 1, the last complete one")
    assert load_checkpoint(tmp_path / checkpoint.CHECKPOINT)["epoch"] == 1
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_signal_a_launcher_handles_itself_is_left_to_it(make_config, tmp_path, monkeypatch):
    """submitit keeps SIGTERM to requeue a preempted job: the run does not take it over."""
    seen = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        original = Trainer.train_epoch

        def train_epoch(self):
            os.kill(os.getpid(), signal.SIGTERM)
            return original(self)

        monkeypatch.setattr(Trainer, "train_epoch", train_epoch)
        summary = training.run(make_config("trainer.epochs=1"), tmp_path)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert seen == [signal.SIGTERM] and summary["status"] == "complete"
