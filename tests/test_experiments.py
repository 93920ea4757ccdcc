"""A paper recipe end to end at smoke scale: multirun, analysis, and the files parsed back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf
from test_analysis import cells

from varshift.analysis.labels import POSITION_LABELS
from varshift.paths import REPO_DIR, conf_file, conf_options

PRESETS = conf_options("experiment")
SCALES = conf_options("scale")


def run(*command: str, cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, *command], cwd=cwd, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def markdown_rows(path: Path) -> list[list[str]]:
    lines = [line for line in path.read_text().splitlines() if line.startswith("|")]
    return [cells(line) for line in lines[2:]]


@pytest.fixture(scope="module")
def fig4_smoke(fashion_root, tmp_path_factory) -> Path:
    """Four configurations (drop 0 / 0.5 x before_bn / before_conv) through experiments/fig4.py."""
    workdir = tmp_path_factory.mktemp("recipe")
    result = run(str(REPO_DIR / "experiments" / "fig4.py"), "--scale", "smoke", "--seeds", "0",
                 f"dataset.root={fashion_root}", "dataset.download=false", "trainer.epochs=1", "trainer.threads=1",
                 "dropout.rate=0.0,0.5", cwd=workdir)
    assert "checked the 4 jobs of experiment=fig4 scale=smoke" in result.stdout
    return workdir


def runs_by_setting(workdir: Path) -> dict[tuple[str, float], Path]:
    runs = {}
    for summary in (workdir / "multirun" / "fig4" / "smoke").rglob("summary.json"):
        cfg = OmegaConf.load(summary.parent / "config.yaml")
        runs[(cfg.dropout.position, cfg.dropout.rate)] = summary.parent
    return runs


def test_the_sweep_runs_every_configuration_of_the_preset(fig4_smoke):
    runs = runs_by_setting(fig4_smoke)
    assert sorted(runs) == [("before_bn", 0.0), ("before_bn", 0.5), ("before_conv", 0.0), ("before_conv", 0.5)]
    for run_dir in runs.values():
        cfg = OmegaConf.load(run_dir / "config.yaml")
        assert not (run_dir / ".hydra").exists()
        assert (cfg.experiment_name, cfg.scale.name, cfg.model.name, cfg.dropout.kind) == (
            "fig4", "smoke", "small_cnn", "bernoulli")


def test_the_figure_data_are_the_runs_numbers(fig4_smoke):
    out = fig4_smoke / "results" / "fig4" / "smoke"
    assert (out / "fig4_shift.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "fig4_shift.pdf").read_bytes()[:4] == b"%PDF"
    curves = pd.read_csv(out / "fig4_shift.csv")
    errors = pd.read_csv(out / "fig4_error.csv").set_index("run_dir")
    for run_dir in runs_by_setting(fig4_smoke).values():
        key = str(run_dir.relative_to(fig4_smoke))
        variance = pd.read_csv(run_dir / "variance.csv")
        final = variance[variance["stage"] == "final"]
        plotted = curves[curves["run_dir"] == key].sort_values("layer")
        assert plotted["shift"].tolist() == pytest.approx(final["shift"].tolist())
        summary = json.loads((run_dir / "summary.json").read_text())
        assert errors.loc[key, "test_error"] == pytest.approx(100 - summary["test_acc"])


def test_the_error_table_holds_each_runs_error(fig4_smoke):
    out = fig4_smoke / "results" / "fig4" / "smoke"
    rows = {row[0]: row for row in markdown_rows(out / "fig4_test_error.md")}
    assert set(rows) == {"Dropout-(a) before BN", "Dropout-(b) before conv"}
    for (position, rate), run_dir in runs_by_setting(fig4_smoke).items():
        summary = json.loads((run_dir / "summary.json").read_text())
        cell = rows[POSITION_LABELS[position]][3 if rate == 0.0 else 4]
        assert cell == f"{summary['test_error']:.2f} (n=1)"
    assert "\\begin{tabular}" in (out / "fig4_test_error.tex").read_text()


def test_table3_from_the_same_runs_has_errors_before_and_after_recalibration(fig4_smoke):
    run("-m", "varshift.analysis", "table3", "multirun/fig4/smoke", "--out", "results/table3", cwd=fig4_smoke)
    stats = pd.read_csv(fig4_smoke / "results" / "table3" / "table3.csv")
    for (position, rate), run_dir in runs_by_setting(fig4_smoke).items():
        summary = json.loads((run_dir / "summary.json").read_text())
        cells = stats[(stats["dropout.position"] == position) & (stats["dropout.rate"] == rate)]
        by_metric = dict(zip(cells["metric"], cells["mean"], strict=True))
        assert by_metric == pytest.approx({"test_error": summary["test_error"],
                                           "test_error_recalibrated": summary["test_error_recalibrated"]})


@pytest.mark.parametrize("launcher,target,settings", [
    ("slurm", "SlurmLauncher", {"gpus_per_node": 1, "max_num_timeout": 5}),
    # data-parallel: one task per GPU (tasks_per_node follows gpus_per_node)
    ("slurm_ddp", "SlurmLauncher", {"nodes": 1, "gpus_per_node": 8, "tasks_per_node": 8}),
    ("local", "JoblibLauncher", {"n_jobs": 2}),
])
def test_launchers_compose_with_one_folder_per_setting(launcher, target, settings):
    from hydra import compose, initialize_config_module

    from varshift.config import register_schema
    from varshift.paths import CONF_PACKAGE

    register_schema()
    with initialize_config_module(config_module=CONF_PACKAGE, version_base="1.3"):
        cfg = compose("config", overrides=[f"hydra/launcher={launcher}", "experiment=table3", "scale=smoke"],
                      return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith(target)
    assert {key: cfg.hydra.launcher[key] for key in settings} == settings
    assert cfg.hydra.sweep.dir == "multirun/table3/smoke"


def test_a_recipe_whose_data_is_missing_fails_once_before_launching(tmp_path):
    result = subprocess.run([sys.executable, str(REPO_DIR / "experiments" / "fig4.py"), "--scale", "smoke",
                             "dataset=mnist", f"dataset.root={tmp_path}", "dataset.download=false"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2
    assert result.stderr.startswith("experiments/fig4.py: error: dataset 'mnist'"), result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "multirun").exists()


def test_the_sweep_check_names_the_job_with_a_bad_setting():
    from varshift.sweep import check_sweep

    with pytest.raises(ValueError, match=r"the job dropout.position=none seed=0 of the sweep: "
                                         r"config dropout.position='none' is not allowed"):
        check_sweep(["scale=smoke", "dropout=bernoulli", "dropout.position=before_bn,none", "seed=0,1"])


def largest_swept_rate(preset: str) -> list[str]:
    """The preset's largest swept drop rate, the one a range check would refuse (fewer jobs to compose)."""
    rates = OmegaConf.create(conf_file("experiment", preset).read_text()).hydra.sweeper.params.get("dropout.rate")
    return [f"dropout.rate={max(str(rates).split(','), key=float)}"] if rates else []


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_sweeps_the_networks_and_datasets_of_its_scale(preset, scale):
    from varshift.sweep import validated_jobs

    jobs = validated_jobs([f"experiment={preset}", f"scale={scale}", "seed=0", *largest_swept_rate(preset)])
    named = OmegaConf.create(conf_file("scale", scale).read_text()).scale
    assert jobs and {job["scale"]["name"] for job in jobs} == {scale}
    imagenet = {"datasets": ["imagenet"], "models": named.imagenet.models} if preset == "table5" else None
    assert {job["dataset"]["name"] for job in jobs} <= set(imagenet["datasets"] if imagenet else named.datasets)
    for job in jobs:
        model = job["model"]
        wide_resnet_of_the_scale = model["name"] == "wrn28_10" and model["kwargs"]["depth"] == named.wrn_depth
        allowed = imagenet["models"] if imagenet else {*named.models, *named.fig5_models}
        assert model["name"] in allowed or wide_resnet_of_the_scale, model


RUN_EACH_SWEEP = """
import sys
from varshift.cli import main
for overrides in sys.argv[1:]:
    sys.argv = ["varshift-train", "-m", *overrides.split()]
    main()
"""


def test_every_preset_runs_at_smoke(fashion_root, imagenet_root, tmp_path):
    """The first job of each preset's smoke sweep, through varshift-train -m, all in one process."""
    from hydra import initialize_config_module

    from varshift.config import register_schema
    from varshift.paths import CONF_PACKAGE
    from varshift.sweep import sweep_jobs

    register_schema()
    with initialize_config_module(config_module=CONF_PACKAGE, version_base="1.3"):
        first_jobs = [sweep_jobs([f"experiment={preset}", "scale=smoke"])[0] for preset in PRESETS]
    small = ["dataset.download=false", "trainer.epochs=1", "trainer.threads=1"]
    roots = {"table5": imagenet_root}  # Table 5 reads an ImageNet-layout folder
    run("-c", RUN_EACH_SWEEP, *(" ".join([*job, f"dataset.root={roots.get(preset, fashion_root)}", *small])
                                for preset, job in zip(PRESETS, first_jobs, strict=True)), cwd=tmp_path)
    for preset in PRESETS:
        summaries = list((tmp_path / "multirun" / preset / "smoke").glob("*/summary.json"))
        assert len(summaries) == 1, preset
        cfg = OmegaConf.load(summaries[0].parent / "config.yaml")
        assert (cfg.experiment_name, cfg.scale.name, cfg.trainer.epochs) == (preset, "smoke", 1)
