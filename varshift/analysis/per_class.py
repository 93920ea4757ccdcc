"""Test accuracy per class, of the final model and after BN recalibration (``varshift-analysis per-class``).

The cost of the variance shift is not spread evenly over the classes: the table shows, per setting and class,
the accuracy of the final model and after BN recalibration, mean ± std over seeds, from the per-class lists of
``summary.json`` (``test_acc_per_class``, ``test_acc_recalibrated_per_class``; index = label).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from varshift.analysis.collect import distinguishing_settings
from varshift.analysis.labels import caption
from varshift.analysis.tables import table, write_table

PER_CLASS = ("test_acc_per_class", "test_acc_recalibrated_per_class")
CLASS, ACCURACY = "class", "test accuracy (%)"


def class_accuracy(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run, class and per-class list of ``summary.json`` (``metric``), its accuracy in ``ACCURACY``."""
    if PER_CLASS[0] not in runs or runs[PER_CLASS[0]].isna().any():
        lacking = runs["run_dir"][runs[PER_CLASS[0]].isna()] if PER_CLASS[0] in runs else runs["run_dir"]
        raise ValueError(f"summary.json of {len(lacking)} runs (e.g. {lacking.iloc[0]}) has no {PER_CLASS[0]} "
                         "(written by an older varshift); rerun them for the accuracy per class")
    present = [column for column in PER_CLASS if column in runs]
    long = runs.melt(id_vars=[c for c in runs if c not in PER_CLASS], value_vars=present, var_name="metric",
                     value_name=ACCURACY).dropna(subset=[ACCURACY])
    long[CLASS] = long[ACCURACY].map(lambda values: list(range(len(values))))
    return long.explode([CLASS, ACCURACY]).astype({CLASS: int, ACCURACY: float}).reset_index(drop=True)


def per_class(runs: pd.DataFrame, out: str | Path) -> list[Path]:
    """``per_class`` .md, .tex and .csv: a line per setting and class, a column per model (final, recalibrated)."""
    long = class_accuracy(runs)
    settings = distinguishing_settings(long, [CLASS, "metric"])
    result = table(long, [*settings, CLASS], ["metric"], ACCURACY,
                   title=caption("per-class", runs, "test accuracy (%) of each class, of the final model and after "
                                                    "BN recalibration"))
    return write_table(result, out, "per_class")
