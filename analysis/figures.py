"""The paper's figures with seaborn: PNG and PDF, plus a CSV of exactly the data plotted.

Every figure facets like the paper: columns are position x dataset (``Dropout-(a) before_bn | cifar10``),
rows are networks, and one line (or bar) per dropout setting (``bernoulli 0.5``). Settings that vary among
the runs beyond those (a widen factor, the scale) are appended to the network's name. Error bars are one
standard deviation over seeds. :func:`fig4`, :func:`fig5`, :func:`fig3` and :func:`theory_vs_measured`
write the files of one artifact each.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from analysis.collect import collect_records, varying_settings  # noqa: E402
from analysis.paper import paper_reference  # noqa: E402
from analysis.tables import (  # noqa: E402
    artifact_table,
    column_label,
    melt_metrics,
    sort_settings,
    value_text,
)
from varshift import theory  # noqa: E402
from varshift.io import atomic_write, atomic_write_text  # noqa: E402

POSITION_LABELS = {"none": "no dropout", "before_bn": "Dropout-(a) before_bn",
                   "before_conv": "Dropout-(b) before_conv", "head": "head (after all BN)"}
# the settings each label below shows; the rest that vary join the network label
LABELLED = ("dataset.name", "model.name", "dropout.position", "dropout.kind", "dropout.rate",
            "dropout.channelwise")
FACETS = {"row": "network", "col": "panel", "height": 3.0, "aspect": 1.3,
          "facet_kws": {"sharex": False, "sharey": False}}
FORMATS = ("png", "pdf")


def dropout_label(run: pd.Series) -> str:
    if run["dropout.kind"] == "none":
        return "none"
    text = f"{run['dropout.kind']} {run['dropout.rate']:g}"
    channelwise = run.get("dropout.channelwise")
    return text + (" channel-wise" if pd.notna(channelwise) and bool(channelwise) else "")


def with_labels(df: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """``df`` (runs or their records) sorted, with the labels ``dropout``, ``panel`` and ``network``."""
    extras = varying_settings(runs, exclude=LABELLED)
    df = sort_settings(df, ["dropout.position", "dataset.name", "model.name", *extras, "dropout.kind",
                            "dropout.rate"])

    def network(run: pd.Series) -> str:
        return ", ".join([run["model.name"], *(f"{column_label(c)}={value_text(c, run[c])}" for c in extras)])

    def panel(run: pd.Series) -> str:
        position = run["dropout.position"]
        return f"{POSITION_LABELS.get(position, position)} | {run['dataset.name']}"

    return df.assign(dropout=df.apply(dropout_label, axis=1), panel=df.apply(panel, axis=1),
                     network=df.apply(network, axis=1))


def save_figure(grid: sns.FacetGrid, data: pd.DataFrame, out: str | Path, stem: str) -> list[Path]:
    """``stem.png``, ``stem.pdf`` and ``stem.csv`` (the plotted data) in ``out``."""
    out = Path(out)
    paths = [atomic_write(out / f"{stem}.{fmt}", lambda tmp, fmt=fmt: grid.savefig(tmp, format=fmt, dpi=150))
             for fmt in FORMATS]
    plt.close(grid.figure)
    return [*paths, atomic_write_text(out / f"{stem}.csv", data.to_csv(index=False))]


def finish(grid: sns.FacetGrid, x: str, y: str, title: str) -> sns.FacetGrid:
    grid.set_axis_labels(x, y)
    grid.set_titles(row_template="{row_name}", col_template="{col_name}", size=9)
    grid.figure.suptitle(title, y=1.02)
    return grid


def shift_curves(data: pd.DataFrame) -> sns.FacetGrid:
    """Figure 4, top: the shift statistic of every BN layer, one line per dropout setting."""
    with sns.axes_style("whitegrid"):
        grid = sns.relplot(data=data, x="layer", y="shift", hue="dropout", kind="line", errorbar="sd",
                           marker="o", markersize=3, **FACETS)
    for ax in grid.axes.flat:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return finish(grid, "BN layer index", "max(real/moving, moving/real)",
                  "Variance shift per BN layer after training (1 = no shift); error bars: std over seeds")


def error_bars(data: pd.DataFrame) -> sns.FacetGrid:
    """Figure 4, bottom: test error per network, one bar per dropout setting."""
    with sns.axes_style("whitegrid"):
        grid = sns.catplot(data=data, x="network", y="test_error", hue="dropout", col="panel", kind="bar",
                           errorbar="sd", height=3.2, aspect=1.3, sharey=False)
    return finish(grid, "network", "test error (%)", "Test error per drop ratio; error bars: std over seeds")


def fig4(runs: pd.DataFrame, out: str | Path) -> list[Path]:
    """Figure 4: per-layer shift curves and test error bars, plus tables of both with the paper's values."""
    variance = collect_records(runs, "variance")
    if not (variance["stage"] == "final").any():
        raise ValueError("the runs' variance.csv files have no rows of stage 'final' "
                         "(the shift after training)")
    final = with_labels(variance[variance["stage"] == "final"], runs)
    curves = final[["run_dir", "seed", "panel", "network", "dropout", "layer", "name", "shift"]]
    errors = with_labels(runs, runs)[["run_dir", "seed", "panel", "network", "dropout", "test_error"]]
    rows, columns = ["dropout.position", "dataset.name", "model.name"], ["dropout.rate"]
    return [*save_figure(shift_curves(curves), curves, out, "fig4_shift"),
            *save_figure(error_bars(errors), errors, out, "fig4_error"),
            *artifact_table(runs, rows, columns, "mean_shift", out, "fig4_mean_shift",
                            "Figure 4: mean over BN layers of the variance shift",
                            paper_reference("fig4", "mean_shift"), decimals=3),
            *artifact_table(runs, rows, columns, "test_error", out, "fig4_test_error",
                            "Figure 4: test error (%)", paper_reference("fig4", "test_error"))]


def training_accuracy(data: pd.DataFrame) -> sns.FacetGrid:
    """Figure 5: accuracy on the training data per epoch, train mode solid, eval mode dashed."""
    with sns.axes_style("whitegrid"):
        grid = sns.relplot(data=data, x="epoch", y="accuracy", hue="dropout", style="mode", kind="line",
                           errorbar="sd", markers=True, style_order=["train mode", "eval mode"],
                           dashes={"train mode": "", "eval mode": (4, 2)}, **FACETS)
    return finish(grid, "epoch", "accuracy on the training data (%)",
                  "Training data in train mode (solid) and eval mode (dashed)")


def fig5(runs: pd.DataFrame, out: str | Path) -> list[Path]:
    """Figure 5: train-mode versus eval-mode accuracy on the training data, and a table of the last epoch."""
    metrics = collect_records(runs, "metrics")
    if "train_eval_acc" not in metrics:
        metrics["train_eval_acc"] = np.nan
    # the trainer measures the eval-mode accuracy after the last epoch into summary.json, not metrics.jsonl
    final = runs.set_index("run_dir")[["epochs", "train_eval_acc"]]
    last = metrics["epoch"] == metrics["run_dir"].map(final["epochs"])
    metrics.loc[last, "train_eval_acc"] = metrics.loc[last, "train_eval_acc"].fillna(
        metrics.loc[last, "run_dir"].map(final["train_eval_acc"]))
    modes = ["train_acc", "train_eval_acc"]
    long = with_labels(metrics, runs).melt(
        id_vars=["run_dir", "seed", "panel", "network", "dropout", "epoch"], value_vars=modes,
        var_name="mode", value_name="accuracy").dropna(subset=["accuracy"])
    long["mode"] = long["mode"].map({"train_acc": "train mode", "train_eval_acc": "eval mode"})
    last_rows = melt_metrics(metrics[last], modes, "accuracy")
    return [*save_figure(training_accuracy(long), long, out, "fig5"),
            *artifact_table(last_rows, ["dataset.name", "model.name"], ["dropout.rate", "metric"], "accuracy",
                            out, "fig5_final", "Figure 5: final accuracy (%) on the training data",
                            paper_reference("fig5", modes))]


def alignment_curves(data: pd.DataFrame, x: str, y: str, x_label: str, y_label: str,
                     title: str) -> sns.FacetGrid:
    with sns.axes_style("whitegrid"):
        grid = sns.relplot(data=data, x=x, y=y, hue="network", col="dataset.name", kind="line", errorbar="sd",
                           marker="o", height=3.2, aspect=1.3, facet_kws={"sharex": False})
    grid.set_axis_labels(x_label, y_label)
    grid.set_titles(col_template="{col_name}")
    grid.figure.suptitle(title, y=1.02)
    return grid


def fig3(runs: pd.DataFrame, out: str | Path) -> list[Path]:
    """Figure 3: cos^2(theta) per conv layer, and d cos^2(theta) against the filter dimension d."""
    layers = with_labels(collect_records(runs, "alignment"), runs)
    data = layers[["run_dir", "seed", "dataset.name", "network", "layer", "name", "d", "cos2", "d_cos2"]]
    by_layer = alignment_curves(data, "layer", "cos2", "convolutional layer index",
                                "mean of cos²θ over filters",
                                "cos²θ between each filter and the all-ones vector")
    by_d = alignment_curves(data.sort_values("d", kind="stable"), "d", "d_cos2",
                            "weight dimension d of the convolutional filter", "mean of d·cos²θ",
                            "d·cos²θ grows with the filter dimension d")
    return [*save_figure(by_layer, data, out, "fig3_cos2"), *save_figure(by_d, data, out, "fig3_d_cos2")]


def predicted_shift(kind: str, rate: float) -> float:
    """The paper's statistic max(r, 1/r) for dropout directly before BN, from varshift.theory at c = 0."""
    return 1.0 / theory.shift_ratio(kind, rate, 0.0, 1.0)


def theory_curve(kind: str, top: float, points: int = 50) -> pd.DataFrame:
    rates = np.linspace(0.0, top, points)
    return pd.DataFrame({"dropout.kind": kind, "dropout.rate": rates,
                         "mean_shift": [predicted_shift(kind, r) for r in rates]})


def theory_vs_measured(runs: pd.DataFrame, out: str | Path) -> list[Path]:
    """Measured mean shift of the runs with dropout before BN against the case (a) prediction."""
    measured = runs[(runs["dropout.position"] == "before_bn") & (runs["dropout.kind"] != "none")]
    measured = measured.dropna(subset=["mean_shift"])
    if measured.empty:
        raise ValueError("theory-vs-measured needs runs with dropout.position=before_bn and a dropout kind "
                         "other than none; these runs have none")
    measured = with_labels(measured, runs)
    measured = measured.assign(setting=measured["network"] + " | " + measured["dataset.name"])
    curves = pd.concat([theory_curve(kind, rates.max()) for kind, rates in
                        measured.groupby("dropout.kind", sort=False)["dropout.rate"]], ignore_index=True)
    with sns.axes_style("whitegrid"):
        grid = sns.relplot(data=measured, x="dropout.rate", y="mean_shift", hue="setting", col="dropout.kind",
                           kind="line", errorbar="sd", err_style="bars", marker="o", height=3.2, aspect=1.3,
                           facet_kws={"sharex": False, "sharey": False})
    finish(grid, "rate (drop ratio; beta for uniform)", "mean shift over BN layers",
           "Measured shift (dropout before BN) against theory 1 + Var[m]")
    grid.set_titles(col_template="{col_name} dropout")
    for kind, ax in grid.axes_dict.items():
        curve = curves[curves["dropout.kind"] == kind]
        line = ax.plot(curve["dropout.rate"], curve["mean_shift"], "k--", label="theory, case (a), c = 0")
        ax.legend(handles=line, loc="upper left", fontsize="small")
    columns = ["run_dir", "seed", "setting", "dropout.kind", "dropout.rate", "mean_shift"]
    plotted = pd.concat([measured[columns].assign(source="measured"), curves.assign(source="theory")],
                        ignore_index=True)
    points = measured[["dropout.kind", "dropout.rate"]].drop_duplicates()
    reference = points.assign(reference=[predicted_shift(k, r) for k, r in points.itertuples(index=False)])
    return [*save_figure(grid, plotted, out, "theory_vs_measured"),
            *artifact_table(measured, ["dropout.kind", "dropout.rate"], ["dataset.name", "model.name"],
                            "mean_shift", out, "theory_vs_measured_table",
                            "Mean variance shift before BN: measured and theory", reference, decimals=3,
                            reference_label="theory")]
