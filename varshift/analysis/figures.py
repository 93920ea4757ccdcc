"""The paper's figures with seaborn: PNG and PDF, plus a CSV of exactly the data plotted and a TXT of the caption.

:func:`fig1`, :func:`fig4`, :func:`fig5` and :func:`fig3` write the files of one artifact each (the
theory-vs-measured figure is :func:`varshift.analysis.theory_figure.theory_vs_measured`). Captions name the
artifact (``Figure 4: ...``) and, where the runs come from another experiment preset, that preset; bands and
error bars, where a setting has several seeds, are the range over them (see :mod:`varshift.analysis.plotting`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns

from varshift import theory
from varshift.analysis.collect import collect_records
from varshift.analysis.labels import KIND_LABELS, NO_DROPOUT, RATE_SYMBOLS, caption
from varshift.analysis.paper import paper_reference
from varshift.analysis.plotting import (
    ERROR_BARS,
    FACETS,
    NO_DROPOUT_COLOUR,
    dropout_order,
    dropout_palette,
    finish,
    hide_empty_facets,
    integer_ticks,
    labelled,
    log_scale_if_wide,
    plt,
    save_figure,
    seed_spread,
    set_caption,
    with_title,
)
from varshift.analysis.tables import artifact_table, melt_metrics, with_test_error
from varshift.vocabulary import EPOCHS

SHIFT_LABEL = "variance shift\nmax(real/moving, moving/real)"
# Figure 1: the paper's network and dataset, and the drop ratio of its dropout curve
FIG1_NETWORK, FIG1_DATASET, FIG1_RATE = "densenet_bc100", "cifar100", 0.5


def final_variance(runs: pd.DataFrame) -> pd.DataFrame:
    """The per-layer records of the shift after training (stage ``final``) of ``runs``."""
    variance = collect_records(runs, "variance")
    final = variance[variance["stage"] == "final"]
    if final.empty:
        raise ValueError("the runs' variance.csv files have no rows of stage 'final' (the shift after training)")
    return final


def shift_curves(data: pd.DataFrame, runs: pd.DataFrame, caption_text: str) -> sns.FacetGrid:
    """Figure 4, top: the shift statistic of every BN layer, one line per dropout setting of ``runs``."""
    errorbar, note = seed_spread(data, ["panel", "network", "dropout"])
    with sns.axes_style("whitegrid"):
        grid = sns.relplot(data=data, x="layer", y="shift", hue="dropout", hue_order=dropout_order(data),
                           palette=dropout_palette(runs), kind="line", errorbar=errorbar, marker="o", markersize=3,
                           **FACETS)
    integer_ticks(grid.axes.flat)
    log_scale_if_wide(grid.axes.flat, data["shift"])
    grid.legend.set_title(None)
    finish(grid, "BN layer index", SHIFT_LABEL, f"{caption_text}{note}")
    return hide_empty_facets(grid, data)


def error_bars(data: pd.DataFrame, runs: pd.DataFrame, error: str, caption_text: str) -> sns.FacetGrid:
    """Figure 4, bottom: test error per network, one bar per dropout setting of ``runs``."""
    errorbar, note = seed_spread(data, ["panel", "network", "dropout"], bars=True)
    with sns.axes_style("whitegrid"):
        grid = sns.catplot(data=data, x="network", y=error, hue="dropout", hue_order=dropout_order(data),
                           palette=dropout_palette(runs), col="panel", kind="bar", errorbar=errorbar, height=3.2,
                           aspect=1.3, sharex=False, **ERROR_BARS)
    for ax in grid.axes.flat:  # each panel names only its own networks, one setting per line
        ax.set_xticks(ax.get_xticks(), [label.get_text().replace(", ", "\n") for label in ax.get_xticklabels()])
    grid.legend.set_title(None)
    return finish(grid, "network", "test error (%)", f"{caption_text}{note}")


def fig4(runs: pd.DataFrame, out: str | Path, epoch: str = "final") -> list[Path]:
    """Figure 4: per-layer shift curves and test error bars, plus tables of both with the paper's values."""
    curves = labelled(final_variance(runs), runs)[["run_dir", "seed", "panel", "network", "dropout", "layer",
                                                   "name", "shift"]]
    with_error, error = with_test_error(runs, epoch)
    errors = labelled(with_error, runs)[["run_dir", "seed", "panel", "network", "dropout", error]]
    rows, columns = ["dropout.position", "dataset.name", "model.name"], ["dropout.rate"]
    return [*save_figure(shift_curves(curves, runs, caption("fig4", runs, "variance shift of every BN layer after "
                                                                         "training (1 = no shift)")).figure,
                         curves, out, "fig4_shift"),
            *save_figure(error_bars(errors, runs, error, caption("fig4", runs, f"test error at the "
                                                                               f"{EPOCHS[epoch]}")).figure,
                         errors, out, "fig4_error"),
            *artifact_table(with_error, rows, columns, "mean_shift", out, "fig4_mean_shift",
                            caption("fig4", runs, "mean over BN layers of the variance shift"),
                            paper_reference("fig4", "mean_shift"), decimals=3),
            *artifact_table(with_error, rows, columns, error, out, "fig4_test_error",
                            caption("fig4", runs, f"test error (%) at the {EPOCHS[epoch]}"),
                            paper_reference("fig4", "test_error"))]


def training_accuracy(data: pd.DataFrame, runs: pd.DataFrame, caption_text: str) -> sns.FacetGrid:
    """Figure 5: accuracy on the training data per epoch, train mode solid, eval mode dashed."""
    errorbar, note = seed_spread(data, ["panel", "network", "dropout", "mode"])
    with sns.axes_style("whitegrid"):
        grid = sns.relplot(data=data, x="epoch", y="accuracy", hue="dropout", hue_order=dropout_order(data),
                           palette=dropout_palette(runs), style="mode", kind="line",
                           errorbar=errorbar, markers=True, style_order=["train mode", "eval mode"],
                           dashes={"train mode": "", "eval mode": (4, 2)}, **FACETS)
    integer_ticks(grid.axes.flat)
    finish(grid, "epoch", "accuracy on the training data (%)", f"{caption_text}{note}")
    return hide_empty_facets(grid, data)


def training_metrics(runs: pd.DataFrame) -> pd.DataFrame:
    """The per-epoch records of ``runs``, with the eval-mode accuracy on the training data of the last epoch,
    which the trainer measures after training into summary.json, not metrics.jsonl."""
    metrics = collect_records(runs, "metrics")
    if "train_eval_acc" not in metrics:
        metrics["train_eval_acc"] = np.nan
    final = runs.set_index("run_dir")[["epochs", "train_eval_acc"]]
    last = metrics["epoch"] == metrics["run_dir"].map(final["epochs"])
    metrics.loc[last, "train_eval_acc"] = metrics.loc[last, "train_eval_acc"].fillna(
        metrics.loc[last, "run_dir"].map(final["train_eval_acc"]))
    return metrics


def fig5(runs: pd.DataFrame, out: str | Path) -> list[Path]:
    """Figure 5: train-mode versus eval-mode accuracy on the training data, and a table of the last epoch."""
    metrics = training_metrics(runs)
    last = metrics["epoch"] == metrics["run_dir"].map(runs.set_index("run_dir")["epochs"])
    modes = ["train_acc", "train_eval_acc"]
    long = labelled(metrics, runs).melt(
        id_vars=["run_dir", "seed", "panel", "network", "dropout", "epoch"], value_vars=modes,
        var_name="mode", value_name="accuracy").dropna(subset=["accuracy"])
    long["mode"] = long["mode"].map({"train_acc": "train mode", "train_eval_acc": "eval mode"})
    last_rows = melt_metrics(metrics[last], modes, "accuracy")
    curves = caption("fig5", runs, "accuracy on the training data after each epoch, with the network in train mode "
                                   "(solid) and in eval mode (dashed)")
    return [*save_figure(training_accuracy(long, runs, curves).figure, long, out, "fig5"),
            *artifact_table(last_rows, ["dataset.name", "model.name"], ["dropout.rate", "metric"], "accuracy",
                            out, "fig5_final", caption("fig5", runs, "accuracy (%) on the training data after the "
                                                                     "last epoch, in train mode and in eval mode"),
                            paper_reference("fig5", modes))]


def alignment_curves(data: pd.DataFrame, x: str, y: str, x_label: str, y_label: str,
                     title: str) -> sns.FacetGrid:
    errorbar, note = seed_spread(data, ["dataset.name", "network", "dropout", x])
    style = "dropout" if data["dropout"].nunique() > 1 else None  # trained weights differ with the dropout
    with sns.axes_style("whitegrid"):
        grid = sns.relplot(data=data, x=x, y=y, hue="network", style=style, col="dataset.name", kind="line",
                           errorbar=errorbar, marker="o", height=3.2, aspect=1.3, facet_kws={"sharex": False})
    integer_ticks(grid.axes.flat)
    grid.set_axis_labels(x_label, y_label)
    grid.set_titles(col_template="{col_name}")
    return with_title(grid, title + note)


def fig3(runs: pd.DataFrame, out: str | Path) -> list[Path]:
    """Figure 3: cos^2(theta) per conv layer, and d cos^2(theta) against the filter dimension d."""
    layers = labelled(collect_records(runs, "alignment"), runs)
    # a run without dropout is labelled once per panel of the others; its conv layers count once
    data = layers[["run_dir", "seed", "dataset.name", "network", "dropout", "layer", "name", "d", "cos2",
                   "d_cos2"]].drop_duplicates()
    by_layer = alignment_curves(data, "layer", "cos2", "convolutional layer index", "mean of cos²θ over filters",
                                caption("fig3", runs, "cos²θ between each filter and the all-ones vector, mean "
                                                      "over the filters of each conv layer"))
    by_d = alignment_curves(data.sort_values("d", kind="stable"), "d", "d_cos2",
                            "weight dimension d of the convolutional filter", "mean of d·cos²θ",
                            caption("fig3", runs, "mean d·cos²θ of each conv layer against its filter "
                                                      "dimension d (in the paper, it grows with d)"))
    log_scale_if_wide(by_d.axes.flat, data["d"], axis="x")  # filters of 9 to thousands of weights
    return [*save_figure(by_layer.figure, data, out, "fig3_cos2"),
            *save_figure(by_d.figure, data, out, "fig3_d_cos2")]


def fig1_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Figure 1's runs: dropout before BN at drop ratio 0 and :data:`FIG1_RATE`, of the paper's network
    and dataset where the runs have them (else of every network and dataset they have)."""
    before_bn = runs[runs["dropout.position"] == "before_bn"]
    chosen = before_bn[(before_bn["dropout.rate"] == 0)
                       | ((before_bn["dropout.kind"] == "bernoulli") & (before_bn["dropout.rate"] == FIG1_RATE))]
    paper = chosen[(chosen["model.name"] == FIG1_NETWORK) & (chosen["dataset.name"] == FIG1_DATASET)]
    chosen = paper if len(paper) else chosen
    rates = set(chosen["dropout.rate"])
    if rates != {0, FIG1_RATE}:
        raise ValueError(f"fig1 needs runs with Bernoulli dropout before BN (dropout.position=before_bn) at drop "
                         f"ratio 0 and {FIG1_RATE}, as experiment fig4 makes; these runs have rates "
                         f"{sorted(rates) or 'none'} there")
    return chosen


def toy_variances(samples: int = 200_000) -> pd.DataFrame:
    """Figure 1, top, simulated: the variance of ``X`` for x ~ N(0, 1) through inverted Bernoulli dropout of
    retain ratio p, in train mode (``X = a x / p``, what BN's moving variance learns) and in test mode (``X = x``)."""
    rng = np.random.default_rng(0)
    rows = []
    for keep in np.linspace(0.3, 1.0, 8):
        x = rng.standard_normal(samples)
        train = theory.sample_noise("bernoulli", 1.0 - keep, samples, rng) * x
        rows += [{"retain ratio p": keep, "mode": "train mode: X = a·x/p (BN's moving variance)",
                  "variance": float(np.var(train))},
                 {"retain ratio p": keep, "mode": "test mode: X = x", "variance": float(np.var(x))}]
    return pd.DataFrame(rows)


def toy_panel(ax, toy: pd.DataFrame, rate: float) -> None:
    sns.lineplot(data=toy, x="retain ratio p", y="variance", hue="mode", marker="o", ax=ax)
    grid = np.linspace(0.3, 1.0, 100)
    ax.plot(grid, 1 / grid, "k:", linewidth=1, label="theory: 1/p and 1")
    ax.axhline(1.0, color="k", linestyle=":", linewidth=1)
    ax.axvline(1 - rate, color="grey", linewidth=1)
    ax.set(title="toy case: x ~ N(0, 1) → dropout → BN", ylabel="variance of X")
    ax.legend(fontsize="small", title=None)


def fig1(runs: pd.DataFrame, out: str | Path, epoch: str = "final") -> list[Path]:
    """Figure 1: the toy case of dropout before BN (top), and the shift of every BN layer of a network
    with and without dropout before each BN, with its test accuracy (bottom)."""
    chosen = fig1_runs(runs)
    chosen, error = with_test_error(chosen, epoch)
    accuracy = (100.0 - chosen.groupby(["model.name", "dataset.name", "dropout.rate"])[error].mean()).rename("acc")
    curves = final_variance(chosen)
    curves = curves.join(accuracy, on=["model.name", "dataset.name", "dropout.rate"])
    curves["curve"] = [
        f"{NO_DROPOUT if rate == 0 else f'{KIND_LABELS[kind]} {RATE_SYMBOLS[kind]} = {rate:g} before each BN'}, "
        f"test accuracy {acc:.2f}%"
        for kind, rate, acc in zip(curves["dropout.kind"], curves["dropout.rate"], curves["acc"], strict=True)]
    curves = curves.sort_values(["model.name", "dataset.name", "dropout.rate", "layer"], kind="stable")
    pairs = list(dict.fromkeys(zip(curves["model.name"], curves["dataset.name"], strict=True)))
    errorbar, note = seed_spread(curves, ["model.name", "dataset.name", "curve"])
    with sns.axes_style("whitegrid"):
        figure = plt.figure(figsize=(max(8.0, 5.0 * len(pairs)), 7.5), layout="constrained")
        axes = figure.subplot_mosaic([["toy"] * len(pairs), [f"{m} | {d}" for m, d in pairs]], sharey=False)
        toy = toy_variances()
        toy_panel(axes["toy"], toy, FIG1_RATE)
        shift_axes = [axes[f"{m} | {d}"] for m, d in pairs]
        for (model, dataset), ax in zip(pairs, shift_axes, strict=True):
            data = curves[(curves["model.name"] == model) & (curves["dataset.name"] == dataset)]
            colours = dict(zip(dict.fromkeys(data["curve"]), [NO_DROPOUT_COLOUR, sns.color_palette("Blues", 4)[-1]],
                               strict=False))  # as in Figure 4: no dropout grey, Bernoulli dropout blue
            sns.lineplot(data=data, x="layer", y="shift", hue="curve", palette=colours, errorbar=errorbar, marker="o",
                         markersize=3, ax=ax)
            ax.set(xlabel="BN layer index", ylabel=SHIFT_LABEL, title=f"{model} on {dataset}")
            ax.legend(fontsize="small", title=None)
        integer_ticks(shift_axes)
        log_scale_if_wide(shift_axes, curves["shift"])
        top = max(ax.get_ylim()[1] for ax in shift_axes)
        for ax in shift_axes:
            ax.set_ylim(top=top)
        set_caption(figure, caption("fig1", runs, f"top, the toy case: the variance BN learns in train mode (1/p) "
                                                  f"against the one it meets in test mode (1); at retain ratio p = "
                                                  f"{1 - FIG1_RATE:g} BN divides its test inputs by "
                                                  f"{1 / (1 - FIG1_RATE):g}. Bottom: the variance shift of every BN "
                                                  f"layer after training, with and without dropout before each BN, "
                                                  f"and the test accuracy at the {EPOCHS[epoch]}") + note)
    plotted = curves[["run_dir", "seed", "model.name", "dataset.name", "dropout.kind", "dropout.rate", "curve",
                      "layer", "name", "shift"]]
    return save_figure(figure, pd.concat([plotted.assign(panel="shift"), toy.assign(panel="toy")]), out, "fig1")
