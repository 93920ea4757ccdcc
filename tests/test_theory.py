"""Closed forms against the paper's own equations and against Monte-Carlo simulation."""

import itertools

import numpy as np
import pytest
import torch

from varshift import theory

RATES = {"bernoulli": (0.1, 0.4, 0.7), "gaussian": (0.1, 0.3, 0.5), "uniform": (0.1, 0.5, 1.0)}
GRID = [(kind, rate, c, v) for kind, rates in RATES.items() for rate in rates
        for c, v in itertools.product((0.0, 1.0), (0.5, 2.0))]


@pytest.mark.parametrize("kind,rate,c,v", GRID)
def test_case_a_matches_simulation_within_one_percent(kind, rate, c, v):
    closed = theory.shift_ratio(kind, rate, c, v)
    simulated = theory.simulate_shift_ratio(kind, rate, c, v, samples=2_000_000, seed=7)
    assert simulated == pytest.approx(closed, rel=0.01)


CASE_B = [(16, 0.05, 0.2), (64, 0.03, 0.5), (32, 0.3, 0.8), (128, 0.02, 0.1)]


@pytest.mark.parametrize("kind,rate", [("bernoulli", 0.5), ("gaussian", 0.3), ("uniform", 0.8)])
@pytest.mark.parametrize("d,cos2,rho", CASE_B)
def test_case_b_matches_simulation_within_one_percent(kind, rate, d, cos2, rho):
    closed = theory.shift_ratio_weighted(kind, rate, 0.5, 1.0, d, cos2, rho)
    simulated = theory.simulate_shift_ratio_weighted(kind, rate, 0.5, 1.0, d, cos2, rho, samples=200_000, seed=3)
    assert simulated == pytest.approx(closed, rel=0.01)


@pytest.mark.parametrize("q,c,v", [(0.1, 0.0, 1.0), (0.5, 1.0, 2.0), (0.7, 0.3, 0.5)])
def test_bernoulli_is_the_papers_eq8(q, c, v):
    p = 1.0 - q
    assert theory.shift_ratio("bernoulli", q, c, v) == pytest.approx(v / ((1 / p) * (c**2 + v) - c**2))


def test_uniform_at_zero_mean_is_the_papers_eq15():
    assert theory.shift_ratio("uniform", 0.1, 0.0, 1.0) == pytest.approx(300 / 301)
    betas = np.array([0.2, 0.5, 1.0])
    assert np.allclose([theory.shift_ratio("uniform", b, 0.0, 3.0) for b in betas], 3 / (3 + betas**2))


@pytest.mark.parametrize("q,c,v,d,cos2,rho", [(0.5, 0.0, 1.0, 64, 0.03, 0.5), (0.3, 1.0, 2.0, 300, 0.02, 0.2)])
def test_bernoulli_case_b_is_the_papers_eq14(q, c, v, d, cos2, rho):
    p, dc = 1.0 - q, d * cos2
    eq14 = (v * rho + v * (1 - rho) / dc) / (v * rho + ((1 / p - 1) * c**2 + v * (1 / p - rho)) / dc)
    assert theory.shift_ratio_weighted("bernoulli", q, c, v, d, cos2, rho) == pytest.approx(eq14)


def test_case_b_tends_to_one_as_the_layer_widens():
    ratios = [theory.shift_ratio_weighted("bernoulli", 0.5, 0.0, 1.0, d, 0.03, 0.5) for d in (10, 100, 10_000)]
    assert ratios[0] < ratios[1] < ratios[2] and ratios[2] > 0.99


def test_weight_alignment_of_known_weights():
    rng = np.random.default_rng(0)
    conv = np.stack([theory.unit_weight(3 * 3 * 3, 0.04, rng).reshape(3, 3, 3) for _ in range(5)])
    result = theory.weight_alignment(torch.tensor(conv))
    assert result.d == 27 and result.cos2 == pytest.approx(0.04) and result.d_cos2 == pytest.approx(27 * 0.04)
    assert theory.weight_alignment(np.ones((2, 7))).cos2 == pytest.approx(1.0)
    with pytest.raises(ValueError, match="all-zero filter"):
        theory.weight_alignment(np.zeros((2, 3)))


def test_none_kind_has_no_noise():
    assert theory.noise_variance("none", 0) == 0.0
    with pytest.raises(ValueError, match="'none' takes rate 0"):
        theory.noise_variance("none", 0.3)
