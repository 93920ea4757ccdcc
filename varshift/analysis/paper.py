"""The paper's numbers as data (``paper_numbers.csv``, copied from the paper's tables and read off its figures).

One row per number, in long form: artifact (fig4, fig5, table1, table3, table4, table5, table6), dataset, model
(varshift's model names), position, kind, rate (drop ratio, or beta for uniform), metric (the name of the
run column it compares with: test_error, test_top5_error, test_error_recalibrated, mean_shift, train_acc,
train_eval_acc, cos2, d_cos2), value, and lower_bound. Figure 4 and Figure 5 numbers were read from the plotted
coordinates.
``lower_bound`` marks the Figure 4 curve means that only bound the paper's value from below:
PreResNet's curves were clipped at the top of the axis, and where a curve's maximum reaches that top
(3.0 for Dropout-(a), 1.2 for Dropout-(b), within the 0.01 of the extraction) its mean is cut too.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.resources import files

import pandas as pd

PAPER_NUMBERS = files("varshift.analysis") / "paper_numbers.csv"
# paper_numbers.csv column -> the run DataFrame column it matches
KEY_COLUMNS = {"dataset": "dataset.name", "model": "model.name", "position": "dropout.position",
               "kind": "dropout.kind", "rate": "dropout.rate"}


def paper_numbers() -> pd.DataFrame:
    """All of ``paper_numbers.csv``."""
    return pd.read_csv(PAPER_NUMBERS)


def paper_reference(artifact: str, metrics: str | Sequence[str]) -> pd.DataFrame:
    """The paper's values of ``artifact`` as a reference for :func:`varshift.analysis.tables.table`.

    Columns: the run columns of :data:`KEY_COLUMNS` and ``dropout.channelwise`` (False), ``reference``,
    ``lower_bound``, and ``metric`` when several metrics are asked for (a table of one metric is keyed
    without it).
    """
    numbers = paper_numbers()
    if artifact not in set(numbers["artifact"]):
        raise ValueError(f"the paper has no numbers for artifact {artifact!r}; "
                         f"allowed: {', '.join(sorted(set(numbers['artifact'])))}")
    numbers = numbers[numbers["artifact"] == artifact]
    wanted = [metrics] if isinstance(metrics, str) else list(metrics)
    unknown = [m for m in wanted if m not in set(numbers["metric"])]
    if unknown or not wanted:
        raise ValueError(f"the paper's {artifact} has no metric {unknown or wanted!r}; "
                         f"allowed: {', '.join(sorted(set(numbers['metric'])))}")
    numbers = numbers[numbers["metric"].isin(wanted)].rename(columns={**KEY_COLUMNS, "value": "reference"})
    numbers["dropout.channelwise"] = False  # the paper's dropout is element-wise
    columns = [*KEY_COLUMNS.values(), "dropout.channelwise", *([] if isinstance(metrics, str) else ["metric"]),
               "reference", "lower_bound"]
    return numbers[columns].reset_index(drop=True)
