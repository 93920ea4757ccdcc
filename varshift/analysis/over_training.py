"""The shift over training and across channels: runs probed during training (``probe.every``) and per channel
(``probe.per_channel``).

:func:`shift_over_training`: the shift of every BN layer against the epoch (the ``probe`` rows of ``variance.csv`` and
the ``final`` ones after the last epoch), one panel per setting, one line per layer; and a table of the mean over BN
layers per epoch (mean ± sd over seeds). :func:`channel_shift`: the distribution over channels of each BN layer's
shift after training (``variance_channels.csv``), one panel per setting.
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import seaborn as sns

from varshift.analysis.collect import DamagedFile, collect_records, complete_text, setting_columns, skip
from varshift.analysis.figures import SHIFT_LABEL
from varshift.analysis.labels import caption
from varshift.analysis.markdown import markdown_table
from varshift.analysis.plotting import integer_ticks, labelled, log_scale_if_wide, save_figure, seed_spread, with_title
from varshift.analysis.stats import interval
from varshift.io import atomic_write_text
from varshift.tracking import CHANNELS_FILE

SETTING = ["network", "panel", "dropout"]


def setting_label(data: pd.DataFrame) -> pd.Series:
    return data["network"] + " | " + data["panel"] + " | " + data["dropout"]


def probe_rows(runs: pd.DataFrame) -> pd.DataFrame:
    """The per-epoch probe rows and the final ones of ``runs``, labelled."""
    variance = collect_records(runs, "variance")
    rows = variance[variance["stage"].isin(["probe", "final"])]
    probed = rows.loc[rows["stage"] == "probe", "run_dir"].unique()
    if len(probed) == 0:
        raise ValueError("no run here was probed during training; train with probe.every=1 (probe=every_epoch), "
                         "as experiment fig5 does")
    return labelled(rows[rows["run_dir"].isin(probed)], runs)


def shift_over_training(runs: pd.DataFrame, out: str | Path) -> list[Path]:
    """Figure and table of the shift against the epoch."""
    data = probe_rows(runs)
    data = data.assign(setting=setting_label(data), layer_name=data["layer"].astype(str) + " " + data["name"])
    errorbar, note = seed_spread(data, ["setting", "layer_name", "epoch"])
    with sns.axes_style("whitegrid"):
        grid = sns.relplot(data=data, x="epoch", y="shift", hue="layer_name", col="setting",
                           col_wrap=min(3, data["setting"].nunique()), kind="line", marker="o", markersize=3,
                           errorbar=errorbar, height=3.0, aspect=1.3,
                           facet_kws={"sharey": False})
    integer_ticks(grid.axes.flat)
    log_scale_if_wide(grid.axes.flat, data["shift"])
    grid.set_axis_labels("epoch", SHIFT_LABEL)
    grid.set_titles(col_template="{col_name}", size=8)
    grid.legend.set_title("BN layer")
    with_title(grid, caption("shift-over-training", runs, "the shift of every BN layer over training (probe.every), "
                                                          "1 = no shift" + note))
    per_run = data.groupby([*SETTING, "run_dir", "epoch"], sort=False)["shift"].mean().reset_index()
    lines = []
    for (network, panel, dropout, epoch), group in per_run.groupby([*SETTING, "epoch"], sort=False):
        mean, sd, _, _ = interval(group["shift"].to_numpy(dtype=float))
        lines.append({"network": network, "panel": panel, "dropout": dropout, "epoch": epoch, "runs": len(group),
                      "mean shift over BN layers": f"{mean:.3f}" + ("" if pd.isna(sd) else f" ± {sd:.3f}")})
    table = pd.DataFrame(lines)
    title = caption("shift-over-training", runs, "mean over BN layers of the shift after each probed epoch (mean ± sd "
                                                 "over seeds)")
    markdown = (f"**{title}**\n\n"
                f"{markdown_table(table)}\n")
    plotted = data[["run_dir", "seed", *SETTING, "stage", "epoch", "layer", "name", "shift"]]
    return [*save_figure(grid.figure, plotted, out, "shift_over_training"),
            atomic_write_text(Path(out) / "shift_over_training.md", markdown)]


def channel_records(runs: pd.DataFrame) -> pd.DataFrame:
    """The per-channel rows (``variance_channels.csv``) of the runs that wrote them, tagged like
    :func:`varshift.analysis.collect.collect_records` tags its records."""
    tags = runs[["run_dir", "seed", *setting_columns(runs)]]
    frames = []
    for run in tags.to_dict("records"):
        path = Path(run["run_dir"]) / CHANNELS_FILE
        if not path.exists():
            continue
        try:
            frame = pd.read_csv(io.StringIO(complete_text(path)))
        except (DamagedFile, ValueError) as error:
            skip(run["run_dir"], f"{CHANNELS_FILE}: {error}")
            continue
        for column, value in run.items():
            frame[column] = [value] * len(frame)
        frames.append(frame)
    if not frames:
        raise ValueError(f"no run here has {CHANNELS_FILE}; train with probe.per_channel=true")
    return pd.concat(frames, ignore_index=True)


def channel_shift(runs: pd.DataFrame, out: str | Path) -> list[Path]:
    """The distribution over channels of each BN layer's shift after training, one panel per setting."""
    records = channel_records(runs)
    data = labelled(records[records["stage"] == "final"], runs)
    data = data.assign(setting=setting_label(data))
    with sns.axes_style("whitegrid"):
        grid = sns.catplot(data=data, x="layer", y="shift", col="setting", col_wrap=min(3, data["setting"].nunique()),
                           kind="box", fliersize=1.5, height=3.0, aspect=1.4, sharey=False, color="tab:blue")
    log_scale_if_wide(grid.axes.flat, data["shift"])
    grid.set_axis_labels("BN layer index", f"per channel: {SHIFT_LABEL}")
    grid.set_titles(col_template="{col_name}", size=8)
    with_title(grid, caption("channel-shift", runs, "the shift of each BN channel after training (box: quartiles "
                                                    "over channels and seeds)"))
    plotted = data[["run_dir", "seed", *SETTING, "layer", "name", "channel", "shift", "moving_var", "real_var"]]
    return save_figure(grid.figure, plotted, out, "channel_shift")
