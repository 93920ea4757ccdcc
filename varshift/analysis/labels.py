"""The words on figures and tables, the paper's: column and value labels, dropout settings, captions, the order.

Config values are kept as they are for matching and sorting (:func:`value_text`) and shown in the paper's words
(:func:`shown_text`): positions as Dropout-(a)/(b), kinds as Bernoulli, Gaussian and Uout, the rate as the drop
ratio q (β for Uout), the noise variance as s².
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from varshift.vocabulary import DATASET_NAMES, DROPOUT_KINDS, MODEL_NAMES, POSITIONS

LABELS = {"experiment_name": "experiment", "scale.name": "scale", "dataset.name": "dataset",
          "model.name": "model", "dropout.kind": "dropout", "dropout.rate": "rate",
          "dropout.channelwise": "noise", "dropout.position": "position"}
METRIC_LABELS = {"test_error": "test error", "test_error_recalibrated": "test error, BN recalibrated",
                 "train_acc": "train mode", "train_eval_acc": "eval mode", "cos2": "cos²θ",
                 "d_cos2": "d·cos²θ", "shift": "measured", "predicted_shift": "theory",
                 "test_acc_per_class": "final model", "test_acc_recalibrated_per_class": "BN recalibrated",
                 "mean_shift": "mean shift", "error": "test error"}
KNOWN_ORDER = {"dataset.name": DATASET_NAMES, "model.name": MODEL_NAMES, "dropout.position": POSITIONS,
               "dropout.kind": DROPOUT_KINDS, "metric": tuple(METRIC_LABELS)}
POSITION_LABELS = {"none": "no dropout", "before_bn": "Dropout-(a) before BN",
                   "before_conv": "Dropout-(b) before conv", "head": "dropout after all BN",
                   "residual": "on the residual branch"}
KIND_LABELS = {"none": "no dropout", "bernoulli": "Bernoulli", "gaussian": "Gaussian", "uniform": "Uout"}
NOISE_LABELS = {"False": "element-wise", "True": "channel-wise"}  # dropout.channelwise
# the rate of each kind: the drop ratio q of Bernoulli and Gaussian dropout, the width beta of Uout's noise
RATE_SYMBOLS = {"bernoulli": "q", "gaussian": "q", "uniform": "β"}
RATE_LABELS = {"q": "drop ratio q", "β": "β (Uout)", "q or β": "drop ratio q (β for Uout)"}
# the paper's artifacts (varshift-analysis ARTIFACT) and the experiment presets (conf/experiment/), for captions
ARTIFACT_TITLES = {"fig1": "Figure 1", "fig3": "Figure 3", "fig4": "Figure 4", "fig5": "Figure 5", "table1": "Table 1",
                   "table3": "Table 3", "table4": "Table 4", "table5": "Table 5", "table6": "Table 6",
                   "theory-vs-measured": "Theory against measurement", "per-class": "Accuracy per class",
                   "decomposition": "The shift taken apart", "shift-over-training": "Shift over training",
                   "channel-shift": "Shift per channel"}
EXPERIMENT_TITLES = {**ARTIFACT_TITLES, "gaussian": "Gaussian dropout", "channelwise": "Channel-wise dropout",
                     "width": "Dropout-(b) and layer width", "demo": "Demo",
                     "variance_matched": "Dropout kinds at one noise variance"}
NO_DROPOUT = "no dropout"
MISSING = "–"


def rate_symbol(kinds) -> str:
    """``q``, ``β`` or ``q or β``: what the rate is for the dropout ``kinds`` (``none`` has no rate)."""
    symbols = {RATE_SYMBOLS[kind] for kind in kinds if kind in RATE_SYMBOLS}
    return symbols.pop() if len(symbols) == 1 else "q or β" if symbols else "q"


def column_label(column: str, data: pd.DataFrame | None = None, short: bool = False) -> str:
    """The header of ``column``; the rate's says what it is for the dropout kinds of ``data`` (``short``: its
    symbol alone, for ``q = 0.5``)."""
    if column == "dropout.rate":
        kinds = set(data["dropout.kind"]) if data is not None and "dropout.kind" in data else set()
        symbol = rate_symbol(kinds)
        return symbol if short else RATE_LABELS[symbol]
    return LABELS.get(column, column.removeprefix("model.kwargs."))


def is_missing(value) -> bool:
    """None, NaN or NA (a tuple value is never missing)."""
    return pd.api.types.is_scalar(value) and pd.isna(value)


def value_text(column: str, value) -> str:
    """``value`` of config ``column`` as text, as the config spells it (``before_bn``): what cells are keyed by."""
    if is_missing(value):
        return MISSING
    return f"{value:g}" if isinstance(value, float) else str(value)


def shown_text(column: str, text: str) -> str:
    """A :func:`value_text` in the paper's words: ``Dropout-(a) before BN``, ``Uout``, ``test error``."""
    if column == "metric":
        return METRIC_LABELS.get(text, text)
    words = {"dropout.position": POSITION_LABELS, "dropout.kind": KIND_LABELS, "dropout.channelwise": NOISE_LABELS}
    return words.get(column, {}).get(text, text)


def self_describing(column: str) -> bool:
    """Whether a value of ``column`` is clear without its column's name (``Dropout-(a) before BN``, not ``0.5``)."""
    return column in ("metric", "dropout.position", "dropout.kind", "dropout.channelwise")


def sort_settings(df: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """``df`` sorted by ``columns``, known names (datasets, models, positions, kinds) in the paper's order."""
    def rank(series: pd.Series) -> pd.Series:
        order = KNOWN_ORDER.get(series.name)
        if order is None:
            return series.map(str) if series.map(type).nunique() > 1 else series
        others = sorted(set(series) - set(order), key=str)
        return series.map({name: i for i, name in enumerate([*order, *others])})

    return df.sort_values(list(columns), key=rank, kind="stable") if columns else df


def has_dropout(run: pd.Series) -> bool:
    return run["dropout.kind"] != "none" and run["dropout.rate"] != 0


def dropout_label(run: pd.Series) -> str:
    """``no dropout``, ``Bernoulli q = 0.5``, ``Uout β = 0.1`` or ``Gaussian q = 0.3, channel-wise``."""
    if not has_dropout(run):
        return NO_DROPOUT
    channelwise = run.get("dropout.channelwise")
    channelwise = not is_missing(channelwise) and bool(channelwise)
    kind = run["dropout.kind"]
    return (f"{KIND_LABELS.get(kind, kind)} {RATE_SYMBOLS.get(kind, 'rate')} = {run['dropout.rate']:.4g}"
            + (", channel-wise" if channelwise else ""))


def experiment_title(runs: pd.DataFrame) -> str:
    """What the runs are, from the experiment presets they come from: ``Figure 4``, ``Gaussian dropout``."""
    names = runs["experiment_name"].drop_duplicates() if "experiment_name" in runs else ["runs"]
    return " + ".join(EXPERIMENT_TITLES.get(name, str(name)) for name in names)


def caption(artifact: str, runs: pd.DataFrame, text: str) -> str:
    """``Table 3: <text>.``, then the experiments whose runs it is made from, where they are not its own:
    ``Figure 1: <text>. Runs of Figure 4.``"""
    names = list(runs["experiment_name"].drop_duplicates()) if "experiment_name" in runs else []
    source = " + ".join(EXPERIMENT_TITLES.get(name, str(name)) for name in names)
    own = names == [artifact]
    return f"{ARTIFACT_TITLES.get(artifact, artifact)}: {text}." + ("" if own or not names else f" Runs of {source}.")
