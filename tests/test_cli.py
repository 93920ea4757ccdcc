"""varshift-train's errors: one line on stderr, exit status 2 (1 for a run that stopped); the traceback with --debug."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest


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


def test_missing_data_stops_a_sweep_at_its_first_job(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli("-m", "scale=smoke", "dataset=mnist", f"dataset.root={empty}", "dataset.download=false",
                     "seed=0,1,2", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert_one_line_error(result, "dataset 'mnist'", str(empty))
    assert [path.name for path in (tmp_path / "sweep").iterdir() if path.is_dir()] == ["dataset=mnist,seed=0"]


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
