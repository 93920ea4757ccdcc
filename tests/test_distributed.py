"""Data-parallel training on CPU: ``torchrun --nproc_per_node=2`` over gloo, real processes and real kills.

Every test here starts ``varshift.cli`` under torch.distributed.run as a user does, so each launch costs a few
seconds of process start-up; the runs are at smoke scale on the ``fashion_root`` data, one torch thread each.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from test_interrupts import metrics_without_timing

from varshift import training
from varshift.training import checkpoint, load_checkpoint

LAUNCH_TIMEOUT_S = 240


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def varshift_train(launcher: list[str], fashion_root: Path, *overrides: str,
                   cwd: Path | None = None) -> subprocess.Popen:
    """``varshift-train`` at smoke scale on CPU, started by ``launcher``, in a session of its own (so that the whole
    job can be killed)."""
    command = [*launcher, "scale=smoke", "trainer.threads=1", "trainer.device=cpu", f"dataset.root={fashion_root}",
               "dataset.download=false", *overrides]
    env = {key: value for key, value in os.environ.items()
           if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(HYDRA_FULL_ERROR="0", VARSHIFT_DEBUG="0", OMP_NUM_THREADS="1")
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            cwd=cwd, start_new_session=True)


def torchrun(fashion_root: Path, *overrides: str, cwd: Path | None = None) -> subprocess.Popen:
    """``torchrun --nproc_per_node=2 varshift-train ...``: 2 CPU processes."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
                "-m", "varshift.cli"]
    return varshift_train(launcher, fashion_root, *overrides, cwd=cwd)


def submitit_job(fashion_root: Path, run_dir: Path, *overrides: str) -> subprocess.Popen:
    """A sweep of one job of 2 tasks on this machine (submitit's local executor, as SLURM runs a job): its run in
    ``run_dir``."""
    launcher = [sys.executable, "-m", "varshift.cli", "-m", "hydra/launcher=submitit_local",
                "hydra.launcher.tasks_per_node=2", f"hydra.sweep.dir={run_dir.parent}",
                f"hydra.sweep.subdir={run_dir.name}"]
    return varshift_train(launcher, fashion_root, *overrides)


def finished(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=LAUNCH_TIMEOUT_S)
    assert process.returncode == 0, output
    return output


def summary_without_timing(run_dir: Path) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    return {key: value for key, value in summary.items() if key != "wall_time_s"}


def kept_epochs(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def wait_for_epochs(process: subprocess.Popen, run_dir: Path, epochs: int) -> None:
    deadline = time.monotonic() + LAUNCH_TIMEOUT_S
    while kept_epochs(run_dir) < epochs:
        assert process.poll() is None, process.communicate()[0]
        assert time.monotonic() < deadline, f"no epoch {epochs} in {run_dir}"
        time.sleep(0.05)


def task_pid(sweep_dir: Path, task: int) -> int:
    """The pid of ``task`` of the one submitit job of the sweep in ``sweep_dir``: a child of the job's controller,
    whose pid names the job's folder."""
    controller = next(path.name for path in (sweep_dir / ".submitit").iterdir() if path.name.isdigit())
    children = Path(f"/proc/{controller}/task/{controller}/children").read_text().split()
    for child in children:
        if f"SUBMITIT_LOCAL_GLOBALID={task}".encode() in Path(f"/proc/{child}/environ").read_bytes().split(b"\0"):
            return int(child)
    raise AssertionError(f"no task {task} among {children}")


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX"  # not exited
    except FileNotFoundError:
        return False


def model_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / checkpoint.CHECKPOINT)["model"]


# One epoch without dropout noise (each process would draw its own) and BN statistics of the whole batch.
SYNCHRONISED = ["trainer.epochs=1", "trainer.sync_bn=true", "dropout=none"]


def test_two_processes_with_sync_bn_train_as_one_and_probe_the_whole_training_set(fashion_root, make_config,
                                                                                    tmp_path):
    one = tmp_path / "one"
    training.run(make_config("trainer.threads=1", *SYNCHRONISED), one)
    # no hydra.run.dir: both processes must compose the same timestamped folder, the launch's
    launch = tmp_path / "launch"
    launch.mkdir()
    finished(torchrun(fashion_root, *SYNCHRONISED, cwd=launch))
    folders = [path for path in (launch / "outputs").glob("*/*") if path.is_dir()]
    assert len(folders) == 1, folders
    two = folders[0]

    # (a) The same global batch of 64, each process a slice of 32: DDP averages the two slices' gradients and
    # SyncBatchNorm normalises by the statistics of all 64, so each step is one process's step up to rounding. The
    # rounding: float32 reductions regrouped (two halves added instead of one sum; SyncBatchNorm sums in float64)
    # differ by about sqrt(n) * 2^-24 relative for n terms, ~1e-5 for a BN channel's 32 * 28 * 28 ~ 2.5e4 values; 8
    # SGD steps (lr 0.05, momentum 0.9: a gain of 10 at most) on gradients below 1 move a weight by at most
    # 8 * 0.05 * 10 * 1e-5 = 4e-5 more or less. 1e-4 leaves room; without SyncBatchNorm the weights differ by ~0.15
    # (measured), and 2 processes with it by ~2e-6.
    weights_one, weights_two = model_weights(one), model_weights(two)
    assert weights_one.keys() == weights_two.keys()
    difference = max(float((weights_one[key].double() - weights_two[key].double()).abs().max())
                     for key in weights_one if weights_one[key].is_floating_point())
    assert difference < 1e-4, difference
    print(f"largest weight difference between 1 and 2 processes: {difference:.3g}")
    rows_one, rows_two = metrics_without_timing(one), metrics_without_timing(two)
    assert rows_one[0].keys() == rows_two[0].keys()
    for key, value in rows_one[0].items():  # losses within the weights' rounding, the same counts of correct images
        assert rows_two[0][key] == pytest.approx(value, rel=1e-4, abs=1e-4), key

    # (b) The probe of 2 processes over the same weights: rank 0's checkpoint of 1 process, resumed by 2, whose
    # probes and recalibration each take whole batches in turn and add up their sums. Every batch's statistics are
    # those 1 process computes; only the order of the additions differs: a few float32 roundings (2^-23 ~ 1.2e-7
    # relative each; measured 1.5e-7 at most).
    probed = tmp_path / "probed"
    probed.mkdir()
    for name in (checkpoint.CHECKPOINT, "config.yaml"):
        shutil.copy(one / name, probed / name)
    finished(torchrun(fashion_root, *SYNCHRONISED, f"hydra.run.dir={probed}"))
    table_one, table_two = pd.read_csv(one / "variance.csv"), pd.read_csv(probed / "variance.csv")
    assert set(table_one["stage"]) == {"final", "recalibrated"}
    pd.testing.assert_frame_equal(table_two, table_one, rtol=1e-6, atol=0)
    summary_one = json.loads((one / "summary.json").read_text())
    summary_two = json.loads((probed / "summary.json").read_text())
    for key in ("test_acc", "test_acc_recalibrated", "mean_shift"):
        assert summary_two[key] == pytest.approx(summary_one[key], rel=1e-6), key


def test_a_killed_process_ends_the_job_which_resumes_as_an_uninterrupted_run_so_does_a_job_killed_whole(
        fashion_root, tmp_path):
    """A submitit job of 2 tasks (the path of hydra/launcher=slurm_ddp, on this machine) loses a task; torchrun
    resumes its run, is killed -9 whole, and resumes it to the end of an uninterrupted torchrun run."""
    collective_timeout_s = 10
    overrides = ["trainer.epochs=4", f"trainer.collective_timeout_s={collective_timeout_s}"]
    uninterrupted = tmp_path / "uninterrupted"
    finished(torchrun(fashion_root, *overrides, f"hydra.run.dir={uninterrupted}"))

    # (c) task 1 killed in epoch 2: nothing stops task 0 but its own collectives, which fail on the dead peer (or wait
    # collective_timeout_s at most) instead of hanging
    run_dir = tmp_path / "sweep" / "run"
    job = submitit_job(fashion_root, run_dir, *overrides)
    wait_for_epochs(job, run_dir, 1)
    survivor = task_pid(run_dir.parent, 0)
    os.kill(task_pid(run_dir.parent, 1), signal.SIGKILL)
    killed = time.monotonic()
    while running(survivor) and time.monotonic() - killed < collective_timeout_s + 10:
        time.sleep(0.05)
    waited = time.monotonic() - killed
    print(f"task 0 ended {waited:.1f} s after task 1 was killed")
    assert not running(survivor)
    os.killpg(job.pid, signal.SIGKILL)  # the sweep would notice the job's end at submitit's next poll, seconds later
    job.communicate(timeout=LAUNCH_TIMEOUT_S)
    kept = kept_epochs(run_dir)
    assert 1 <= kept < 4
    # one data-parallel run, whose rank 0 alone wrote (each task's log is <job>_<task>_log.out)
    assert load_checkpoint(run_dir / checkpoint.CHECKPOINT)["hardware"]["processes"] == 2
    task_logs = sorted((run_dir.parent / ".submitit").glob("*/*_log.out"))
    assert [path.name.split("_")[1] for path in task_logs] == ["0", "1"]
    assert ["training in" in path.read_text() for path in task_logs] == [True, False]

    # (d) torchrun resumes the run (the same data and slices whichever launcher started it) and is killed -9 whole
    # once it kept another epoch
    job = torchrun(fashion_root, *overrides, f"hydra.run.dir={run_dir}")
    wait_for_epochs(job, run_dir, kept + 1)
    os.killpg(job.pid, signal.SIGKILL)
    job.communicate(timeout=LAUNCH_TIMEOUT_S)

    output = finished(torchrun(fashion_root, *overrides, f"hydra.run.dir={run_dir}"))
    assert "resuming" in output
    assert metrics_without_timing(run_dir) == metrics_without_timing(uninterrupted)
    pd.testing.assert_frame_equal(pd.read_csv(run_dir / "variance.csv"), pd.read_csv(uninterrupted / "variance.csv"))
    assert summary_without_timing(run_dir) == summary_without_timing(uninterrupted)


@pytest.mark.parametrize("rank", [0, 1])
def test_under_torchrun_rank_0_alone_judges_a_sweep(make_config, tmp_path, monkeypatch, rank):
    """A process other than rank 0 may end its last job before rank 0 writes that job's summary: it must not fail the
    command for a job it sees unfinished (rank 0 judges, and fails it if it is)."""
    from varshift.sweep import CheckedLaunch, Job

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", str(rank))
    launch = CheckedLaunch()
    launch.jobs = [Job("seed=0", tmp_path / "seed=0", make_config())]  # its summary not written yet
    launch.sweep_dir = tmp_path
    CheckedLaunch.launched = launch
    if rank == 0:
        with pytest.raises(SystemExit):
            launch.on_multirun_end(config=None)
    else:
        launch.on_multirun_end(config=None)
    assert CheckedLaunch.launched is None


def test_a_process_waits_for_the_others_collective_timeout_s_at_most():
    """Rank 0 of 2 whose partner never comes (a hung or lost process) gives up after trainer.collective_timeout_s
    instead of torch's default of 30 minutes: the timeout reaches the group, whose collectives wait as long."""
    script = ("from varshift.training import distributed\n"
              "distributed.start({'device': 'cpu', 'collective_timeout_s': 2})\n")
    env = {**os.environ, "WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    waited = time.monotonic() - started
    assert result.returncode != 0
    assert "Timed out after 3 seconds waiting for clients. 1/2 clients joined" in result.stderr, result.stderr
    assert waited < 60, waited  # torch's import and the 2 s (rounded up to 3), nowhere near 30 minutes
