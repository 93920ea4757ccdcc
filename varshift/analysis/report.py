"""One run's report: ``report.md`` in its run directory, with its accuracy curves, its per-layer shift and a
table of its results (``varshift-analysis report RUN_DIR``, or :func:`write_run_report`)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import seaborn as sns

from varshift.analysis.collect import collect, collect_records
from varshift.analysis.figures import SHIFT_LABEL, training_metrics
from varshift.analysis.labels import POSITION_LABELS, dropout_label
from varshift.analysis.plotting import Figure, integer_ticks, log_scale_if_wide, plt, write_image
from varshift.io import atomic_write_text

# drawn in this order: the eval-mode accuracy (mostly the last epoch's point alone) last, on top
ACCURACY_CURVES = {"train_acc": "training data, train mode", "val_acc": "validation data", "test_acc": "test data",
                   "train_eval_acc": "training data, eval mode"}
SHIFT_STAGES = {"final": "after training", "recalibrated": "after BN recalibration"}
# summary.json key -> what the report calls it; the keys a run has are shown, in this order
RESULTS = {"test_acc": "test accuracy (%), final epoch", "best_test_acc": "test accuracy (%), best epoch",
           "test_top5_acc": "top-5 test accuracy (%), final epoch",
           "test_acc_recalibrated": "test accuracy (%) after BN recalibration",
           "test_top5_acc_recalibrated": "top-5 test accuracy (%) after BN recalibration",
           "train_acc": "training accuracy (%), train mode, last epoch",
           "train_eval_acc": "training accuracy (%), eval mode, after training",
           "mean_shift": "mean shift over BN layers", "max_shift": "largest shift of a BN layer",
           "mean_shift_recalibrated": "mean shift after BN recalibration", "epochs": "epochs",
           "stopped_early": "stopped early", "wall_time_s": "wall time (s)", "device": "device"}
PER_CLASS = {"test_acc_per_class": "final model", "test_acc_recalibrated_per_class": "after BN recalibration"}
ACCURACY_PNG, SHIFT_PNG, REPORT = "report_accuracy.png", "report_shift.png", "report.md"


def save_png(figure: Figure, path: Path) -> Path:
    write_image(figure, path)
    plt.close(figure)
    return path


def accuracy_figure(metrics: pd.DataFrame) -> Figure:
    curves = [column for column in ACCURACY_CURVES if column in metrics]
    long = metrics.melt(id_vars=["epoch"], value_vars=curves, var_name="curve", value_name="accuracy").dropna()
    long["curve"] = long["curve"].map(ACCURACY_CURVES)
    with sns.axes_style("whitegrid"):
        figure, ax = plt.subplots(figsize=(6, 3.5))
        # a marker shape per curve: the eval-mode point of the last epoch often lies on the test accuracy's
        sns.lineplot(data=long, x="epoch", y="accuracy", hue="curve", style="curve", markers=True, dashes=False,
                     markersize=7, ax=ax)
    integer_ticks([ax])
    ax.set(xlabel="epoch", ylabel="accuracy (%)")  # report.md's headings title the figures
    ax.legend(title=None, fontsize="small")
    return figure


def shift_figure(variance: pd.DataFrame) -> Figure:
    data = variance[variance["stage"].isin(list(SHIFT_STAGES))].assign(
        stage=lambda frame: frame["stage"].map(SHIFT_STAGES))
    with sns.axes_style("whitegrid"):
        figure, ax = plt.subplots(figsize=(6, 3.5))
        sns.lineplot(data=data, x="layer", y="shift", hue="stage", marker="o", markersize=3, ax=ax)
        fed = data[data["fed_by_dropout"].astype(bool)]
        if len(fed):
            ax.scatter(fed["layer"], fed["shift"], s=40, facecolors="none", edgecolors="k",
                       label="BN fed directly by a dropout", zorder=3)
    integer_ticks([ax])
    log_scale_if_wide([ax], data["shift"])
    ax.set(xlabel="BN layer index", ylabel=SHIFT_LABEL)
    ax.legend(title=None, fontsize="small")
    return figure


def results_table(run: pd.Series) -> str:
    rows = [(label, run[key]) for key, label in RESULTS.items() if key in run and not pd.isna(run[key])]
    lines = [f"| {label} | {value:.4g} |" if isinstance(value, float) else f"| {label} | {value} |"
             for label, value in rows]
    return "\n".join(["| result | value |", "|---|---|", *lines])


def per_class_table(run: pd.Series) -> list[str]:
    """Markdown lines: the test accuracy of each class, final and after BN recalibration (none for older runs)."""
    columns = {key: label for key, label in PER_CLASS.items()
               if isinstance(run.get(key), (list, tuple))}
    if not columns:
        return []
    header = ["| class | " + " | ".join(columns.values()) + " |", "|---" * (len(columns) + 1) + "|"]
    cells = zip(*(run[key] for key in columns), strict=True)
    rows = [f"| {label} | " + " | ".join("–" if value is None else f"{value:.2f}" for value in values) + " |"
            for label, values in enumerate(cells)]
    return ["## Test accuracy per class", "", "Accuracy (%) on the test images of each class (label 0, 1, ...).", "",
            *header, *rows, ""]


def write_run_report(run_dir: str | Path) -> Path:
    """Write ``report.md`` (and its PNG figures beside it) into a finished run's directory; return its path."""
    run_dir = Path(run_dir)
    runs = collect([run_dir])
    if len(runs) != 1 or Path(runs["run_dir"].iloc[0]) != run_dir:
        raise ValueError(f"{run_dir} is not the directory of one finished run")
    run = runs.iloc[0]
    save_png(accuracy_figure(training_metrics(runs)), run_dir / ACCURACY_PNG)
    save_png(shift_figure(collect_records(runs, "variance")), run_dir / SHIFT_PNG)
    position = POSITION_LABELS.get(run["dropout.position"], run["dropout.position"])
    text = "\n".join([
        f"# Run report: {run_dir.name}", "",
        f"{run['model.name']} on {run['dataset.name']}, {dropout_label(run)} ({position}), seed {run['seed']}, "
        f"experiment {run['experiment_name']}, scale {run['scale.name']}.", "",
        results_table(run), "",
        *per_class_table(run),
        "## Accuracy", "", f"![accuracy per epoch]({ACCURACY_PNG})", "",
        "## Variance shift per BN layer", "",
        "max(real_var / moving_var, moving_var / real_var) of each BN layer, the paper's statistic (1 = no shift).",
        "",
        f"![variance shift per BN layer]({SHIFT_PNG})", ""])
    return atomic_write_text(run_dir / REPORT, text)
