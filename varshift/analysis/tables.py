"""Tables of mean ± std over seeds, in Markdown and LaTeX, with the paper's value beside each cell.

A cell reads ``4.91 ± 0.05 (paper 4.91)``: the mean and the sample standard deviation (ddof=1) of the
runs of one setting, which differ only in their seed. A cell of a single run has no spread and reads
``4.91 (n=1; paper 4.91)``; a paper value that only bounds the paper's number from below reads
``(paper ≥1.42)``; a cell without runs reads ``–``. Runs of different settings (any config key but the seed
and the neutral keys, see :mod:`varshift.analysis.collect`) never share a cell: :func:`table` refuses to average
them, and :func:`artifact_table` gives them rows of their own. The paper tables (Table 1, 3, 4, 6) are the
functions :func:`table1`, :func:`table3`, ...; test errors are the final epoch's unless ``epoch="best"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from varshift.analysis.collect import collect_records, distinguishing_settings
from varshift.analysis.labels import (
    MISSING,
    caption,
    column_label,
    is_missing,
    self_describing,
    shown_text,
    sort_settings,
    value_text,
)
from varshift.analysis.markdown import markdown_table
from varshift.analysis.paper import paper_reference
from varshift.analysis.stats import write_statistics
from varshift.io import atomic_write_text
from varshift.vocabulary import EPOCHS

LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "±": r"$\pm$", "–": "--", "²": r"$^2$", "θ": r"$\theta$", "·": r"$\cdot$", "≥": r"$\geq$",
                  "β": r"$\beta$"}
# which epoch's test error a table reports: the paper does not say (bearpaw's code prints the best)


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


def format_cell(stats: dict | None, decimals: int, reference_label: str) -> str:
    if stats is None:
        return MISSING
    text = f"{stats['mean']:.{decimals}f}"
    if stats["n"] > 1:
        text += f" ± {stats['std']:.{decimals}f}"
    notes = ["n=1"] if stats["n"] == 1 else []
    if not is_missing(stats.get("reference")):
        bound = "≥" if not is_missing(stats.get("lower_bound")) and stats["lower_bound"] else ""
        notes.append(f"{reference_label} {bound}{stats['reference']:.{decimals}f}")
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


def check_unmixed(df: pd.DataFrame, keys: list[str]) -> None:
    """Refuse to average runs of different settings into one cell."""
    mixed = distinguishing_settings(df, keys)
    if mixed:
        values = "; ".join(f"{c}: {', '.join(sorted({value_text(c, v) for v in df[c]}))}" for c in mixed)
        raise ValueError(f"cells of this table would average runs of different settings ({values}); "
                         f"add {', '.join(mixed)} to the rows or columns, or select the runs first")


def render(stats: pd.DataFrame, rows: list[str], columns: list[str], value: str, decimals: int,
           reference_label: str, runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """The wide table of cell texts: a line per setting of ``rows``, a column per setting of ``columns``, in the
    paper's words (``Dropout-(a) before BN``, ``q = 0.5``; the rate is named for the dropout kinds of ``runs``).

    Settings are matched by their printed values, so a missing value (a key some runs do not have) is one
    setting ``–`` and not a NaN that equals nothing.
    """
    def texts(record: dict, names: list[str]) -> tuple:
        return tuple(value_text(c, record[c]) for c in names)

    def keys_of(names: list[str]) -> list[tuple]:
        return list(dict.fromkeys(texts(r, names) for r in sort_settings(stats, names).to_dict("records")))

    records = stats.to_dict("records")
    cells = {(texts(r, rows), texts(r, columns)): r for r in records}
    if len(cells) < len(records):
        raise ValueError("two settings of this table print the same; give their values more digits")
    headers = [column_label(c, runs) for c in rows]
    for key in keys_of(columns):
        parts = [shown_text(c, text) if self_describing(c) else f"{column_label(c, runs, short=True)} = "
                 f"{shown_text(c, text)}" for c, text in zip(columns, key, strict=True)]
        headers.append(", ".join(parts) or value)
    lines = [[*(shown_text(c, text) for c, text in zip(rows, row_key, strict=True)),
              *(format_cell(cells.get((row_key, key)), decimals, reference_label) for key in keys_of(columns))]
             for row_key in keys_of(rows)]
    return pd.DataFrame(lines, columns=headers)


def table(df: pd.DataFrame, rows: Sequence[str], columns: Sequence[str], value: str,
          reference: pd.DataFrame | None = None, reference_label: str = "paper", decimals: int = 2,
          title: str | None = None) -> Table:
    """Mean ± std over seeds of ``value``, in Markdown and LaTeX.

    ``df`` holds runs from :func:`varshift.analysis.collect` (or records from :func:`varshift.analysis.collect_records`,
    or a long form of either from :func:`melt_metrics`). One line per setting of ``rows``, one column per
    setting of ``columns`` (none: a single column); a cell of one run shows ``(n=1)`` instead of a
    spread. ``reference`` (e.g. :func:`varshift.analysis.paper.paper_reference`) has a ``reference`` column, maybe a
    boolean ``lower_bound``, and key columns; it is matched on the key columns the runs have and shown
    beside each cell as ``(paper 4.91)``.
    """
    rows, columns = list(rows), list(columns)
    check_columns(df, rows, columns, value)
    if decimals < 0:
        raise ValueError(f"decimals must be >= 0, got {decimals}")
    keys = rows + columns
    check_unmixed(df, keys)
    on = [] if reference is None else [c for c in reference if c not in ("reference", "lower_bound") and c in df]
    # the reference's key columns are constant within each cell (checked above): grouping on them splits none
    stats = summarize(df, keys + [c for c in on if c not in keys], value)
    if stats.empty:
        raise ValueError(f"no run has a value of {value!r}")
    if reference is not None:
        if "reference" not in reference or not on:
            raise ValueError("reference needs a 'reference' column and key columns the runs have; "
                             f"its columns: {', '.join(reference.columns)}")
        matched = [*on, "reference", *(["lower_bound"] if "lower_bound" in reference else [])]
        stats = stats.merge(reference[matched], on=on, how="left", validate="many_to_one")
    stats = sort_settings(stats, keys).reset_index(drop=True)
    counts = sorted(set(stats["n"]))
    n_text = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    referenced = "reference" in stats and stats["reference"].notna().any()
    bounded = "lower_bound" in stats and stats["lower_bound"].eq(True).any()
    note = (f"Mean ± standard deviation (ddof=1) over seeds of {shown_text('metric', value)}; n = {n_text} runs "
            "per cell; "
            "(n=1): a single run, no spread; "
            + (f"({reference_label} x): the {reference_label} value; " if referenced else "")
            + (f"({reference_label} ≥x): at least x (the paper's curve is clipped); " if bounded else "")
            + "–: no runs.")
    wide = render(stats, rows, columns, value, decimals, reference_label, df)
    heading = f"**{title}**\n\n" if title else ""
    markdown = f"{heading}{markdown_table(wide)}\n\n{note}\n"
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
    """A paper table: settings that the ``rows`` and ``columns`` leave apart become more rows."""
    extras = distinguishing_settings(df, [*rows, *columns])
    result = table(df, [*rows, *extras], columns, value, reference, reference_label, decimals, title)
    # and the statistics a reviewer asks for: 95 % intervals, the paired difference to no dropout
    return [*write_table(result, out, stem),
            *write_statistics(df, [*rows, *extras, *columns], value, out, stem, title, decimals)]


def with_test_error(runs: pd.DataFrame, epoch: str) -> tuple[pd.DataFrame, str]:
    """``runs`` with the test error of the ``final`` or the ``best`` epoch, and the column that holds it."""
    if epoch not in EPOCHS:
        raise ValueError(f"epoch {epoch!r} is not known; allowed: {', '.join(EPOCHS)}")
    if epoch == "final":
        return runs, "test_error"
    if "best_test_acc" not in runs or runs["best_test_acc"].isna().any():
        raise ValueError("some runs have no best_test_acc in their summary.json (written by older varshift); "
                         "report the final epoch")
    return runs.assign(best_test_error=100.0 - runs["best_test_acc"]), "best_test_error"


def require(runs: pd.DataFrame, artifact: str, column: str, allowed: str, what: str) -> None:
    """ValueError unless every run has ``column`` = ``allowed``: a paper table is about one kind of run."""
    others = sorted({value_text(column, v) for v in runs[column]} - {allowed})
    if others:
        raise ValueError(f"{artifact} is about {what} ({column}={allowed}), but runs here have {column} "
                         f"{', '.join(others)}; pass the runs of experiment {artifact} "
                         f"(conf/experiment/{artifact}.yaml)")


def table3(runs: pd.DataFrame, out: str | Path) -> list[Path]:
    """Table 3: test error before and after BN recalibration, per dataset x model x position."""
    metrics = ["test_error", "test_error_recalibrated"]
    return artifact_table(melt_metrics(runs, metrics, "error"), ["dataset.name", "model.name"],
                          ["dropout.position", "metric"], "error", out, "table3",
                          caption("table3", runs, "test error (%) of the final model before and after BN "
                                                  "recalibration"), paper_reference("table3", metrics))


def table4(runs: pd.DataFrame, out: str | Path, epoch: str = "final") -> list[Path]:
    """Table 4: test error per drop ratio of one dropout after all BN layers (position head)."""
    require(runs, "table4", "dropout.position", "head", "one dropout after all BN layers")
    runs, error = with_test_error(runs, epoch)
    return artifact_table(runs, ["dataset.name", "model.name"], ["dropout.rate"], error, out, "table4",
                          caption("table4", runs, f"test error (%) at the {EPOCHS[epoch]} with one dropout after "
                                                  "all BN layers, by its drop ratio q"),
                          paper_reference("table4", "test_error"))


def table5(runs: pd.DataFrame, out: str | Path) -> list[Path]:
    """Table 5: top-1 and top-5 test error of the final epoch per network, with and without one dropout after all
    BN layers (position head)."""
    require(runs, "table5", "dropout.position", "head", "one dropout after all BN layers")
    if "test_top5_error" not in runs:
        raise ValueError("table5 needs the top-5 error of runs of more than 5 classes; these runs have none")
    names = {"test_error": "top-1 error", "test_top5_error": "top-5 error"}  # the metric headers of the table
    reference = paper_reference("table5", list(names)).replace({"metric": names})
    crops = " or ".join(f"{size:g}x{size:g}" for size in sorted(set(runs["dataset.size"])))
    return artifact_table(melt_metrics(runs.rename(columns=names), list(names.values()), "error"),
                          ["dataset.name", "model.name"], ["dropout.rate", "metric"], "error", out, "table5",
                          caption("table5", runs, f"top-1 and top-5 test error (%) of the final epoch on {crops} "
                                                  "centre crops, with and without one dropout after all BN layers"),
                          reference)


def table6(runs: pd.DataFrame, out: str | Path, epoch: str = "final") -> list[Path]:
    """Table 6: test error per beta of uniform noise (Uout) at Dropout-(b)."""
    require(runs, "table6", "dropout.kind", "uniform", "uniform dropout (Uout)")
    require(runs, "table6", "dropout.position", "before_conv", "Dropout-(b)")
    runs, error = with_test_error(runs, epoch)
    return artifact_table(runs, ["dataset.name", "model.name"], ["dropout.rate"], error, out, "table6",
                          caption("table6", runs, f"test error (%) at the {EPOCHS[epoch]} with Uout (uniform noise "
                                                  "of width β) at Dropout-(b), before the conv"),
                          paper_reference("table6", "test_error"))


def table1(runs: pd.DataFrame, out: str | Path) -> list[Path]:
    """Table 1: mean over conv layers of cos^2(theta) and d cos^2(theta), per dataset x model."""
    layers = collect_records(runs, "alignment")
    per_run = layers.groupby("run_dir", sort=False)[["cos2", "d_cos2"]].mean()
    runs = runs.drop(columns=["cos2", "d_cos2"], errors="ignore").join(per_run, on="run_dir")
    metrics = ["cos2", "d_cos2"]
    value = "the mean over conv layers"
    return artifact_table(melt_metrics(runs, metrics, value), ["model.name"], ["dataset.name", "metric"],
                          value, out, "table1",
                          caption("table1", runs, "mean over conv layers of cos²θ and d·cos²θ"),
                          paper_reference("table1", metrics), decimals=5)
