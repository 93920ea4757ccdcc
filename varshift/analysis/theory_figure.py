"""The variance shift measured in BN layers fed directly by a dropout, against the theory (Eq. 7-8, 15).

The theory's case (a) is one BN whose input is a dropout's output: with the mean ``c`` and variance ``v``
of that input at test time, the BN's moving variance is ``v + s2 (c^2 + v)`` and the statistic
``max(real/moving, moving/real)`` is ``1 / theory.shift_ratio(kind, rate, c, v)``. Only the BN layers that
``variance.csv`` marks ``fed_by_dropout`` are compared, each with its own measured ``input_mean`` and
``input_var``; the layers further on see the shift through weights and other BNs, outside case (a).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import seaborn as sns

from varshift import theory
from varshift.analysis.figures import SHIFT_LABEL, final_variance
from varshift.analysis.labels import caption
from varshift.analysis.plotting import (
    dropout_order,
    dropout_palette,
    labelled,
    log_scale_if_wide,
    save_figure,
    with_title,
)
from varshift.analysis.tables import artifact_table, melt_metrics

INPUT_COLUMNS = ["input_mean", "input_var", "fed_by_dropout"]


def fed_layers(runs: pd.DataFrame) -> pd.DataFrame:
    """The final-stage records of the BN layers fed by a dropout, with the theory's ``predicted_shift``."""
    variance = final_variance(runs)
    lacking = sorted(set(variance.loc[variance.reindex(columns=INPUT_COLUMNS).isna().any(axis=1), "run_dir"]))
    if lacking:
        raise ValueError(f"variance.csv of {len(lacking)} runs (e.g. {lacking[0]}) has no {', '.join(INPUT_COLUMNS)} "
                         "(written by an older varshift); rerun them to compare with the theory")
    fed = variance[variance["fed_by_dropout"].astype(bool)]
    if fed.empty:
        raise ValueError("no BN layer of these runs is fed directly by a dropout; theory-vs-measured needs runs "
                         "with dropout.position=before_bn and a dropout kind other than none")
    predicted = [1.0 / theory.shift_ratio(kind, rate, mean, var) for kind, rate, mean, var in
                 fed[["dropout.kind", "dropout.rate", "input_mean", "input_var"]].itertuples(index=False)]
    return fed.assign(predicted_shift=predicted)


def theory_vs_measured(runs: pd.DataFrame, out: str | Path) -> list[Path]:
    """Per BN layer fed by a dropout: the measured shift against the case (a) prediction from the layer's
    own input mean and variance; and a table of both averaged over those layers."""
    layers = fed_layers(runs)
    data = labelled(layers, runs).rename(columns={"dataset.name": "dataset"})[[
        "run_dir", "seed", "network", "dataset", "dropout", "layer", "name", "input_mean", "input_var", "shift",
        "predicted_shift"]]
    style = "dataset" if data["dataset"].nunique() > 1 else None
    with sns.axes_style("whitegrid"):
        grid = sns.relplot(data=data, x="predicted_shift", y="shift", hue="dropout", hue_order=dropout_order(data),
                           palette=dropout_palette(runs), style=style, col="network", kind="scatter", height=3.5,
                           aspect=1.1)
    low = min(data["shift"].min(), data["predicted_shift"].min())
    high = max(data["shift"].max(), data["predicted_shift"].max())
    for ax in grid.axes.flat:
        ax.plot([low, high], [low, high], "k--", linewidth=1)
    log_scale_if_wide(grid.axes.flat, pd.concat([data["shift"], data["predicted_shift"]]))
    for ax in grid.axes.flat:
        ax.set_xscale(ax.get_yscale())
    grid.set_axis_labels("theory (Eq. 7-8): 1 + s²(c² + v) / v", f"measured: {SHIFT_LABEL}")
    grid.set_titles(col_template="{col_name}")
    with_title(grid, caption("theory-vs-measured", runs, "the BN layers fed directly by a dropout, measured shift "
                                                         "against the theory (dashed: equal)"))
    per_run = layers.groupby("run_dir", sort=False)[["shift", "predicted_shift"]].mean()
    runs = runs.drop(columns=["shift", "predicted_shift"], errors="ignore").join(per_run, on="run_dir", how="inner")
    value = "the mean over BN layers fed by a dropout"
    return [*save_figure(grid.figure, data, out, "theory_vs_measured"),
            *artifact_table(melt_metrics(runs, ["shift", "predicted_shift"], value), ["dropout.kind", "dropout.rate"],
                            ["dataset.name", "model.name", "metric"], value, out, "theory_vs_measured_table",
                            caption("theory-vs-measured", runs, "shift of the BN layers fed by a dropout, measured "
                                    "and predicted (Eq. 7-8 with each layer's input mean and variance)"), decimals=3)]
