"""Each BN layer's measured shift taken apart by the theory, from the terms the probe records (:mod:`varshift.probes`).

For a BN layer that dropouts feed (``feed`` direct, additive or weight), the ratio of its moving variance to the
test-time variance of its input is a product of three factors:

    moving / real  =  (clean + noise) / clean   x   clean / real   x   moving / (clean + noise)
                      theory                        chain              what the theory misses

* ``noise``: the variance the theory says its sources add in training (``noise_predicted``): Eq. 7's ``s2 E[x'^2]`` for
  a dropout that feeds it directly (Eq. 8 with the training-time ``c'``, ``v'`` of the dropout's input) or through adds,
  Eq. 14 per filter with the measured ``rho'`` through a weight layer;
* ``clean``: the BN input's training-time variance without its sources' noise (for a direct feed, ``v'`` itself);
* the chain factor ``clean / real``: how far the training-time input of the layer is from its test-time input because
  of the dropouts further up (the paper's "chain reaction"); 1 for the first fed layer;
* the last factor is 1 where the theory is exact (within sampling error): ``moving_error`` is it less 1, in percent.

Layers reached another way are ``downstream`` (no factor), as are layers no dropout reaches. :func:`decomposition`
writes a figure (the factors per BN layer, one panel per setting) and a table (mean ± sd over seeds per layer) of any
runs: one run directory, or a sweep.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns

from varshift.analysis.figures import final_variance
from varshift.analysis.labels import caption
from varshift.analysis.markdown import markdown_table
from varshift.analysis.plotting import integer_ticks, labelled, save_figure, with_title
from varshift.analysis.stats import interval
from varshift.io import atomic_write_text

FED = ("direct", "additive", "weight")
FACTORS = {"ratio": "measured: moving / real", "theory": "theory: (clean + noise) / clean (Eq. 8 or 14)",
           "chain": "chain: clean / real"}


def decompose(variance: pd.DataFrame) -> pd.DataFrame:
    """``variance`` records with ``ratio``, ``theory``, ``chain``, ``predicted_moving`` and ``moving_error`` (%), NaN
    for the layers the theory does not cover."""
    lacking = sorted(set(variance.loc[variance.reindex(columns=["feed"])["feed"].isna(), "run_dir"]))
    if lacking:
        raise ValueError(f"variance.csv of {len(lacking)} runs (e.g. {lacking[0]}) has none of the theory's terms "
                         "(feed, noise_predicted, clean_var; written by an older varshift): rerun them to take their "
                         "shift apart")
    fed = variance["feed"].isin(FED)
    predicted = (variance["clean_var"] + variance["noise_predicted"]).where(fed)
    return variance.assign(
        ratio=variance["moving_var"] / variance["real_var"],
        theory=(predicted / variance["clean_var"]).where(fed),
        chain=(variance["clean_var"] / variance["real_var"]).where(fed),
        predicted_moving=predicted,
        moving_error=100.0 * (variance["moving_var"] / predicted - 1.0))


def final_decomposition(runs: pd.DataFrame) -> pd.DataFrame:
    """The decomposed final-stage records of ``runs``, labelled (``dropout``, ``panel``, ``network``)."""
    return labelled(decompose(final_variance(runs)), runs)


def factor_figure(data: pd.DataFrame, title: str):
    long = data.melt(id_vars=["run_dir", "seed", "panel", "network", "dropout", "layer", "name", "feed"],
                     value_vars=list(FACTORS), var_name="factor", value_name="value").dropna(subset=["value"])
    long["factor"] = long["factor"].map(FACTORS)
    long["setting"] = long["network"] + " | " + long["panel"] + " | " + long["dropout"]
    with sns.axes_style("whitegrid"):
        grid = sns.relplot(data=long, x="layer", y="value", hue="factor", hue_order=list(FACTORS.values()),
                           style="factor", col="setting", col_wrap=min(3, long["setting"].nunique()), kind="line",
                           markers=True, errorbar="sd" if long["seed"].nunique() > 1 else None, height=3.0,
                           aspect=1.4, facet_kws={"sharey": False})
    for ax in grid.axes.flat:
        ax.set_yscale("log")
        ax.axhline(1.0, color="k", linewidth=0.8)
    integer_ticks(grid.axes.flat)
    grid.set_axis_labels("BN layer index", "factor (log scale)")
    grid.set_titles(col_template="{col_name}", size=8)
    return long, with_title(grid, f"{title} Each BN layer's moving / real variance = theory x chain (x what the "
                                  "theory misses); lines only where a dropout feeds the layer.")


def layer_table(data: pd.DataFrame) -> pd.DataFrame:
    """Per setting and BN layer: mean ± sd over seeds of the statistic, the factors and the theory's error."""
    keys = ["network", "panel", "dropout", "layer", "name", "feed"]
    rows = []
    for key, group in data.groupby(keys, sort=False):
        row = dict(zip(keys, key, strict=True))
        row["seeds"] = group["seed"].nunique()
        for column, label in (("shift", "shift"), ("ratio", "moving/real"), ("theory", "theory"), ("chain", "chain"),
                              ("moving_error", "moving vs theory (%)")):
            values = group[column].dropna().to_numpy(dtype=float)
            if len(values) == 0:
                row[label] = "–"
                continue
            mean, sd, _, _ = interval(values)
            row[label] = f"{mean:.3f}" + ("" if np.isnan(sd) else f" ± {sd:.3f}")
        rows.append(row)
    return pd.DataFrame(rows)


def decomposition(runs: pd.DataFrame, out: str | Path) -> list[Path]:
    """The per-layer decomposition of the final shift of ``runs``: figure, table (Markdown) and the records (CSV)."""
    data = final_decomposition(runs)
    title = caption("decomposition", runs, "the shift of every BN layer taken apart")  # ends with a full stop
    long, grid = factor_figure(data, title)
    table = layer_table(data)
    note = ("moving/real = theory x chain x (1 + error/100), per BN layer; theory: Eq. 8 with the dropout input's "
            "training-time c', v' (direct and additive feeds), Eq. 14 per filter with the measured rho' (through a "
            "weight layer); chain: the training-time variance of the layer's input without its dropouts' noise over "
            "its test-time variance; downstream: reached otherwise, no closed form. Mean ± sd over seeds.")
    markdown = (f"**{title}**\n\n"
                f"{markdown_table(table)}\n\n{note}\n")
    columns = ["run_dir", "seed", "network", "panel", "dropout", "layer", "name", "feed", "sources", "shift",
               "moving_var", "real_var", "clean_var", "noise_predicted", "noise_measured", "ratio", "theory", "chain",
               "predicted_moving", "moving_error"]
    return [*save_figure(grid.figure, long, out, "decomposition"),
            atomic_write_text(Path(out) / "decomposition.md", markdown),
            atomic_write_text(Path(out) / "decomposition_layers.csv", data[columns].to_csv(index=False))]
