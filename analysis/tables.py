"""Tables of mean ± std over seeds, in Markdown and LaTeX, with the paper's value beside each cell.

A cell reads ``4.91 ± 0.05 (paper 4.91)``: the mean and the sample standard deviation (ddof=1) of the
runs of one setting, which differ only in their seed. A cell of a single run has no spread and reads
``4.91 (n=1; paper 4.91)``; a cell without runs reads ``–``. Runs whose settings (see
:data:`analysis.collect.SETTING_COLUMNS`) differ may not share a cell: :func:`table` refuses to average
them. The paper tables (Table 1, 3, 4, 6) are the functions :func:`table1`, :func:`table3`, ...
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis.collect import collect_records, setting_columns, varying_settings
from analysis.paper import paper_reference
from varshift.data import DATASET_NAMES
from varshift.io import atomic_write_text
from varshift.models import MODEL_NAMES, POSITIONS
from varshift.theory import KINDS

LABELS = {"experiment_name": "experiment", "scale.name": "scale", "dataset.name": "dataset",
          "model.name": "model", "dropout.kind": "kind", "dropout.rate": "rate",
          "dropout.channelwise": "channel-wise", "dropout.position": "position"}
METRIC_LABELS = {"test_error": "error", "test_error_recalibrated": "error, BN recalibrated",
                 "train_acc": "train mode", "train_eval_acc": "eval mode", "cos2": "cos²θ",
                 "d_cos2": "d·cos²θ"}
KNOWN_ORDER = {"dataset.name": DATASET_NAMES, "model.name": MODEL_NAMES, "dropout.position": POSITIONS,
               "dropout.kind": ("none", *(k for k in KINDS if k != "none")), "metric": tuple(METRIC_LABELS)}
LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "±": r"$\pm$", "–": "--", "²": r"$^2$", "θ": r"$\theta$", "·": r"$\cdot$"}


def column_label(column: str) -> str:
    return LABELS.get(column, column.removeprefix("model.kwargs."))


def value_text(column: str, value) -> str:
    if column == "metric":
        return METRIC_LABELS.get(value, str(value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def sort_settings(df: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """``df`` sorted by ``columns``, known names (datasets, models, positions, kinds) in the paper's order."""
    def rank(series: pd.Series) -> pd.Series:
        order = KNOWN_ORDER.get(series.name)
        if order is None:
            return series.map(str) if series.map(type).nunique() > 1 else series
        others = sorted(set(series) - set(order), key=str)
        return series.map({name: i for i, name in enumerate([*order, *others])})

    return df.sort_values(list(columns), key=rank, kind="stable") if columns else df


def summarize(df: pd.DataFrame, keys: Sequence[str], value: str) -> pd.DataFrame:
    """One row per setting of ``keys``: mean, sample std (ddof=1; NaN for one run) and count of ``value``."""
    grouped = df.dropna(subset=[value]).groupby(list(keys), dropna=False, sort=False)[value]
    return grouped.agg(mean="mean", std="std", n="count").reset_index()


def melt_metrics(df: pd.DataFrame, metrics: Sequence[str], value: str = "value") -> pd.DataFrame:
    """Long form of the ``metrics`` columns ``df`` has: one row per run and metric (``metric``, ``value``)."""
    present = [m for m in metrics if m in df]
    if not present:
        raise ValueError(f"the runs have none of the columns {', '.join(metrics)}")
    ids = [c for c in df if c not in metrics]
    return df.melt(id_vars=ids, value_vars=present, var_name="metric", value_name=value)


def format_cell(stats: pd.Series | None, decimals: int, reference_label: str) -> str:
    if stats is None:
        return "–"
    text = f"{stats['mean']:.{decimals}f}"
    if stats["n"] > 1:
        text += f" ± {stats['std']:.{decimals}f}"
    notes = ["n=1"] if stats["n"] == 1 else []
    if "reference" in stats and not pd.isna(stats["reference"]):
        notes.append(f"{reference_label} {stats['reference']:.{decimals}f}")
    return text + (f" ({'; '.join(notes)})" if notes else "")


def latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIALS.get(ch, ch) for ch in text)


@dataclass(frozen=True)
class Table:
    """A table: its tidy statistics (one row per cell) and the rendered Markdown and LaTeX."""

    stats: pd.DataFrame
    markdown: str
    latex: str


def check_columns(df: pd.DataFrame, rows: Sequence[str], columns: Sequence[str], value: str) -> None:
    if not rows:
        raise ValueError("a table needs at least one row column")
    for column in [*rows, *columns, value]:
        if column not in df:
            raise ValueError(f"column {column!r} is not in the runs; "
                             f"allowed: {', '.join(map(str, df.columns))}")
    repeated = set(rows) & set(columns)
    if repeated or len(set(rows)) < len(rows) or len(set(columns)) < len(columns):
        raise ValueError(f"rows {list(rows)} and columns {list(columns)} must name each column once")
    if not pd.api.types.is_numeric_dtype(df[value]):
        raise ValueError(f"value column {value!r} is not numeric (dtype {df[value].dtype})")


def check_unmixed(df: pd.DataFrame, keys: list[str], others: list[str]) -> None:
    """Refuse to average runs of different settings into one cell."""
    if not others:
        return
    counts = df.groupby(keys, dropna=False)[others].nunique(dropna=False).max()
    mixed = [c for c in others if counts[c] > 1]
    if mixed:
        values = "; ".join(f"{c}: {', '.join(map(str, sorted(set(df[c]), key=str)))}" for c in mixed)
        raise ValueError(f"cells of this table would average runs of different settings ({values}); "
                         f"add {', '.join(mixed)} to the rows or columns, or select the runs first")


def render(stats: pd.DataFrame, rows: list[str], columns: list[str], value: str, decimals: int,
           reference_label: str) -> pd.DataFrame:
    """The wide table of cell texts: a line per setting of ``rows``, a column per setting of ``columns``."""
    def keys_of(names: list[str]) -> list[tuple]:
        ordered = sort_settings(stats[names], names)
        return list(dict.fromkeys(ordered.itertuples(index=False, name=None))) if names else [()]

    cells = {(tuple(s[c] for c in rows), tuple(s[c] for c in columns)): s for _, s in stats.iterrows()}
    row_keys, column_keys = keys_of(rows), keys_of(columns)
    headers = [column_label(c) for c in rows]
    for key in column_keys:
        parts = [value_text(c, v) if c == "metric" else f"{column_label(c)}={value_text(c, v)}"
                 for c, v in zip(columns, key, strict=True)]
        headers.append(", ".join(parts) or value)
    lines = [[value_text(c, v) for c, v in zip(rows, row_key, strict=True)]
             + [format_cell(cells.get((row_key, key)), decimals, reference_label) for key in column_keys]
             for row_key in row_keys]
    return pd.DataFrame(lines, columns=headers)


def table(df: pd.DataFrame, rows: Sequence[str], columns: Sequence[str], value: str,
          reference: pd.DataFrame | None = None, reference_label: str = "paper", decimals: int = 2,
          title: str | None = None) -> Table:
    """Mean ± std over seeds of ``value``, in Markdown and LaTeX.

    One line per setting of ``rows``, one column per setting of ``columns`` (none: a single column); a cell
    of one run shows ``(n=1)`` instead of a spread. ``reference`` (e.g.
    :func:`analysis.paper.paper_reference`) has a ``reference`` column and key columns; it is matched on the
    key columns the table has and shown beside each cell as ``(paper 4.91)``.
    """
    rows, columns = list(rows), list(columns)
    check_columns(df, rows, columns, value)
    if decimals < 0:
        raise ValueError(f"decimals must be >= 0, got {decimals}")
    keys = rows + columns
    others = [c for c in setting_columns(df) if c not in keys]
    check_unmixed(df, keys, others)
    stats = summarize(df, keys + others, value)
    if stats.empty:
        raise ValueError(f"no run has a value of {value!r}")
    if reference is not None:
        if "reference" not in reference:
            raise ValueError("reference has no 'reference' column; "
                             f"its columns: {', '.join(reference.columns)}")
        on = [c for c in reference if c != "reference" and c in stats]
        stats = stats.merge(reference[[*on, "reference"]], on=on, how="left", validate="many_to_one")
    stats = sort_settings(stats, keys).reset_index(drop=True)
    counts = sorted(set(stats["n"]))
    n_text = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    note = (f"Mean ± standard deviation (ddof=1) over seeds of {value}; n = {n_text} runs per cell; "
            "(n=1): a single run, no spread; "
            + (f"({reference_label} x): the {reference_label} value; " if reference is not None else "")
            + "–: no runs.")
    wide = render(stats, rows, columns, value, decimals, reference_label)
    heading = f"**{title}**\n\n" if title else ""
    markdown = f"{heading}{wide.to_markdown(index=False, disable_numparse=True)}\n\n{note}\n"
    escaped = wide.map(latex_escape).rename(columns=latex_escape)
    latex = escaped.to_latex(index=False, escape=False,
                             caption=latex_escape(f"{title}. {note}" if title else note))
    return Table(stats=stats, markdown=markdown, latex=latex)


def write_table(result: Table, out: str | Path, stem: str) -> list[Path]:
    """``stem.md``, ``stem.tex`` and ``stem.csv`` (the tidy statistics) in ``out``."""
    out = Path(out)
    texts = {"md": result.markdown, "tex": result.latex, "csv": result.stats.to_csv(index=False)}
    return [atomic_write_text(out / f"{stem}.{suffix}", text) for suffix, text in texts.items()]


def artifact_table(df: pd.DataFrame, rows: Sequence[str], columns: Sequence[str], value: str, out: str | Path,
                   stem: str, title: str, reference: pd.DataFrame | None = None, decimals: int = 2,
                   reference_label: str = "paper") -> list[Path]:
    """A paper table: settings that vary among the runs beyond ``rows`` and ``columns`` become more rows."""
    extras = varying_settings(df, exclude=[*rows, *columns])
    result = table(df, [*rows, *extras], columns, value, reference, reference_label, decimals, title)
    return write_table(result, out, stem)


def table3(runs: pd.DataFrame, out: str | Path) -> list[Path]:
    """Table 3: test error before and after BN recalibration, per dataset x model x position."""
    metrics = ["test_error", "test_error_recalibrated"]
    return artifact_table(melt_metrics(runs, metrics, "error"), ["dataset.name", "model.name"],
                          ["dropout.position", "metric"], "error", out, "table3",
                          "Table 3: test error (%) before and after BN recalibration",
                          paper_reference("table3", metrics))


def table4(runs: pd.DataFrame, out: str | Path) -> list[Path]:
    """Table 4: test error per drop ratio of one dropout after all BN layers (position head)."""
    return artifact_table(runs, ["dataset.name", "model.name"], ["dropout.rate"], "test_error", out, "table4",
                          "Table 4: test error (%) with dropout after all BN layers",
                          paper_reference("table4", "test_error"))


def table6(runs: pd.DataFrame, out: str | Path) -> list[Path]:
    """Table 6: test error per beta of uniform noise (Uout) at Dropout-(b)."""
    return artifact_table(runs, ["dataset.name", "model.name"], ["dropout.rate"], "test_error", out, "table6",
                          "Table 6: test error (%) with uniform dropout (Uout), rate = beta",
                          paper_reference("table6", "test_error"))


def table1(runs: pd.DataFrame, out: str | Path) -> list[Path]:
    """Table 1: mean over conv layers of cos^2(theta) and d cos^2(theta), per dataset x model."""
    layers = collect_records(runs, "alignment")
    per_run = layers.groupby("run_dir", sort=False)[["cos2", "d_cos2"]].mean()
    runs = runs.drop(columns=["cos2", "d_cos2"], errors="ignore").join(per_run, on="run_dir")
    metrics = ["cos2", "d_cos2"]
    value = "the mean over conv layers"
    return artifact_table(melt_metrics(runs, metrics, value), ["model.name"], ["dataset.name", "metric"],
                          value, out, "table1", "Table 1: mean over conv layers of cos²θ and d·cos²θ",
                          paper_reference("table1", metrics), decimals=5)
