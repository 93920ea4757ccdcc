"""The dropout layers: noise moments, eval identity, channel-wise structure, dtypes, bad input."""

import math

import pytest
import torch

from varshift import theory
from varshift.dropout import BernoulliDropout, GaussianDropout, UniformDropout, build_dropout

SAMPLES = 1_000_000
CASES = [("bernoulli", 0.1), ("bernoulli", 0.5), ("gaussian", 0.2), ("gaussian", 0.6),
         ("uniform", 0.3), ("uniform", 1.0)]


def fourth_central_moment(kind: str, rate: float) -> float:
    """E[(m - 1)^4] of each noise, for the standard error of the sample variance."""
    s2 = theory.noise_variance(kind, rate)
    if kind == "bernoulli":
        keep = 1.0 - rate
        return keep * (rate / keep) ** 4 + rate
    if kind == "gaussian":
        return 3.0 * s2 * s2
    return rate**4 / 5.0


def noise_values(layer: torch.nn.Module, channelwise: bool) -> torch.Tensor:
    """One noise value per independent draw, from a constant input of ones."""
    x = torch.ones(SAMPLES // 4, 4, 2, 2) if channelwise else torch.ones(SAMPLES)
    out = layer(x)
    if channelwise:
        flat = out.reshape(out.shape[0], out.shape[1], -1)
        assert torch.equal(flat, flat[..., :1].expand_as(flat)), "noise varies inside a (sample, channel)"
        return flat[..., 0].flatten()
    return out


def assert_noise_moments(m: torch.Tensor, kind: str, rate: float) -> None:
    """Mean 1 and variance s2 within 4 standard errors of ``m.numel()`` draws."""
    m = m.double()
    n = m.numel()
    s2 = theory.noise_variance(kind, rate)
    assert abs(m.mean().item() - 1.0) < 4 * math.sqrt(s2 / n)
    # Var of the unbiased sample variance: (mu4 - (n - 3) / (n - 1) * s2^2) / n.
    se_var = math.sqrt((fourth_central_moment(kind, rate) - (n - 3) / (n - 1) * s2 * s2) / n)
    assert abs(m.var().item() - s2) < 4 * se_var


@pytest.mark.parametrize("channelwise", [False, True])
@pytest.mark.parametrize("kind,rate", CASES)
def test_noise_has_mean_one_and_the_stated_variance(kind, rate, channelwise):
    torch.manual_seed(0)
    layer = build_dropout(kind, rate, channelwise).train()
    m = noise_values(layer, channelwise)
    assert layer.noise_variance() == pytest.approx(theory.noise_variance(kind, rate))
    assert_noise_moments(m, kind, rate)


@pytest.mark.parametrize("kind,rate", [("bernoulli", 0.1), ("uniform", 0.1), ("gaussian", 0.1)])
def test_noise_moments_hold_under_bf16_autocast(kind, rate):
    """A bf16 mask rounds 1/0.9 to 1.109 and 1 +- 0.1 to steps of 1/128: the moments must not see that."""
    torch.manual_seed(0)
    layer = build_dropout(kind, rate).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        m = layer(torch.ones(SAMPLES, dtype=torch.bfloat16))
    assert_noise_moments(m, kind, rate)


@pytest.mark.parametrize("kind,rate", CASES)
def test_eval_mode_is_exactly_the_identity(kind, rate):
    layer = build_dropout(kind, rate, channelwise=True).eval()
    x = torch.randn(8, 3, 5, 5)
    assert layer(x) is x


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_bernoulli_keeps_or_zeroes_and_rescales(dtype):
    torch.manual_seed(1)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        values = BernoulliDropout(0.1)(torch.ones(10_000, dtype=dtype)).unique()
    assert values.tolist() == [0.0, pytest.approx(1 / 0.9, rel=1e-7)]  # bf16 would round 1/0.9 to 1.109


def test_uniform_noise_stays_inside_one_plus_minus_beta():
    torch.manual_seed(2)
    out = UniformDropout(0.4)(torch.ones(100_000))
    assert out.min() >= 0.6 and out.max() <= 1.4
    assert out.min() < 0.61 and out.max() > 1.39


def test_gaussian_takes_an_explicit_variance():
    torch.manual_seed(3)
    layer = GaussianDropout(s2=0.25)
    out = layer(torch.ones(SAMPLES)).double()
    assert layer.noise_variance() == 0.25
    assert abs(out.var().item() - 0.25) < 4 * math.sqrt(2 * 0.25**2 / SAMPLES)


def test_none_is_identity_and_rate_zero_keeps_the_module():
    assert isinstance(build_dropout("none", 0.0), torch.nn.Identity)
    layer = build_dropout("bernoulli", 0.0)
    x = torch.randn(4, 4)
    assert isinstance(layer, BernoulliDropout) and torch.equal(layer.train()(x), x)


@pytest.mark.parametrize("kind", ["bernoulli", "gaussian", "uniform"])
def test_noise_is_applied_in_float32_to_low_precision_inputs(kind):
    layer = build_dropout(kind, 0.3, channelwise=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(torch.ones(16, 4, 3, 3, dtype=torch.bfloat16))
    assert out.dtype == torch.float32
    assert layer(torch.ones(4, dtype=torch.float64)).dtype == torch.float64


def test_compiles_with_torch_compile():
    layer = build_dropout("uniform", 0.5)
    compiled = torch.compile(layer, backend="eager", fullgraph=True)
    torch.manual_seed(4)
    expected = layer(torch.ones(64))
    torch.manual_seed(4)
    assert torch.equal(compiled(torch.ones(64)), expected)


@pytest.mark.parametrize("kind,rate,message", [
    ("bernoulli", 1.0, r"\[0, 1\)"), ("bernoulli", -0.1, r"-0.1.*\[0, 1\)"), ("gaussian", 1.5, r"\[0, 1\)"),
    ("uniform", 1.2, r"1.2.*\[0, 1\]"), ("bernoulli", float("nan"), r"nan"), ("uniform", "abc", "abc"),
    ("dropconnect", 0.1, r"dropconnect.*none, bernoulli, gaussian, uniform"),
])
def test_bad_kind_or_rate_names_the_value_and_the_allowed_range(kind, rate, message):
    with pytest.raises(ValueError, match=message):
        build_dropout(kind, rate)


def test_bad_gaussian_variance_is_refused():
    with pytest.raises(ValueError, match=r"s2 -1.0.*\[0, inf\)"):
        GaussianDropout(s2=-1.0)
