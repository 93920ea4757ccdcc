"""The words on figures and tables: column and value labels, dropout settings, titles, the paper's order."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from varshift.vocabulary import DATASET_NAMES, DROPOUT_KINDS, MODEL_NAMES, POSITIONS

LABELS = {"experiment_name": "experiment", "scale.name": "scale", "dataset.name": "dataset",
          "model.name": "model", "dropout.kind": "kind", "dropout.rate": "rate",
          "dropout.channelwise": "channel-wise", "dropout.position": "position"}
METRIC_LABELS = {"test_error": "error", "test_error_recalibrated": "error, BN recalibrated",
                 "train_acc": "train mode", "train_eval_acc": "eval mode", "cos2": "cos²θ",
                 "d_cos2": "d·cos²θ", "shift": "measured", "predicted_shift": "theory"}
KNOWN_ORDER = {"dataset.name": DATASET_NAMES, "model.name": MODEL_NAMES, "dropout.position": POSITIONS,
               "dropout.kind": DROPOUT_KINDS, "metric": tuple(METRIC_LABELS)}
POSITION_LABELS = {"none": "no dropout", "before_bn": "Dropout-(a) before BN",
                   "before_conv": "Dropout-(b) before conv", "head": "dropout after all BN",
                   "residual": "on the residual branch"}
# what the runs of each experiment preset (conf/experiment/) are, for titles
EXPERIMENT_TITLES = {"fig4": "Figure 4", "fig5": "Figure 5", "table1": "Table 1", "table3": "Table 3",
                     "table4": "Table 4", "table6": "Table 6", "gaussian": "Gaussian dropout",
                     "channelwise": "Channel-wise dropout", "width": "Dropout-(b) and layer width", "demo": "Demo",
                     "variance_matched": "Dropout kinds at one noise variance"}
NO_DROPOUT = "no dropout"
MISSING = "–"


def column_label(column: str) -> str:
    return LABELS.get(column, column.removeprefix("model.kwargs."))


def is_missing(value) -> bool:
    """None, NaN or NA (a tuple value is never missing)."""
    return pd.api.types.is_scalar(value) and pd.isna(value)


def value_text(column: str, value) -> str:
    if is_missing(value):
        return MISSING
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


def dropout_label(run: pd.Series) -> str:
    """``no dropout``, ``bernoulli 0.5`` or ``gaussian 0.3 channel-wise``."""
    if run["dropout.kind"] == "none" or run["dropout.rate"] == 0:
        return NO_DROPOUT
    channelwise = run.get("dropout.channelwise")
    channelwise = not is_missing(channelwise) and bool(channelwise)
    return f"{run['dropout.kind']} {run['dropout.rate']:g}" + (" channel-wise" if channelwise else "")


def experiment_title(runs: pd.DataFrame) -> str:
    """What the runs are, from the experiment presets they come from: ``Figure 4``, ``Gaussian dropout``."""
    names = runs["experiment_name"].drop_duplicates() if "experiment_name" in runs else ["runs"]
    return " + ".join(EXPERIMENT_TITLES.get(name, str(name)) for name in names)
