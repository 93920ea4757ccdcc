"""varshift-train's errors: one line on stderr, exit status 2 (1 for a run that stopped); the traceback with --debug.
Its sweeps: checked before the first job, never stopped by one job, never training a run twice, ending with a line
that names the jobs that did not complete."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest
import yaml


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "VARSHIFT_DEBUG": "0", **env}
    return subprocess.run([sys.executable, "-m", "varshift.cli", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def assert_one_line_error(result: subprocess.CompletedProcess, *expected: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("varshift-train: error: ") and result.stderr.count("\n") == 1, result.stderr
    for text in expected:
        assert text in result.stderr, result.stderr


@pytest.mark.parametrize("args,env", [(["--debug"], {}), ([], {"HYDRA_FULL_ERROR": "1"})])
def test_debug_shows_the_traceback(tmp_path, args, env):
    result = run_cli("optim.lr=inf", f"hydra.run.dir={tmp_path}", *args, **env)
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "ValueError: config optim.lr=inf" in result.stderr, result.stderr


def test_a_composition_error_is_one_line(tmp_path):
    assert_one_line_error(run_cli("experiment=fig9", f"hydra.run.dir={tmp_path}"),
                          "Could not find 'experiment/fig9'", "fig4, fig5")


def test_a_diverged_run_is_one_line_with_exit_status_1(fashion_root, tmp_path):
    result = run_cli("scale=smoke", "optim.lr=1e30", "trainer.progress=false", "trainer.threads=1",
                     f"dataset.root={fashion_root}", "dataset.download=false", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("varshift-train: error: training diverged in epoch 1: the training loss became "
                                    "nan") and result.stderr.count("\n") == 1, result.stderr
    assert "Lower optim.lr (now 1e+30)" in result.stderr and not (tmp_path / "checkpoint.pt").exists()


def test_missing_data_stops_a_sweep_before_its_first_job(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli("-m", "scale=smoke", "dataset=mnist", f"dataset.root={empty}", "dataset.download=false",
                     "seed=0,1,2", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert_one_line_error(result, "dataset 'mnist'", str(empty))
    assert not (tmp_path / "sweep").exists()


@pytest.mark.skipif(shutil.which("srun") is not None, reason="SLURM is installed here")
def test_the_slurm_launcher_without_slurm_is_one_line(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    result = run_cli("-m", "hydra/launcher=slurm", "scale=smoke", "seed=0,1", f"hydra.sweep.dir={tmp_path}")
    assert_one_line_error(result, "srun", "hydra/launcher=local")


def test_presets_lists_each_preset_with_its_description_and_command():
    from varshift.paths import conf_options

    result = run_cli("--presets")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == conf_options("experiment")
    fig4 = next(line for line in lines if line.startswith("fig4 "))
    assert "Figure 4: per-layer variance shift and test error" in fig4
    assert fig4.endswith("[python experiments/fig4.py --scale demo]")


def test_help_names_the_launchers_and_the_presets_command():
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    for text in ("hydra/launcher=<name>", "local   joblib", "slurm   submitit", "varshift-train --presets",
                 "logger=wandb", "experiment: channelwise"):
        assert text in result.stdout, text


# -- sweeps that always finish and never train a run twice --

def smoke_sweep(fashion_root, sweep_dir, *args: str) -> list[str]:
    return ["-m", "scale=smoke", f"dataset.root={fashion_root}", "dataset.download=false", "trainer.device=cpu",
            "trainer.threads=1", "trainer.progress=false", "trainer.epochs=1", *args, f"hydra.sweep.dir={sweep_dir}"]


def summary_status(run_dir) -> dict:
    return json.loads((run_dir / "summary.json").read_text())["status"]


def test_a_diverged_job_is_a_result_and_the_sweep_goes_on_with_either_launcher(fashion_root, tmp_path):
    sweep = tmp_path / "sweep"
    args = smoke_sweep(fashion_root, sweep, "optim.lr=1e30,0.05")
    last_line = (f"varshift-train: 1 of 2 jobs of the sweep in {sweep} are complete; diverged: optim.lr=1e+30 "
                 "(epoch 1, no checkpoint); to train the diverged ones again: varshift-train " + shlex.join(args)
                 + " retry_diverged=true")
    first = run_cli(*args)
    assert first.returncode == 1, first.stderr
    assert first.stderr.splitlines()[-1] == last_line
    diverged, good = (next(sweep.glob(f"optim.lr={lr},*")) for lr in ("1e+30", "0.05"))
    assert (summary_status(diverged), summary_status(good)) == ("diverged", "complete")
    # a relaunch, here in a joblib worker (one: a worker's start costs seconds), skips both: the diverged run is
    # not trained again, and the sweep ends as before
    before = {path: path.stat().st_mtime_ns for path in sweep.rglob("*") if path.is_file()}
    joblib = ["hydra/launcher=local", "hydra.launcher.n_jobs=1"]
    again = run_cli(*args, *joblib)
    assert again.returncode == 1, again.stderr
    assert f"{diverged} diverged in epoch 1" in again.stderr and f"{good} is complete; skipping it" in again.stdout
    assert again.stderr.splitlines()[-1] == last_line.replace("retry_diverged", f"{shlex.join(joblib)} retry_diverged")
    assert {path: path.stat().st_mtime_ns for path in sweep.rglob("*") if path.is_file()
            and path.name != "multirun.yaml"} == {path: mtime for path, mtime in before.items()
                                                  if path.name != "multirun.yaml"}


def test_a_config_error_in_the_middle_of_a_sweep_stops_it_before_its_first_job(fashion_root, tmp_path):
    result = run_cli(*smoke_sweep(fashion_root, tmp_path / "sweep", "optim.lr=0.05,-1,0.01"))
    assert_one_line_error(result, "the job optim.lr=-1 of the sweep: config optim.lr=-1.0 is not allowed: a number > 0")
    assert not (tmp_path / "sweep").exists()


def test_a_run_complete_under_another_folder_name_is_not_trained_again_and_a_failed_job_is_named(
        make_config, fashion_root, tmp_path):
    sweep = tmp_path / "sweep"
    done = sweep / "dropout.rate=0.1"
    done.mkdir(parents=True)
    (done / "config.yaml").write_text(yaml.safe_dump(
        make_config("trainer.threads=1", "trainer.epochs=1", "dropout.rate=0.1")))
    (done / "summary.json").write_text(json.dumps({"status": "complete", "test_acc": 50.0, "mean_shift": 1.5}))
    damaged = sweep / "dropout.rate=0.1,seed=1,trainer.device=cpu,trainer.epochs=1,trainer.threads=1"
    damaged.mkdir()
    (damaged / "config.yaml").write_text("seed: 1\nmodel: [unclosed\n")
    args = smoke_sweep(fashion_root, sweep, "dropout.rate=0.1", "seed=0,1")
    result = run_cli(*args)
    assert result.returncode == 1, result.stderr
    assert f"the same run (its setting and seed) is complete in {done}; skipping it" in result.stdout
    assert f"varshift-train: error: {damaged / 'config.yaml'}: config.yaml is damaged" in result.stderr
    assert result.stderr.splitlines()[-1] == (f"varshift-train: 1 of 2 jobs of the sweep in {sweep} are complete; "
                                              "failed: seed=1; continue with: varshift-train " + shlex.join(args)
                                              + " (complete and diverged runs are skipped)")
    assert sorted(path.name for path in sweep.iterdir()) == sorted([done.name, damaged.name, "multirun.yaml"])


def test_the_same_run_twice_in_one_sweep_is_refused(make_config, tmp_path):
    from varshift.sweep import Job, refuse_repeated_runs

    jobs = [Job(f"dropout.rate={rate}", tmp_path / f"dropout.rate={rate}", make_config(f"dropout.rate={rate}"))
            for rate in ("0.1", "0.3", "0.10")]
    with pytest.raises(ValueError, match=r"^the sweep has the jobs dropout.rate=0.1 and dropout.rate=0.10: the same "
                                         r"run \(the same setting and seed\) would be trained twice"):
        refuse_repeated_runs(jobs)


def test_an_interrupted_sweep_names_its_jobs_and_the_command_that_continues_it(fashion_root, tmp_path):
    sweep = tmp_path / "sweep"
    args = [arg for arg in smoke_sweep(fashion_root, sweep, "seed=0,1") if arg != "trainer.epochs=1"]
    args.insert(-1, "trainer.epochs=50")
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "VARSHIFT_DEBUG": "0"}
    process = subprocess.Popen([sys.executable, "-m", "varshift.cli", *args], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120  # a hang guard; the first job checkpoints its first epoch in seconds
        while not list(sweep.glob("seed=0,*/checkpoint.pt")) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert stderr.splitlines()[-1] == (f"varshift-train: 0 of 2 jobs of the sweep in {sweep} are complete; "
                                       "interrupted: seed=0; not started: seed=1; continue with: varshift-train "
                                       + shlex.join(args) + " (complete and diverged runs are skipped)")


# -- refused configs --

def test_a_refused_config_leaves_no_run_directory_behind(tmp_path):
    result = run_cli("scale=smoke", "optim.lr=-1", f"hydra.run.dir={tmp_path / 'run'}")
    assert_one_line_error(result, "config optim.lr=-1.0 is not allowed")
    assert list(tmp_path.iterdir()) == []


def test_a_negative_seed_is_refused_naming_seed(make_config):
    with pytest.raises(ValueError, match=r"^config seed=-1 is not allowed: a whole number >= 0$"):
        make_config("seed=-1")


def test_a_preset_without_multirun_is_refused_with_the_commands_that_run_its_sweep(fashion_root, tmp_path):
    """experiment=fig4 without -m used to train one default run labelled fig4."""
    result = run_cli("experiment=fig4", "scale=smoke", "trainer.epochs=1", "trainer.threads=1",
                     f"dataset.root={fashion_root}", f"hydra.run.dir={tmp_path / 'run'}")
    assert_one_line_error(result, "experiment='fig4' is not allowed: a preset is a sweep and needs -m",
                          "python experiments/fig4.py --scale smoke trainer.epochs=1",
                          "varshift-train -m experiment=fig4 scale=smoke trainer.epochs=1 trainer.threads=1")
    assert not (tmp_path / "run").exists()


def test_help_and_readme_document_the_submitit_local_launcher():
    from varshift.paths import REPO_DIR

    help_text = run_cli("--help").stdout
    assert "submitit_local" in help_text and "submitit without SLURM" in help_text
    assert "hydra/launcher=submitit_local" in (REPO_DIR / "README.md").read_text()
