"""The shared look of the figures: who is who in a plot (labels per run), seaborn grids, axes, colours, saving.

Figures facet like the paper's Figure 4: columns are position x dataset (``Dropout-(a) before BN |
cifar10``), rows are networks, one line (or bar) per dropout setting (``Bernoulli q = 0.5``, ``no dropout``).
Other settings that vary among the runs of one network and dataset (a widen factor, the learning rate, the
experiment) join the network's name; settings that only follow the network (each its own recipe) do not.
The rates of one dropout kind are shades of one sequential palette, darker for larger rates, and no dropout is
grey. Where a setting has several seeds, bands and error bars are the range over them (min to max), which keeps
to the values' own bounds (a shift statistic >= 1 never shows a band below 1).

A figure is drawn without a title: its caption is written beside it (``stem.txt``), for a paper's own caption;
:func:`drawn_titles` draws it above the figure instead (``varshift-analysis --title``).
"""

from __future__ import annotations

import contextlib
import textwrap
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from varshift.analysis.collect import distinguishing_settings  # noqa: E402
from varshift.analysis.labels import (  # noqa: E402
    NO_DROPOUT,
    POSITION_LABELS,
    column_label,
    dropout_label,
    has_dropout,
    shown_text,
    sort_settings,
    value_text,
)
from varshift.io import atomic_write, atomic_write_text  # noqa: E402

FORMATS = ("png", "pdf")
# the settings the labels dropout and panel show; the others that vary among the runs of one network and dataset
# join the network's name
DROPOUT_COLUMNS = ("dropout.position", "dropout.kind", "dropout.rate", "dropout.channelwise")
LABEL_COLUMNS = ["run_dir", "dropout", "panel", "network"]
FACETS = {"row": "network", "col": "panel", "height": 3.0, "aspect": 1.3,
          "facet_kws": {"sharex": False, "sharey": True}}
WIDE_RANGE = 30.0  # values whose max / min exceeds this are drawn on a log scale
# a sequential palette per kind of noise (element-wise, channel-wise): its shades order the rates
SEQUENTIAL_PALETTES = {("bernoulli", False): "Blues", ("gaussian", False): "Greens", ("uniform", False): "Oranges",
                       ("bernoulli", True): "Purples", ("gaussian", True): "YlGn", ("uniform", True): "Reds"}
NO_DROPOUT_COLOUR = (0.45, 0.45, 0.45)  # a grey that black error bars show on
ERROR_BARS = {"err_kws": {"color": "black", "linewidth": 1.2}, "capsize": 0.15}  # bar plots' error bars
TITLES = {"draw": False}  # whether captions are drawn as titles (drawn_titles)
TITLE_SIZE, CHARACTERS_PER_INCH = 10, 13  # a drawn title's font size, and its characters per inch of a line


def run_labels(runs: pd.DataFrame) -> pd.DataFrame:
    """Per run: ``run_dir`` and its labels ``dropout``, ``panel`` and ``network``, in the paper's order.

    A run without dropout (position ``none``) is the reference in every panel of its network and dataset,
    as the 0.0 curve is in each of the paper's panels: it gets one row per such panel (or its own panel).
    """
    extras = distinguishing_settings(runs, ["dataset.name", "model.name"], ignore=DROPOUT_COLUMNS)
    labels = runs.assign(
        dropout=runs.apply(dropout_label, axis=1),
        network=runs.apply(lambda run: ", ".join(
            [run["model.name"], *(f"{column_label(c, runs, short=True)} = {shown_text(c, value_text(c, run[c]))}"
                                  for c in extras)]), axis=1))
    baseline = labels["dropout.position"] == "none"
    panels = labels.loc[~baseline, ["network", "dataset.name", "dropout.position"]].drop_duplicates()
    spread = labels[baseline].drop(columns="dropout.position").merge(panels, on=["network", "dataset.name"],
                                                                     how="left")
    spread["dropout.position"] = spread["dropout.position"].fillna("none")
    labels = pd.concat([labels[~baseline], spread], ignore_index=True)
    labels = sort_settings(labels, ["dropout.position", "dataset.name", "model.name", *extras, "dropout.kind",
                                    "dropout.rate"])
    panel = labels["dropout.position"].map(lambda p: POSITION_LABELS.get(p, p)) + " | " + labels["dataset.name"]
    return labels.assign(panel=panel)[LABEL_COLUMNS]


def labelled(records: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """``records`` (of ``runs``, or ``runs`` themselves) with their runs' labels, in the labels' order."""
    return run_labels(runs).merge(records, on="run_dir", how="inner")


def dropout_order(data: pd.DataFrame) -> list[str]:
    """The ``dropout`` labels of ``data`` for a legend: ``no dropout`` first, then in the order of the data."""
    return sorted(data["dropout"].drop_duplicates(), key=lambda label: label != NO_DROPOUT)


def dropout_palette(runs: pd.DataFrame) -> dict[str, tuple]:
    """A colour per dropout label of ``runs``: grey for no dropout, and for each kind of noise the shades of its
    :data:`SEQUENTIAL_PALETTES` entry, light to dark as the rate grows (the lightest shades are left out)."""
    colours = {NO_DROPOUT: NO_DROPOUT_COLOUR}
    with_dropout = runs[runs.apply(has_dropout, axis=1)]
    channelwise = with_dropout.get("dropout.channelwise", pd.Series(False, index=with_dropout.index))
    families = with_dropout.assign(channelwise=channelwise.fillna(False).astype(bool))
    for (kind, is_channelwise), family in families.groupby(["dropout.kind", "channelwise"], sort=False):
        rates = sorted(set(family["dropout.rate"]))
        shades = sns.color_palette(SEQUENTIAL_PALETTES.get((kind, is_channelwise), "Greys"), len(rates) + 2)[2:]
        by_rate = dict(zip(rates, shades, strict=True))
        for _, run in family.iterrows():
            colours[dropout_label(run)] = by_rate[run["dropout.rate"]]
    return colours


def seed_spread(data: pd.DataFrame, groups: Sequence[str], bars: bool = False) -> tuple[tuple | None, str]:
    """seaborn's ``errorbar`` and a caption note: the range over the seeds (min to max) where a plotted group has
    several runs. A range keeps to the values' bounds, which mean ± std does not (a shift >= 1 would dip below 1).
    ``bars``: the figure draws bars (with error bars), not lines (with bands)."""
    counts = data.groupby(list(groups))["run_dir"].nunique()
    if counts.max() > 1:
        n = f"{counts.min()}" if counts.min() == counts.max() else f"{counts.min()}-{counts.max()}"
        mark, spread = ("Bars", "error bars") if bars else ("Lines", "bands")
        return ("pi", 100), f" {mark}: the mean over seeds; {spread}: their range (min to max, n = {n})."
    return None, ""


def integer_ticks(axes: Iterable[Axes], axis: str = "x") -> None:
    for ax in axes:
        getattr(ax, f"{axis}axis").set_major_locator(MaxNLocator(integer=True))


def log_scale_if_wide(axes: Iterable[Axes], values: pd.Series, axis: str = "y") -> None:
    """A log scale on ``axis`` when the (positive) values span more than :data:`WIDE_RANGE`."""
    positive = values[np.isfinite(values) & (values > 0)]
    if len(positive) and positive.max() / positive.min() > WIDE_RANGE:
        for ax in axes:
            getattr(ax, f"set_{axis}scale")("log")


def hide_empty_facets(grid: sns.FacetGrid, data: pd.DataFrame) -> sns.FacetGrid:
    """Hide the facets of a :data:`FACETS` grid that have no data. The first shown facet of each row gets the
    y tick labels (a shared y axis shows them in the first column only), the last of each column the x label
    (shown in the bottom row only)."""
    present = set(zip(data[FACETS["row"]], data[FACETS["col"]], strict=True))
    for (row_name, col_name), ax in grid.axes_dict.items():
        ax.set_visible((row_name, col_name) in present)
    for row in grid.axes:
        visible = [ax for ax in row if ax.get_visible()]
        if visible:
            visible[0].tick_params(labelleft=True)
    for column in grid.axes.T:
        visible = [ax for ax in column if ax.get_visible()]
        if visible:
            visible[-1].set_xlabel(column[-1].get_xlabel())
    return grid


def finish(grid: sns.FacetGrid, x: str, y: str, title: str) -> sns.FacetGrid:
    grid.set_axis_labels(x, y)
    both = "{row_name}\n{col_name}" if grid.row_names and grid.col_names else None
    grid.set_titles(template=both, row_template="{row_name}", col_template="{col_name}", size=9)
    return with_title(grid, title)


@contextlib.contextmanager
def drawn_titles(draw: bool = True) -> Iterator[None]:
    """Within the block, figures get their caption drawn above them as a title (as well as written beside them)."""
    before = TITLES["draw"]
    TITLES["draw"] = draw
    try:
        yield
    finally:
        TITLES["draw"] = before


def set_caption(figure: Figure, caption: str) -> None:
    """``caption`` is what :func:`save_figure` writes beside ``figure``; a title too within :func:`drawn_titles`."""
    figure.varshift_caption = caption
    if TITLES["draw"]:  # above the figure's top edge, which saving with bbox_inches="tight" extends to it
        width = max(40, int(figure.get_figwidth() * CHARACTERS_PER_INCH))
        figure.suptitle(textwrap.fill(caption, width), y=1.0, va="bottom", fontsize=TITLE_SIZE)


def figure_caption(figure: Figure) -> str | None:
    return getattr(figure, "varshift_caption", None)


def with_title(grid: sns.FacetGrid, title: str) -> sns.FacetGrid:
    """``title`` as the grid's caption (:func:`set_caption`), its facets (and their titles) laid out first."""
    grid.tight_layout()
    set_caption(grid.figure, title)
    return grid


def write_image(figure: Figure, path: Path) -> Path:
    """``figure`` written atomically to ``path``, in the format its suffix names."""
    return atomic_write(path, lambda tmp: figure.savefig(tmp, format=path.suffix[1:], dpi=150, bbox_inches="tight"))


def save_figure(figure: Figure, data: pd.DataFrame, out: str | Path, stem: str) -> list[Path]:
    """``stem.png``, ``stem.pdf``, ``stem.csv`` (the plotted data) and ``stem.txt`` (the caption, where the figure
    has one) in ``out``; closes the figure."""
    paths = [write_image(figure, Path(out) / f"{stem}.{fmt}") for fmt in FORMATS]
    plt.close(figure)
    paths.append(atomic_write_text(Path(out) / f"{stem}.csv", data.to_csv(index=False)))
    if figure_caption(figure):
        paths.append(atomic_write_text(Path(out) / f"{stem}.txt", figure_caption(figure) + "\n"))
    return paths
