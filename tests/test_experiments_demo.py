"""The demo (experiments/demo.py) and the variance-matched preset end to end at smoke scale: the runs, and
the demo's table parsed back against the runs' summary.json."""

from __future__ import annotations

import importlib
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from test_experiments import markdown_rows

from varshift import theory
from varshift.analysis.labels import KIND_LABELS, POSITION_LABELS
from varshift.paths import REPO_DIR

EXPERIMENTS = REPO_DIR / "experiments"
MATCHED_Q = 1 / 13  # Bernoulli and Gaussian: q / (1 - q) = 1/12 = Uout's beta^2 / 3 at beta 0.5


def run_recipe(name: str, workdir: Path, seeds: str, data_root: Path) -> None:
    command = [sys.executable, str(EXPERIMENTS / f"{name}.py"), "--scale", "smoke", "--seeds", seeds,
               f"dataset.root={data_root}", "dataset.download=false", "trainer.epochs=1", "trainer.threads=1"]
    result = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def configs(folder: Path) -> dict[Path, dict]:
    """run directory -> config.yaml of every run under ``folder``."""
    return {summary.parent: OmegaConf.load(summary.parent / "config.yaml") for summary in folder.rglob("summary.json")}


def summaries_by_setting(folder: Path) -> dict[tuple[str, str, float], dict[int, dict]]:
    """(kind, position, rate) -> seed -> summary.json of every run under ``folder``."""
    settings: dict[tuple[str, str, float], dict[int, dict]] = {}
    for run_dir, cfg in configs(folder).items():
        summary = run_dir / "summary.json"
        key = (cfg.dropout.kind, cfg.dropout.position, round(cfg.dropout.rate, 6))
        settings.setdefault(key, {})[cfg.seed] = json.loads(summary.read_text())
    return settings


@pytest.fixture(scope="module")
def demo_smoke(fashion_root, tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("demo")
    run_recipe("demo", workdir, "0,1", fashion_root)
    return workdir


@pytest.fixture(scope="module")
def matched_smoke(fashion_root, tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("variance_matched")
    run_recipe("variance_matched", workdir, "0", fashion_root)
    return workdir


def test_the_demo_runs_each_setting_with_each_seed_the_matched_uout_being_the_demos_own(demo_smoke):
    settings = summaries_by_setting(demo_smoke / "multirun" / "demo" / "smoke")
    q = round(MATCHED_Q, 6)
    assert sorted(settings) == sorted([
        ("none", "none", 0.0), ("bernoulli", "before_bn", 0.5), ("uniform", "before_bn", 0.5),
        ("bernoulli", "head", 0.5), ("uniform", "head", 0.5), ("bernoulli", "before_bn", q),
        ("gaussian", "before_bn", q)])
    assert all(sorted(seeds) == [0, 1] for seeds in settings.values())


def test_the_demo_table_holds_mean_and_std_over_seeds_of_the_runs_numbers(demo_smoke):
    out = demo_smoke / "results" / "demo" / "smoke"
    kinds, positions = ({words: name for name, words in labels.items()} for labels in (KIND_LABELS, POSITION_LABELS))
    rows = {(kinds[kind], positions[position], round(float(rate), 6)): cells
            for position, s2, kind, rate, *cells in markdown_rows(out / "demo_table.md")}
    settings = summaries_by_setting(demo_smoke / "multirun" / "demo" / "smoke")
    assert sorted(rows) == sorted(settings)
    for setting, seeds in settings.items():
        for cell, metric in zip(rows[setting], ["test_error", "test_error_recalibrated", "mean_shift"], strict=True):
            values = [summary[metric] for summary in seeds.values()]
            assert cell == f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"
    assert "\\begin{tabular}" in (out / "demo_table.tex").read_text()


def test_the_readme_block_says_how_the_table_was_made(demo_smoke, demo):
    out = demo_smoke / "results" / "demo" / "smoke"
    block = (out / "readme_table.md").read_text()
    made, table = block.split("\n\n", 1)
    assert made.startswith(f"`{demo.interpreter()} experiments/demo.py --scale smoke ")  # as a reader types it
    assert "1 epochs on 512 training images, test error on 256 test images, seeds 0, 1 (14 runs)" in made
    assert " min " in made and "CPU cores" in made
    assert table == (out / "demo_table.md").read_text()


@pytest.fixture
def demo(monkeypatch):
    """experiments/demo.py as a module."""
    monkeypatch.syspath_prepend(str(EXPERIMENTS))
    return importlib.import_module("demo")


def test_the_readme_table_is_replaced_between_its_markers_only(demo):
    start, end = demo.MARKERS
    readme = f"intro\n{start}\nold table\n{end}\nrest\n"
    assert demo.replace_marked(readme, "new table\n") == f"intro\n{start}\nnew table\n{end}\nrest\n"
    with pytest.raises(ValueError, match="needs the markers"):
        demo.replace_marked(f"intro\n{end}\n{start}\n", "new table")


def test_the_variance_matched_preset_runs_three_kinds_at_one_noise_variance(matched_smoke):
    dropouts = [cfg.dropout for cfg in configs(matched_smoke / "multirun" / "variance_matched" / "smoke").values()]
    assert sorted(dropout.kind for dropout in dropouts) == ["bernoulli", "gaussian", "uniform"]
    assert {dropout.position for dropout in dropouts} == {"before_bn"}
    variances = [theory.noise_variance(dropout.kind, dropout.rate) for dropout in dropouts]
    assert variances == pytest.approx([theory.noise_variance("uniform", 0.5)] * 3, rel=1e-12)
    out = matched_smoke / "results" / "variance_matched" / "smoke"
    assert (out / "fig4_shift.png").read_bytes()[:4] == b"\x89PNG"
    measured = (out / "theory_vs_measured_table.md").read_text()
    assert all(kind in measured for kind in ("Bernoulli", "Gaussian", "Uout"))


def test_the_command_names_this_python_as_typed_from_the_checkout(demo, monkeypatch):
    monkeypatch.setattr(sys, "executable", str(demo.REPO_DIR / ".venv" / "bin" / "python"))
    assert demo.interpreter() == ".venv/bin/python"
    monkeypatch.setattr(sys, "executable", "/usr/bin/python3")
    assert demo.interpreter() == "/usr/bin/python3"
