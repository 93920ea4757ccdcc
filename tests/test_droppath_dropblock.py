"""DropPath and DropBlock: the same numbers as timm's layers, their moments and shifts against Monte Carlo and against
the shift measured at a BN, their places in the networks and in the config."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_probes import train_statistics
from timm.layers import DropBlock2d
from timm.layers import DropPath as TimmDropPath
from torch import nn

from varshift import theory
from varshift.dropout import DropBlock, DropPath, build_dropout
from varshift.models import build_model
from varshift.noise_geometry import dropblock_layout, filter_alignment
from varshift.probes import measure_variance_shift

SIGMAS = 4.0  # tolerances are this many standard deviations of the estimate (fixed seeds)


@pytest.mark.parametrize("block_size", [3, 4, 7])
def test_dropblock_draws_timms_blocks_from_the_same_rng_state(block_size):
    x = torch.randn(6, 4, 9, 11)
    ours, timms = DropBlock(0.3, block_size=block_size).train(), DropBlock2d(0.3, block_size, couple_channels=False)
    torch.manual_seed(5)
    mine = ours(x)
    torch.manual_seed(5)
    assert torch.equal(mine, timms.train()(x))
    assert torch.equal(ours.eval()(x), x)


def test_droppath_draws_timms_mask_from_the_same_rng_state():
    x = torch.randn(16, 3, 5, 5)
    torch.manual_seed(2)
    mine = DropPath(0.25).train()(x)
    torch.manual_seed(2)
    assert torch.equal(mine, TimmDropPath(0.25).train()(x))
    per_sample = mine / x
    assert torch.allclose(per_sample, per_sample[:, :1, :1, :1].expand_as(per_sample))  # one value per sample


def noise_moments(layer: nn.Module, shape: tuple[int, ...], draws: int) -> tuple[float, float]:
    """Mean and variance of the noise m = layer(1) / 1 over ``draws`` draws of a ``shape`` input."""
    ones = torch.ones(shape, dtype=torch.float64)
    m = torch.cat([layer.train()(ones).flatten() for _ in range(draws)])
    return float(m.mean()), float(m.var())


@pytest.mark.parametrize(("rate", "block_size", "size"), [(0.1, 3, 14), (0.3, 3, 7), (0.5, 5, 16)])
def test_dropblock_noise_moments_match_timm_and_the_closed_form(rate, block_size, size):
    """m is 0 or 1 / keep: mean 1, variance 1 / keep - 1, keep the fraction the blocks leave (fewer seeds reach the
    border). Over n = draws * 8 * 4 * size^2 values, the sample variance of m has a standard deviation of about
    sqrt(E[m^4] / n) = sqrt(keep^-3 / n), which neighbouring units (dropped together) inflate by at most the block's
    area; that bounds both the estimate's error and the difference between the two layers'."""
    shape, draws = (8, 4, size, size), 40
    s2 = theory.dropblock_noise_variance(rate, block_size, size, size)
    keep = 1.0 / (1.0 + s2)
    torch.manual_seed(0)
    ours = noise_moments(DropBlock(rate, block_size=block_size), shape, draws)
    torch.manual_seed(1)
    timms = noise_moments(DropBlock2d(rate, block_size, couple_channels=False), shape, draws)
    n = draws * math.prod(shape)
    tolerance = SIGMAS * math.sqrt(block_size**2 * keep**-3 / n)
    for mean, var in (ours, timms):
        assert mean == pytest.approx(1.0, abs=1e-5)  # the scale makes each draw's mean exactly 1
        assert var == pytest.approx(s2, abs=tolerance)
    assert ours[1] == pytest.approx(timms[1], abs=tolerance * math.sqrt(2))
    assert DropBlock(rate, block_size=block_size).noise_variance(torch.Size(shape)) == s2


def test_droppath_noise_moments_are_bernoullis():
    torch.manual_seed(0)
    mean, var = noise_moments(DropPath(0.2), (4000, 1, 1), 1)
    # one value per sample: 4,000 Bernoulli draws, sd of the variance estimate sqrt(E[m^4] / n) = sqrt(keep^-3 / n)
    assert var == pytest.approx(0.25, abs=SIGMAS * math.sqrt(0.8**-3 / 4000))
    assert mean == pytest.approx(1.0, abs=SIGMAS * math.sqrt(0.25 / 4000))
    assert DropPath(0.2).noise_variance() == theory.noise_variance("droppath", 0.2) == pytest.approx(0.25)


@pytest.mark.parametrize(("rate", "branch_mean", "branch_var", "skip_var", "correlation"),
                         [(0.2, 0.5, 1.0, 2.0, 0.3), (0.5, 0.0, 0.5, 1.0, -0.4)])
def test_droppath_residual_shift_matches_monte_carlo(rate, branch_mean, branch_var, skip_var, correlation):
    sum_var = skip_var + branch_var + 2 * correlation * math.sqrt(skip_var * branch_var)
    closed = theory.shift_ratio_residual(theory.noise_variance("droppath", rate), branch_mean, branch_var, sum_var)
    simulated = theory.simulate_residual_shift(rate, branch_mean, branch_var, skip_var, correlation, samples=200_000)
    # 200,000 independent masks: the training variance's relative sd is about sqrt(kurtosis / n) < sqrt(10 / n)
    assert simulated == pytest.approx(closed, rel=SIGMAS * math.sqrt(10 / 200_000))


@pytest.mark.parametrize(("rate", "rho"), [(0.3, 0.3), (0.5, 0.6)])
def test_dropblock_through_a_conv_matches_monte_carlo(rate, rho):
    """Eq. 14 with DropBlock's block covariances (B, B0 per filter) against numpy's DropBlock and conv: inputs of mean
    0, one variance and one pairwise correlation, where the closed form is exact. Four simulations of 5,000 samples
    give the estimate's standard deviation; ignoring the blocks (B = B0 = 1, Eq. 14 for independent noise) is off by
    more than twice the tolerance."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, bias=False)
    weight = conv.weight.detach().double().numpy()
    layout = dropblock_layout(conv, rate, 3, 10, 10)
    norm2, d_cos2, alignment, diagonal = filter_alignment(conv, layout).weighted()
    s2 = layout.noise_variance
    test = theory.weighted_test_variance(1.0, d_cos2, rho)
    closed = test / theory.weighted_train_variance(s2, 0.0, 1.0, d_cos2, rho, alignment, diagonal)
    independent = test / theory.weighted_train_variance(s2, 0.0, 1.0, d_cos2, rho)
    ratios = []
    for seed in range(4):
        train, test_var = theory.simulate_dropblock_weighted(rate, 3, 1.0, rho, weight, (10, 10), samples=5_000,
                                                             seed=seed)
        ratios.append(test_var / train)
    error = np.std(ratios, ddof=1) / 2  # of the mean of four
    assert np.mean(ratios) == pytest.approx(closed, abs=SIGMAS * error + 1e-9)
    assert abs(independent - closed) > 2 * SIGMAS * error


def residual_block_measurement(rate: float):
    """x -> x + DropPath(conv(x)) -> BN, BN running statistics the cumulative average over train-mode batches."""

    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)
            self.drop = DropPath(rate)
            self.bn = nn.BatchNorm2d(4, momentum=None)

        def forward(self, x):
            return self.bn(x + self.drop(self.conv(x)))

    torch.manual_seed(0)
    model = Residual()
    generator = torch.Generator().manual_seed(3)
    batches = [torch.randn(64, 4, 6, 6, generator=generator) + 0.5 for _ in range(40)]
    train_statistics(model, batches)
    return model, batches


def test_droppath_shift_measured_at_the_next_bn_is_the_closed_form():
    """The measured shift of the BN after x + m f(x) against Var(x + f) / (Var(x + f) + s2 E[f^2]) from the test-time
    statistics (the same as the training-time ones here: nothing upstream is random). 40 batches of 64 samples give
    2,560 masks; the noise term's relative sd is sqrt(E[(m - 1)^4] / s2^2 / 2560), at most 3.3 / sqrt(2560) at 0.3."""
    model, batches = residual_block_measurement(0.3)
    table = measure_variance_shift(model, batches, per_channel=True)
    assert list(table["feed"].unique()) == ["additive"]
    with torch.no_grad():
        branch = torch.cat([model.conv(x) for x in batches]).double()
        total = torch.cat([x + model.conv(x) for x in batches]).double()
    f2 = branch.square().mean(dim=(0, 2, 3)).numpy()
    sum_var = total.var(dim=(0, 2, 3)).numpy()
    s2 = theory.noise_variance("droppath", 0.3)
    expected = np.mean(sum_var + s2 * f2) / np.mean(sum_var)
    measured = table["moving_var"].mean() / table["real_var"].mean()
    noise_share = (expected - 1) / expected
    assert measured == pytest.approx(expected, rel=SIGMAS * noise_share * 3.3 / math.sqrt(2560))
    # the probe's predicted noise term is the same closed form, from the training-time input of the DropPath
    np.testing.assert_allclose(table["noise_predicted"], s2 * f2, rtol=1e-3)


def test_dropblock_before_bn_shifts_as_bernoulli_at_its_drop_fraction():
    """Case (a): the channel statistic is Eq. 8 at DropBlock's drop fraction (its marginal is Bernoulli); the probe's
    prediction of the BN's moving variance from the dropout's input is within the sampling error of 40 x 64 x 7 x 7
    values per channel, whose blocks of 9 units make about 1/9 as many independent ones."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), DropBlock(0.3), nn.BatchNorm2d(4, momentum=None))
    generator = torch.Generator().manual_seed(4)
    batches = [torch.randn(64, 2, 7, 7, generator=generator) for _ in range(40)]
    train_statistics(model, batches)
    table = measure_variance_shift(model, batches)
    row = table.iloc[0]
    assert row["feed"] == "direct" and row["noise_variance"] == theory.dropblock_noise_variance(0.3, 3, 7, 7)
    predicted = row["clean_var"] + row["noise_predicted"]
    s2 = row["noise_variance"]
    relative_sd = math.sqrt(9 * (1 + s2) ** 2 * 3 / (40 * 64 * 49))  # E[m^4] / E[m^2]^2 = 1 + s2, kurtosis 3
    assert row["moving_var"] == pytest.approx(predicted, rel=SIGMAS * relative_sd)
    assert row["source_var"] == pytest.approx(row["real_var"], rel=1e-9)  # nothing upstream: v' is v


def test_the_kinds_have_their_places_and_refuse_the_others(make_config):
    with pytest.raises(ValueError, match=r"dropout.position='before_bn' is not allowed: one of residual with "
                                         r"dropout.kind='droppath'"):
        make_config("dropout=droppath", "dropout.position=before_bn")
    with pytest.raises(ValueError, match=r"dropout.position='head' is not allowed: one of before_bn, before_conv with "
                                         r"dropout.kind='dropblock'"):
        make_config("dropout=dropblock", "dropout.position=head")
    with pytest.raises(ValueError, match=r"dropout.position='residual' is not allowed: .*dropout.kind='bernoulli'"):
        make_config("dropout.position=residual", "model=preresnet14_w8")
    with pytest.raises(ValueError, match=r"dropout.channelwise=True is not allowed: false with "
                                         r"dropout.kind='dropblock'"):
        make_config("dropout=dropblock", "dropout.channelwise=true")
    with pytest.raises(ValueError, match=r"model small_cnn .* no dropout slot at residual"):
        make_config("dropout=droppath")
    assert make_config("dropout=droppath", "model=preresnet14_w8")["dropout"]["position"] == "residual"


@pytest.mark.parametrize("name", ["preresnet14_w8", "wrn28_10", "resnext29_8x64d"])
def test_every_residual_block_has_a_droppath_slot_in_front_of_its_add(name):
    sizes = {"wrn28_10": {"depth": 10, "widen_factor": 1},
             "resnext29_8x64d": {"depth": 11, "cardinality": 2, "base_width": 2, "widen_factor": 1}}.get(name, {})
    model = build_model(name, in_channels=1, dropout={"kind": "droppath", "rate": 0.2}, position="residual", **sizes)
    blocks = [module for module in model.modules() if hasattr(module, "drop_residual")]
    assert blocks and all(isinstance(block.drop_residual, DropPath) for block in blocks)
    assert sum(isinstance(module, DropPath) for module in model.modules()) == len(blocks)


@pytest.mark.parametrize(("kind", "position"), [("droppath", "residual"), ("dropblock", "before_conv")])
def test_preresnet_trains_with_each_kind_at_its_place(make_config, tmp_path, kind, position):
    from varshift.training import run

    cfg = make_config("model=preresnet14_w8", f"dropout={kind}", f"dropout.position={position}", "dropout.rate=0.2",
                      "trainer.epochs=1", "trainer.threads=1", "dataset.subset=256", "probe.batches=2",
                      "probe.recalibrate_batches=2")
    summary = run(cfg, tmp_path / kind)
    assert summary["status"] == "complete" and math.isfinite(summary["mean_shift"])
    variance = (tmp_path / kind / "variance.csv").read_text()
    assert ("additive" if kind == "droppath" else "weight") in variance


def test_build_dropout_makes_the_new_kinds():
    assert isinstance(build_dropout("droppath", 0.1), DropPath)
    assert isinstance(build_dropout("dropblock", 0.1), DropBlock)
    with pytest.raises(ValueError, match="channelwise=True is not allowed for droppath"):
        build_dropout("droppath", 0.1, channelwise=True)
    with pytest.raises(ValueError, match="depends on the height and width"):
        DropBlock(0.2).noise_variance()
    with pytest.raises(ValueError, match="give block_size and feature_size"):
        theory.noise_variance("dropblock", 0.2)
    assert torch.equal(DropBlock(0.0).train()(torch.ones(2, 3, 4, 4)), torch.ones(2, 3, 4, 4))


@pytest.mark.parametrize(("kind", "position"), [("droppath", "residual"), ("dropblock", "before_conv")])
def test_the_audit_predicts_their_shift_through_the_residual_adds_and_convs(kind, position):
    """DropPath's per-sample noise and DropBlock's blocks pushed through the adds (and the conv) to the next BN: a
    linear path, so the prediction is Eq. 14's exact form; each BN's joint value holds at least each site's own."""
    from varshift.audit import audit
    from varshift.audit.predict import EQ14

    torch.manual_seed(0)
    model = build_model("preresnet14_w8", in_channels=1, dropout={"kind": kind, "rate": 0.2}, position=position)
    report = audit(model, input_shape=(1, 16, 16), batch_size=4, num_batches=1)
    feeds = report.feeds[report.feeds["bn"] != ""]
    assert len(feeds) and set(feeds["prediction"]) == {EQ14} and (feeds["predicted_shift"] > 1.0).all()
    assert (feeds["joint_predicted_shift"] >= feeds["predicted_shift"] - 1e-12).all()
    layer = "DropPath" if kind == "droppath" else "DropBlock"
    assert set(report.sites["layer"]) == {layer} and report.exit_code == 1
