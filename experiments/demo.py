"""The demo behind ``make demo``: the small CNN on Fashion-MNIST without
dropout, with Bernoulli 0.5 and uniform (Uout, beta 0.5) dropout before BN and at the head, and with Bernoulli and
Gaussian dropout before BN at Uout's noise variance (the variance-matched set of ``experiments/variance_matched.py``,
whose Uout run is the demo's own), three seeds each.

Writes ``results/demo/<scale>/``: the per-layer shift plot and its tables (fig4), table3, ``demo_table``
(.md, .tex, .csv: test error before and after BN recalibration and the mean shift, mean ± std over seeds) and
``readme_table.md`` (that table under a line saying how it was made: command, epochs, images, seeds, wall time).
``--update-readme`` puts ``readme_table.md`` between the ``demo-table`` markers of README.md; it needs a fresh
sweep folder, so that the wall time it reports is that of the whole demo.

``python experiments/demo.py --scale demo --launcher local trainer.threads=1 [--update-readme]``
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf
from recipe import main
from variance_matched import matched_sweep

from varshift import theory
from varshift.analysis import collect
from varshift.analysis.tables import artifact_table, melt_metrics
from varshift.io import atomic_write_text
from varshift.paths import REPO_DIR, conf_file, results_dir, sweep_dir
from varshift.vocabulary import SCALES

EXPERIMENT = "demo"
BASELINE = ["dropout=none", "dropout.rate=0", "dropout.position=none"]
UOUT_BETA = OmegaConf.create(conf_file("experiment", EXPERIMENT).read_text()).dropout.rate
MATCHED = [*matched_sweep(UOUT_BETA), "dropout.position=before_bn"]
UPDATE_README = "--update-readme"
README = REPO_DIR / "README.md"
MARKERS = ("<!-- demo-table:start -->", "<!-- demo-table:end -->")
NOISE_VARIANCE = "s²"
METRICS = ["test_error", "test_error_recalibrated", "mean shift"]  # the last is summary.json's mean_shift


def with_noise_variance(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with a column of the noise variance s² = Var[m] of each run's dropout."""
    kinds_and_rates = zip(runs["dropout.kind"], runs["dropout.rate"], strict=True)
    return runs.assign(**{NOISE_VARIANCE: [theory.noise_variance(kind, rate) for kind, rate in kinds_and_rates]})


def write_demo_table(runs: pd.DataFrame, out: Path) -> Path:
    """Per setting (position, noise variance, kind, rate; network and dataset where they vary): test error before
    and after BN recalibration and the mean shift, mean ± std over seeds, as ``demo_table`` .md, .tex and .csv.
    Rows of one position and one s² are the variance-matched set. Returns the Markdown file."""
    value = "each quantity"
    metrics = melt_metrics(with_noise_variance(runs).rename(columns={"mean_shift": "mean shift"}), METRICS, value)
    artifact_table(metrics, ["dropout.position", NOISE_VARIANCE, "dropout.kind", "dropout.rate"], ["metric"], value,
                   out, "demo_table", "Demo: test error (%) of the final model before and after BN recalibration, "
                                      "and the mean over BN layers of the variance shift (1 = none)")
    return out / "demo_table.md"


def listed(runs: pd.DataFrame, column: str, show=str) -> str:
    """The values of ``column`` among the runs, each once, in words (``show``)."""
    return ", ".join(show(None if pd.isna(value) else value) for value in runs[column].drop_duplicates())


def images(amount, which: str) -> str:
    """``dataset.subset`` or ``dataset.test_subset`` in words: ``40,000 training images``."""
    if amount is None:
        return f"the full {which} set"
    if isinstance(amount, float) and amount <= 1:
        return f"{amount:.0%} of the {which} set"
    return f"{int(amount):,} {which} images"


def how_it_was_made(runs: pd.DataFrame, command: str, seconds: float) -> str:
    training = listed(runs, "dataset.subset", lambda amount: images(amount, "training"))
    test = listed(runs, "dataset.test_subset", lambda amount: images(amount, "test"))
    seeds = ", ".join(map(str, sorted(runs["seed"].unique())))
    minutes, rest = divmod(round(seconds), 60)
    return (f"`{command}`: {listed(runs, 'model.name')} on {listed(runs, 'dataset.name')}, "
            f"{listed(runs, 'trainer.epochs')} epochs on {training}, test error on {test}, seeds {seeds} "
            f"({len(runs)} runs); this command took {minutes} min {rest:02d} s for training and analysis on a "
            f"machine with {os.cpu_count()} CPU cores.")


def replace_marked(text: str, block: str) -> str:
    """``text`` with what lies between the two demo-table markers replaced by ``block``."""
    start, end = MARKERS
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise ValueError(f"README.md needs the markers {start} and {end}, once each and in this order")
    before, rest = text.split(start)
    return f"{before}{start}\n{block.strip()}\n{end}{rest.split(end)[1]}"


def interpreter() -> str:
    """This Python as a reader would type it: ``.venv/bin/python`` from the checkout, else its full path."""
    path = Path(sys.executable)
    return str(path.relative_to(REPO_DIR)) if path.is_relative_to(REPO_DIR) else str(path)


def demo(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--scale", choices=SCALES, default="demo")
    scale = parser.parse_known_args(argv)[0].scale
    update_readme = UPDATE_README in argv
    recipe_argv = [arg for arg in argv if arg != UPDATE_README]
    folder = sweep_dir(EXPERIMENT, scale)
    if update_readme and folder.exists():
        raise SystemExit(f"experiments/demo.py: error: {UPDATE_README} reports the wall time of the whole demo; "
                         f"remove {folder} first, or run without {UPDATE_README}")
    start = time.perf_counter()
    main(EXPERIMENT, ["fig4", "table3"], extra_sweeps=[BASELINE, MATCHED], argv=recipe_argv)
    runs = collect([folder])
    out = results_dir(EXPERIMENT, scale)
    table = write_demo_table(runs, out).read_text()
    command = shlex.join([interpreter(), "experiments/demo.py", *recipe_argv])
    block = f"{how_it_was_made(runs, command, time.perf_counter() - start)}\n\n{table}"
    atomic_write_text(out / "readme_table.md", block)
    print(out / "readme_table.md")
    if update_readme:
        atomic_write_text(README, replace_marked(README.read_text(), block))
        print(f"updated the demo table of {README}")
    return 0


if __name__ == "__main__":
    raise SystemExit(demo(sys.argv[1:]))
