"""The analysis of the theory's terms: the per-layer decomposition, the shift over training and across channels, and
the statistics over seeds a reviewer asks for."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats
from test_analysis import cells

from varshift.analysis.cli import main
from varshift.analysis.stats import seed_statistics
from varshift.training import run

SMOKE = ("trainer.epochs=2", "trainer.threads=1", "model.kwargs.channels=[4,8]", "model.kwargs.hidden=8",
         "probe.every=1", "probe.per_channel=true")
SETTINGS = {"none": ("dropout=none",), "bn": ("dropout.position=before_bn",),
            "conv": ("dropout.position=before_conv",)}


def assert_cells_line_up(markdown: str) -> None:
    """Every row of each Markdown table has the header's number of cells (a bare "|" in a label ends a cell)."""
    rows = [line for line in markdown.splitlines() if line.startswith("|")]
    assert rows
    counts = {len(cells(row)) for row in rows}
    assert len(counts) == 1, f"rows of {sorted(counts)} cells"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, fashion_root):
    from hydra import compose, initialize_config_module

    from varshift.config import register_schema, to_plain, validate

    register_schema()
    root = tmp_path_factory.mktemp("sweep")
    base = ["scale=smoke", f"dataset.root={fashion_root}", "dataset.download=false", "trainer.device=cpu"]
    for name, overrides in SETTINGS.items():
        with initialize_config_module(config_module="varshift.conf", version_base="1.3"):
            cfg = validate(to_plain(compose("config", overrides=[*base, *SMOKE, *overrides])))
        run(cfg, root / name)
    return root


def test_the_decomposition_multiplies_back_to_each_layers_shift(sweep, tmp_path):
    assert main(["decomposition", str(sweep), "--out", str(tmp_path)]) == 0
    layers = pd.read_csv(tmp_path / "decomposition_layers.csv")
    variance = pd.concat([pd.read_csv(sweep / name / "variance.csv").assign(setting=name) for name in SETTINGS])
    final = variance[variance["stage"] == "final"]
    # one row per run and layer (the no-dropout run is the reference in each of the two panels, as in Figure 4)
    assert len(layers.drop_duplicates(["run_dir", "layer"])) == len(final)
    fed = layers[layers["feed"].isin(["direct", "weight"])]
    assert set(fed["feed"]) == {"direct", "weight"}  # before BN: direct; before the conv: through it
    np.testing.assert_allclose(fed["ratio"], fed["theory"] * fed["chain"] * (1 + fed["moving_error"] / 100),
                               rtol=1e-9)
    np.testing.assert_allclose(fed["theory"], (fed["clean_var"] + fed["noise_predicted"]) / fed["clean_var"])
    assert layers.loc[~layers["feed"].isin(["direct", "weight"]), "theory"].isna().all()
    table = (tmp_path / "decomposition.md").read_text()
    assert "| direct |" in table and "| weight |" in table and "theory x chain" in table
    assert_cells_line_up(table)


def test_the_shift_over_training_has_every_probed_epoch_of_every_layer(sweep, tmp_path):
    assert main(["shift-over-training", str(sweep), "--out", str(tmp_path)]) == 0
    plotted = pd.read_csv(tmp_path / "shift_over_training.csv")
    per_run = plotted.groupby("run_dir")
    assert per_run["epoch"].agg(lambda epochs: sorted(set(epochs))).map(tuple).unique().tolist() == [(1, 2)]
    assert (per_run["layer"].nunique() == 3).all()  # the small CNN's three BN layers
    # epoch 1 is the probe during training, epoch 2 the final probe
    assert set(plotted.loc[plotted["epoch"] == 1, "stage"]) == {"probe"}
    table = (tmp_path / "shift_over_training.md").read_text()
    assert_cells_line_up(table)
    # cells: network, panel, dropout, epoch, ...
    epochs = [cells(line)[3] for line in table.splitlines() if "fashion_mnist" in line]
    assert sorted(epochs) == ["1"] * 4 + ["2"] * 4  # four curves (the no-dropout run in both panels), two epochs


def test_the_channel_distribution_has_one_value_per_bn_channel(sweep, tmp_path):
    assert main(["channel-shift", str(sweep), "--out", str(tmp_path)]) == 0
    plotted = pd.read_csv(tmp_path / "channel_shift.csv")
    per_run = plotted.drop_duplicates(["run_dir", "layer", "channel"]).groupby("run_dir").size()
    assert set(per_run) == {4 + 8 + 8}  # channels of the conv BNs (4, 8) and the hidden BN (8)
    ratio = plotted["real_var"] / plotted["moving_var"]
    np.testing.assert_allclose(plotted["shift"], np.maximum(ratio, 1 / ratio), rtol=1e-9)


def test_seed_statistics_give_t_intervals_and_the_paired_difference_to_no_dropout():
    runs = pd.DataFrame({
        "seed": [0, 1, 2] * 3,
        "dropout.kind": ["none"] * 3 + ["bernoulli"] * 6,
        "dropout.rate": [0.0] * 3 + [0.1] * 3 + [0.5] * 3,
        "model.name": ["m"] * 9,
        "error": [10.0, 11.0, 12.0, 11.0, 13.0, 12.0, 20.0, 21.5, 22.0],
    })
    table = seed_statistics(runs, ["model.name", "dropout.kind", "dropout.rate"], "error").set_index("dropout.rate")
    half = scipy_stats.t.ppf(0.975, 2) / math.sqrt(3)  # sd 1 over three seeds
    assert table.loc[0.0, ["mean", "sd", "ci_low", "ci_high"]].tolist() == pytest.approx([11, 1, 11 - half, 11 + half])
    # seed by seed: 1, 2, 0 -> mean 1, sd 1: its interval holds 0
    low, high = table.loc[0.1, ["difference_low", "difference_high"]]
    assert table.loc[0.1, "difference"] == pytest.approx(1.0) and (low, high) == pytest.approx((1 - half, 1 + half))
    assert table.loc[0.1, "within_noise"] == True  # noqa: E712 (numpy bool)
    # 10, 10.5, 10: far outside seed noise
    assert table.loc[0.5, "difference"] == pytest.approx(30.5 / 3) and table.loc[0.5, "within_noise"] == False  # noqa: E712
    assert table.loc[0.0, "pairs"] == 3 and table.loc[0.0, "difference"] == 0.0


def test_paper_tables_write_their_statistics_beside_them(sweep, tmp_path):
    assert main(["theory-vs-measured", str(sweep), "--out", str(tmp_path)]) == 0
    statistics = pd.read_csv(tmp_path / "theory_vs_measured_table_stats.csv")
    assert {"ci_low", "ci_high", "difference", "within_noise"} <= set(statistics.columns)
    assert (statistics["n"] == 1).all() and statistics["ci_low"].isna().all()  # one seed: no interval
    table = (tmp_path / "theory_vs_measured_table_stats.md").read_text()
    assert "paired difference to no dropout" in table
    assert_cells_line_up(table)
    assert_cells_line_up((tmp_path / "theory_vs_measured_table.md").read_text())
