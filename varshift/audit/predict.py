"""The variance shift varshift's theory predicts at each BN layer a dropout site feeds, per site and jointly.

Training adds to each channel ``k`` of a BN input, over its test-time variance ``T_k``, a noise term per site feeding
it (the sites' noises are independent, so the terms add):

* direct feed, the paper's case (a) (Eq. 7/8): the channels that hold a site's output gain ``s2 (c_k^2 + v_k)``
  (:func:`varshift.theory.train_variance`), ``c_k`` and ``v_k`` their test-time mean and variance;
* through other layers (a conv or linear layer, adds, concatenations: case (b)): ``s2 E[(J (e f))^2]``, the site's unit
  noise pushed through the layers between by forward-mode AD (:mod:`varshift.audit.response`): Eq. 14 in its exact form,
  the weights and the correlation of their inputs as they are. ``kind`` says whether that path is linear (``Eq. 14``,
  exact) or not (``first order``, an estimate);
* a site whose noise has no closed form (alpha dropout): no prediction.

``shift`` is the prediction with this one site on (per site), through its feed's paths; ``joint_shift`` with every
site that feeds the BN on, by every path where some of them reach it through other layers (a site's noise also
reaches a BN through the other sites' blocks, their BN layers affine at test time; to first order in the noises), and
the sum of their case (a) terms where all of them feed it directly (DenseNet's concatenations). Each is the paper's
statistic ``max(r, 1/r)``, ``r`` the ratio of the channel means of the training and test variances, as
:func:`varshift.probes.shift_of` computes it. The per-site prediction with
Uout at ``beta = 0.1`` in place of the site (its noise variance, the same sharing) is given beside it, for the remedy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from varshift import theory
from varshift.audit.moments import Moments
from varshift.audit.reach import Feed
from varshift.audit.response import Response
from varshift.audit.sites import DropoutSite
from varshift.probes import shift_of

UOUT_BETA = 0.1
CASE_A = "case a"
EQ14 = "Eq. 14"
FIRST_ORDER = "first order"


@dataclass(frozen=True)
class Prediction:
    shift: float | None  # this site alone: the paper's statistic; None without a closed form or statistics
    uout_shift: float | None  # the same with Uout (beta = UOUT_BETA) in place of the site
    joint_shift: float | None  # every site that feeds this BN on
    kind: str  # CASE_A (direct feed), EQ14 (a linear path), FIRST_ORDER (a path through a nonlinearity)


def paper_statistic(train_var: np.ndarray, test_var: np.ndarray) -> float:
    return float(shift_of(np.mean(test_var), np.mean(train_var)))


def unit_noise_term(feed: Feed, site: DropoutSite, bn: Moments, responses: Mapping[tuple[str, str], Response]
                    ) -> np.ndarray | None:
    """Per BN channel, what a noise of variance 1 with the site's sharing adds to the BN input's variance."""
    if feed.direct:
        term = np.zeros_like(bn.var)
        channels = slice(*feed.channels)
        # a noise shared by the whole batch scales the batch's mean along with it: no c^2 term
        mean2 = 0.0 if site.shared_over_batch else bn.mean[channels] ** 2
        term[channels] = mean2 + bn.var[channels]
        return term
    response = responses.get((feed.site, feed.bn))
    return None if response is None else response.second_moment


def predict(feeds: Sequence[Feed], sites: Mapping[str, DropoutSite], bn_moments: Mapping[str, Moments],
            responses: Mapping[tuple[str, str], Response], joint_responses: Mapping[tuple[str, str], Response]
            ) -> dict[tuple[str, str], Prediction]:
    """``(site, bn) -> Prediction`` for every feed. ``responses``: the feeds' paths (ending at the first BN);
    ``joint_responses``: every path (through BN layers too), for the joint prediction of the BN layers that some site
    reaches through other layers."""
    uout = theory.noise_variance("uniform", UOUT_BETA)
    terms = {}
    for feed in feeds:
        site, moments = sites[feed.site], bn_moments.get(feed.bn)
        unit = None if moments is None or site.noise_variance is None else unit_noise_term(feed, site, moments,
                                                                                           responses)
        terms[feed.site, feed.bn] = unit
    predictions = {}
    for feed in feeds:
        site, moments, unit = sites[feed.site], bn_moments.get(feed.bn), terms[feed.site, feed.bn]
        if feed.direct:
            kind = CASE_A
        else:
            response = responses.get((feed.site, feed.bn))
            kind = EQ14 if response is not None and response.linear else FIRST_ORDER
        if unit is None:
            predictions[feed.site, feed.bn] = Prediction(None, None, None, kind)
            continue
        group = [other for other in feeds if other.bn == feed.bn]
        if all(other.direct for other in group):
            others = [(sites[other.site], terms[other.site, other.bn]) for other in group]
        else:
            others = [(sites[other.site], None if (other.site, other.bn) not in joint_responses
                       else joint_responses[other.site, other.bn].second_moment) for other in group]
        joint = None if any(term is None for _, term in others) else moments.var + sum(
            other.noise_variance * term for other, term in others)
        predictions[feed.site, feed.bn] = Prediction(
            shift=paper_statistic(moments.var + site.noise_variance * unit, moments.var),
            uout_shift=paper_statistic(moments.var + uout * unit, moments.var),
            joint_shift=None if joint is None else paper_statistic(joint, moments.var),
            kind=kind)
    return predictions
