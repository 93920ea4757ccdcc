"""The moving variance of every BN layer a dropout feeds, against the theory from training-time statistics.

Where a dropout feeds a BN (directly, through residual adds, or through one weight layer:
:mod:`varshift.analysis.decomposition`), the theory gives the layer's moving variance as ``clean + noise``: the
training-time variance of its input without its dropouts' noise plus what the noise adds (Eq. 7-8 with the training-time
``c'``, ``v'`` of the dropout's input; Eq. 14 per filter with the measured correlation ``rho'`` through a weight layer).
The figure sets it against the measured moving variance, layer by layer; the table gives, per setting and averaged over
the fed layers, the measured shift, the theory's factor, the chain factor (the upstream dropouts' share) and the
theory's error in percent.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import seaborn as sns

from varshift.analysis.decomposition import FED, final_decomposition
from varshift.analysis.labels import caption
from varshift.analysis.plotting import dropout_order, dropout_palette, save_figure, with_title
from varshift.analysis.tables import artifact_table, melt_metrics

METRICS = {"shift": "measured shift", "theory": "theory factor", "chain": "chain factor",
           "moving_error": "moving variance vs theory (%)"}


def fed_layers(runs: pd.DataFrame) -> pd.DataFrame:
    """The final-stage records of the BN layers fed by a dropout, decomposed."""
    layers = final_decomposition(runs)
    fed = layers[layers["feed"].isin(FED) & layers["predicted_moving"].notna()]
    if fed.empty:
        raise ValueError("no BN layer of these runs is fed by a dropout the theory covers (directly, through residual "
                         "adds or through one weight layer); theory-vs-measured needs runs with dropout before BN, "
                         "before a conv, or on a residual branch")
    return fed


def theory_vs_measured(runs: pd.DataFrame, out: str | Path) -> list[Path]:
    """Per fed BN layer, the theory's moving variance against the measured one; a table of the factors per setting."""
    layers = fed_layers(runs)
    data = layers.rename(columns={"dataset.name": "dataset"})[[
        "run_dir", "seed", "network", "panel", "dropout", "layer", "name", "feed", "sources", "moving_var",
        "predicted_moving", "shift", "theory", "chain", "moving_error"]]
    with sns.axes_style("whitegrid"):
        grid = sns.relplot(data=data, x="predicted_moving", y="moving_var", hue="dropout",
                           hue_order=dropout_order(data), palette=dropout_palette(runs), style="feed", col="network",
                           kind="scatter", height=3.5, aspect=1.1)
    low = min(data["moving_var"].min(), data["predicted_moving"].min())
    high = max(data["moving_var"].max(), data["predicted_moving"].max())
    for ax in grid.axes.flat:
        ax.plot([low, high], [low, high], "k--", linewidth=1)
        ax.set(xscale="log", yscale="log")
    grid.set_axis_labels("theory: clean + noise (Eq. 8 with c', v'; Eq. 14 with rho')", "measured moving variance")
    grid.set_titles(col_template="{col_name}")
    with_title(grid, caption("theory-vs-measured", runs, "the moving variance of each BN layer a dropout feeds, "
                                                         "measured against the theory from training-time statistics "
                                                         "(dashed: equal)"))
    per_run = layers.groupby("run_dir", sort=False)[list(METRICS)].mean().rename(columns=METRICS)
    runs = runs.drop(columns=list(METRICS.values()), errors="ignore").join(per_run, on="run_dir", how="inner")
    value = "the mean over BN layers fed by a dropout"
    return [*save_figure(grid.figure, data, out, "theory_vs_measured"),
            *artifact_table(melt_metrics(runs, list(METRICS.values()), value), ["dropout.kind", "dropout.rate"],
                            ["dataset.name", "model.name", "dropout.position", "metric"], value, out,
                            "theory_vs_measured_table",
                            caption("theory-vs-measured", runs, "the BN layers a dropout feeds: measured shift = "
                                    "theory factor x chain factor (x the theory's error)"), decimals=3)]
