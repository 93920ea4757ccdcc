"""What a reviewer asks of a table over seeds: mean ± sd, a 95 % interval of the mean, and the paired difference to
the no-dropout baseline trained on the same seeds, with its 95 % interval.

Per setting of a table (its runs differ only in their seed), :func:`seed_statistics` gives ``n``, ``mean``, ``sd``
(ddof=1) and ``ci_low``/``ci_high``, the mean's 95 % interval by Student's t with ``n - 1`` degrees of freedom. The
baseline of a setting is the runs of the same setting but without dropout noise (kind none, or rate 0: the same
computation, :mod:`varshift.training.reuse`); the difference is taken seed by seed over the seeds both have (``pairs``),
with its mean ``difference`` and its 95 % interval ``difference_low``/``difference_high``. ``within_noise`` is true when
that interval holds 0: the setting's difference to the baseline is inside seed noise. One run, or one pair, has no
interval (NaN).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from varshift.analysis.markdown import markdown_table
from varshift.io import atomic_write_text

CONFIDENCE = 0.95
DROPOUT_KEYS = ("dropout.kind", "dropout.rate", "dropout.position", "dropout.channelwise")
COLUMNS = ["n", "mean", "sd", "ci_low", "ci_high", "pairs", "difference", "difference_low", "difference_high",
           "within_noise"]


def interval(values: np.ndarray) -> tuple[float, float, float, float]:
    """Mean, sd (ddof=1) and the mean's 95 % t-interval of ``values`` (NaN spread and interval for one value)."""
    mean = float(np.mean(values))
    if len(values) < 2:
        return mean, np.nan, np.nan, np.nan
    sd = float(np.std(values, ddof=1))
    from scipy import stats  # a second to import: only seed statistics need it, not varshift-analysis --help

    half = stats.t.ppf(0.5 + CONFIDENCE / 2, len(values) - 1) * sd / np.sqrt(len(values))
    return mean, sd, mean - half, mean + half


def is_baseline(runs: pd.DataFrame) -> pd.Series:
    """The runs without dropout noise: kind none or rate 0."""
    return (runs["dropout.kind"] == "none") | (runs["dropout.rate"].astype(float) == 0.0)


def seed_statistics(runs: pd.DataFrame, keys: Sequence[str], value: str) -> pd.DataFrame:
    """One row per setting of ``keys`` (the table's rows and columns): :data:`COLUMNS` of ``value`` over seeds.

    The baseline of a setting has the same values of ``keys`` except the dropout's, and the same value of every other
    column named in ``keys``; runs without a ``dropout.*`` column among ``keys`` have no baseline (NaN)."""
    keys = list(keys)
    data = runs.dropna(subset=[value])
    matched = [key for key in keys if key not in DROPOUT_KEYS]
    has_dropout = any(key in DROPOUT_KEYS for key in keys) and "dropout.kind" in data and "dropout.rate" in data
    baselines = data[is_baseline(data)] if has_dropout else data.iloc[0:0]
    rows = []
    for setting, group in data.groupby(keys, dropna=False, sort=False):
        mean, sd, low, high = interval(group[value].to_numpy(dtype=float))
        row = dict(zip(keys, setting if isinstance(setting, tuple) else (setting,), strict=True))
        row.update(n=len(group), mean=mean, sd=sd, ci_low=low, ci_high=high)
        base = baselines
        for key in matched:
            base = base[base[key] == row[key]]
        paired = group.merge(base[["seed", value]], on="seed", suffixes=("", "_baseline"))
        if has_dropout and len(paired):
            difference, _, d_low, d_high = interval((paired[value] - paired[f"{value}_baseline"]).to_numpy(float))
            row.update(pairs=len(paired), difference=difference, difference_low=d_low, difference_high=d_high,
                       within_noise=bool(d_low <= 0.0 <= d_high) if np.isfinite(d_low) else np.nan)
        else:
            row.update(pairs=0, difference=np.nan, difference_low=np.nan, difference_high=np.nan, within_noise=np.nan)
        rows.append(row)
    return pd.DataFrame(rows, columns=[*keys, *COLUMNS])


def statistics_markdown(table: pd.DataFrame, keys: Sequence[str], title: str, decimals: int) -> str:
    """The statistics as Markdown: a line per setting, ``mean ± sd [low, high]`` and the paired difference."""
    def number(value) -> str:
        return "–" if pd.isna(value) else f"{value:.{decimals}f}"

    lines = []
    for row in table.to_dict("records"):
        spread = f" ± {number(row['sd'])} [{number(row['ci_low'])}, {number(row['ci_high'])}]" if row["n"] > 1 else ""
        if row["pairs"]:
            noise = {True: "inside seed noise", False: "outside seed noise"}.get(row["within_noise"], "one pair")
            bracket = (f" [{number(row['difference_low'])}, {number(row['difference_high'])}]"
                       if row["pairs"] > 1 else "")
            difference = f"{number(row['difference'])}{bracket} ({noise}, {row['pairs']} pairs)"
        else:
            difference = "–"
        lines.append({**{key: row[key] for key in keys}, "n": row["n"],
                      "mean ± sd [95 % interval]": f"{number(row['mean'])}{spread}",
                      "paired difference to no dropout [95 % interval]": difference})
    note = ("Over seeds: mean ± sample sd [95 % t-interval of the mean]; the difference to the no-dropout runs of the "
            "same seeds, seed by seed, with its 95 % t-interval: inside seed noise when the interval holds 0.")
    return f"**{title}**\n\n{markdown_table(pd.DataFrame(lines))}\n\n{note}\n"


def write_statistics(runs: pd.DataFrame, keys: Sequence[str], value: str, out: str | Path, stem: str, title: str,
                     decimals: int = 2) -> list[Path]:
    """``<stem>_stats.md`` and ``<stem>_stats.csv`` in ``out``: :func:`seed_statistics` of a table's runs."""
    table = seed_statistics(runs, keys, value)
    out = Path(out)
    return [atomic_write_text(out / f"{stem}_stats.md", statistics_markdown(table, keys, title, decimals)),
            atomic_write_text(out / f"{stem}_stats.csv", table.to_csv(index=False))]
