"""The audit's two tables: one row per (dropout site, BN layer) feed, and one row per dropout site.

A site is *shifting* when it feeds at least one BN layer with running statistics and its noise is not
zero (a dropout at rate 0 is harmless wherever it sits); otherwise it is *safe*. A safe site that feeds
no BN layer has one row with an empty ``bn``. ``predicted_shift`` is per site (this site alone on),
``joint_predicted_shift`` the BN layer's with every site that feeds it on (:mod:`varshift.audit.predict`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from varshift.audit.predict import UOUT_BETA, Prediction
from varshift.audit.reach import Feed
from varshift.audit.sites import DropoutSite

SHIFTING, SAFE = "shifting", "safe"
DROPOUT, BRANCH_DROP, BLOCK_DROP = "dropout", "stochastic depth / DropPath", "DropBlock"
DIRECT, INDIRECT = "direct", "via other layers"
FEED_COLUMNS = ["site", "layer", "rate", "noise_variance", "verdict", "bn", "path", "channels",
                "predicted_shift", "joint_predicted_shift", "prediction", "uout_shift", "measured_shift",
                "recalibrated_shift", "remedy"]
SITE_COLUMNS = ["site", "layer", "rate", "verdict", "bn_layers", "first_bn", "path", "predicted_shift",
                "joint_predicted_shift", "measured_shift", "recalibrated_shift"]


def verdict(site: DropoutSite, feeds: Sequence[Feed]) -> str:
    return SHIFTING if feeds and site.noise_variance != 0.0 else SAFE


def drop_kind(layer: str) -> str:
    """What a site drops, which decides its remedies: a unit (:data:`DROPOUT`), a residual branch
    (:data:`BRANCH_DROP`: stochastic depth, DropPath) or a block of a feature map (:data:`BLOCK_DROP`: DropBlock)."""
    if layer.startswith(("StochasticDepth", "DropPath")):
        return BRANCH_DROP
    if "DropBlock" in layer:
        return BLOCK_DROP
    return DROPOUT


def remedy(kind: str, uout_shift: float | None, recalibrated_shift: float | None) -> str:
    """The fixes that suit a drop of ``kind``, with the numbers the audit has for this feed. A dropout can move
    after the last BN; a dropped residual branch or feature-map block cannot (it acts where the BN layers are):
    for them BN recalibration comes first, then noise of a small variance in the same place (the paper's Uout)."""
    uout = "" if uout_shift is None else f": {uout_shift:.4g} predicted"
    recalibrate = "varshift.bn.recalibrate_bn after training" + (
        ", on training batches" if recalibrated_shift is None else f": {recalibrated_shift:.4g} measured")
    if kind == BRANCH_DROP:
        return (f"{recalibrate}; or scale the residual branch by 1 + U(-{UOUT_BETA}, {UOUT_BETA}) per sample "
                f"instead of dropping it (Uout's noise){uout}")
    if kind == BLOCK_DROP:
        return f"{recalibrate}; or Uout (beta={UOUT_BETA}) in place of the DropBlock{uout}"
    return f"move the dropout after the last BN (no shift); or Uout (beta={UOUT_BETA}){uout}; or {recalibrate}"


def _number(value) -> float:
    return np.nan if value is None else float(value)


def feed_table(sites: Sequence[DropoutSite], feeds: Sequence[Feed], predictions: Mapping[tuple[str, str], Prediction],
               measured: Mapping[str, float], recalibrated: Mapping[str, float]) -> pd.DataFrame:
    """One row per feed (sites in forward order), one row for each site that feeds no BN layer.

    ``measured`` and ``recalibrated``: BN name -> the shift :mod:`varshift.probes` measured before and
    after BN recalibration (empty without data).
    """
    rows = []
    for site in sites:
        own = [feed for feed in feeds if feed.site == site.name]
        site_verdict = verdict(site, own)
        common = {"site": site.name, "layer": site.layer, "rate": _number(site.rate),
                  "noise_variance": _number(site.noise_variance), "verdict": site_verdict}
        if not own:
            rows.append({**common, "bn": "", "path": "", "channels": "", "prediction": "", "remedy": ""})
        for feed in own:
            prediction = predictions[feed.site, feed.bn]
            recalibrated_shift = recalibrated.get(feed.bn)
            rows.append({
                **common, "bn": feed.bn, "path": DIRECT if feed.direct else INDIRECT,
                "channels": f"{feed.channels[0]}:{feed.channels[1]}" if feed.direct else "",
                "predicted_shift": _number(prediction.shift), "joint_predicted_shift": _number(prediction.joint_shift),
                "prediction": prediction.kind,
                "uout_shift": _number(prediction.uout_shift), "measured_shift": _number(measured.get(feed.bn)),
                "recalibrated_shift": _number(recalibrated_shift),
                "remedy": remedy(drop_kind(site.layer), prediction.uout_shift, recalibrated_shift)
                if site_verdict == SHIFTING else "",
            })
    return pd.DataFrame(rows, columns=FEED_COLUMNS)


def site_table(feeds: pd.DataFrame) -> pd.DataFrame:
    """One row per site: its verdict, how many BN layers it feeds, the first, the paths, the largest shifts (the site's
    own, and the joint one of the BN layers it feeds)."""
    grouped = feeds.groupby("site", sort=False)
    table = grouped[["layer", "rate", "verdict"]].first()
    table["bn_layers"] = grouped["bn"].agg(lambda names: int((names != "").sum()))
    table["first_bn"] = grouped["bn"].first()
    table["path"] = grouped["path"].agg(lambda paths: ", ".join(sorted(set(paths) - {""})))
    for column in ("predicted_shift", "joint_predicted_shift", "measured_shift", "recalibrated_shift"):
        table[column] = grouped[column].max()
    return table.reset_index()[SITE_COLUMNS]
