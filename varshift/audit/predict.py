"""The variance shift varshift's theory predicts for each feed of a dropout site into a BN layer.

* Direct feed, the paper's case (a) (Eq. 7/8): a BN input channel that holds a site's output has the
  training variance ``v + s2 (c^2 + v)`` (:func:`varshift.theory.train_variance`), ``c`` and ``v`` its
  test-time mean and variance; the layer's other channels keep ``v``. All the sites that feed one BN
  layer directly count together (DenseNet's concatenations), and every feed into that layer shows the
  layer's prediction, comparable with what :mod:`varshift.probes` measures.
* Any other path (a weight layer, a residual add, an activation between): a bound, case (a) on the site's
  own output. By Eq. 14 a weight layer of fan-in ``d`` adds ``v rho (d cos^2 - 1)`` to both variances, which
  moves the ratio towards 1 whenever ``rho (d cos^2 - 1) >= 0`` (correlated inputs, an aligned or wide
  layer), so the shift behind it is at most this; ``rho`` is not observable from a few batches, so the
  audit reports the bound and, with data, the measured shift.
* A site whose noise has no closed form (alpha dropout): no prediction.

Every prediction is the paper's statistic ``max(r, 1/r)``, ``r`` the ratio of the channel means of the
test and training variances, as :func:`varshift.probes.shift_of` computes it. The same prediction with
Uout at ``beta = 0.1`` in place of each site is given beside it, for the remedy.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from varshift import theory
from varshift.audit.moments import Moments
from varshift.audit.reach import Feed
from varshift.audit.sites import DropoutSite
from varshift.probes import shift_of

UOUT_BETA = 0.1
CASE_A = "case a"
BOUND = "bound"

Noise = tuple[slice, float, bool]  # channels, Var[m], shared over the batch


@dataclass(frozen=True)
class Prediction:
    shift: float | None  # the paper's statistic, None where there is no closed form or no statistics
    uout_shift: float | None  # the same with Uout (beta = UOUT_BETA) in place of the dropout
    kind: str  # CASE_A (direct feed) or BOUND (any other path)


def paper_statistic(train_var: np.ndarray, test_var: np.ndarray) -> float:
    return float(shift_of(np.mean(test_var), np.mean(train_var)))


def predicted_shift(moments: Moments, noises: Sequence[Noise]) -> float:
    """The paper's statistic of a layer whose channels ``noises`` carry multiplicative noise in training."""
    train_var = moments.var.copy()
    for channels, noise_variance, shared_over_batch in noises:
        # a noise shared by the whole batch scales the batch's mean along with it: no c^2 term
        mean = 0.0 if shared_over_batch else moments.mean[channels]
        train_var[channels] = theory.train_variance(noise_variance, mean, moments.var[channels])
    return paper_statistic(train_var, moments.var)


def _shift_or_none(moments: Moments | None, noises: Sequence[tuple[slice, float | None, bool]]) -> float | None:
    if moments is None or any(noise_variance is None for _, noise_variance, _ in noises):
        return None
    return predicted_shift(moments, noises)


def predict(feeds: Sequence[Feed], sites: Mapping[str, DropoutSite], site_moments: Mapping[str, Moments],
            bn_moments: Mapping[str, Moments]) -> dict[tuple[str, str], Prediction]:
    """``(site, bn) -> Prediction`` for every feed."""
    uout = theory.noise_variance("uniform", UOUT_BETA)
    direct_feeds = defaultdict(list)
    for feed in feeds:
        if feed.direct:
            direct_feeds[feed.bn].append(feed)
    predictions = {}
    for feed in feeds:
        if feed.direct:
            group = direct_feeds[feed.bn]
            channels = [slice(*other.channels) for other in group]
            feeders = [sites[other.site] for other in group]
            moments, kind = bn_moments.get(feed.bn), CASE_A
        else:
            channels, feeders = [slice(None)], [sites[feed.site]]
            moments, kind = site_moments.get(feed.site), BOUND
        noises = [(ch, site.noise_variance, site.shared_over_batch) for ch, site in zip(channels, feeders, strict=True)]
        predictions[feed.site, feed.bn] = Prediction(
            shift=_shift_or_none(moments, noises),
            uout_shift=_shift_or_none(moments, [(ch, uout, False) for ch in channels]),
            kind=kind)
    return predictions
