"""measure_variance_shift: the paper's statistic against theory, its estimator, and that it leaves no trace."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from varshift import theory
from varshift.bn import recalibrate_bn
from varshift.dropout import MultiplicativeNoise, build_dropout
from varshift.models import build_model
from varshift.probes import CHANNEL_COLUMNS, LAYER_COLUMNS, measure_variance_shift

SIGMAS = 4.0  # tolerances are this many standard deviations of the estimate (fixed seeds)


def fourth_moment(kind: str, rate: float) -> float:
    """E[m^4] of the dropout noise m (E[m] = 1)."""
    s2 = theory.noise_variance(kind, rate)
    if kind == "bernoulli":  # m = a / p, a ~ Bernoulli(p): E[m^4] = 1 / p^3
        return 1.0 / (1.0 - rate) ** 3
    if kind == "gaussian":  # m = 1 + e, e ~ N(0, s2)
        return 1.0 + 6.0 * s2 + 3.0 * s2 * s2
    return 1.0 + 6.0 * s2 + rate**4 / 5.0  # m = 1 + r, r ~ U(-beta, beta): E[r^4] = beta^4 / 5


def relative_sd(kurtosis: float, batch: int, batches: int) -> float:
    """Relative standard deviation of the average over ``batches`` of unbiased variances of ``batch`` samples.

    For one batch of n i.i.d. values with kurtosis k: Var(s^2) / sigma^4 = (k - (n - 3) / (n - 1)) / n.
    """
    return math.sqrt((kurtosis - (batch - 3) / (batch - 1)) / (batch * batches))


def gaussian_batches(count: int, size: int, features: int, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(size, features, generator=generator) for _ in range(count)]


@torch.no_grad()
def train_statistics(model: nn.Module, batches) -> None:
    """What training leaves in the BN buffers: train-mode passes over the training data."""
    model.train()
    for x in batches:
        model(x)


def dropout_before_bn(kind: str, rate: float, features: int = 8) -> nn.Sequential:
    """Linear (no bias: zero-mean units) -> dropout -> BN1d; momentum None so the running variance is the
    cumulative average over the epoch, whose sampling error the tests can bound."""
    return nn.Sequential(nn.Linear(features, features, bias=False), build_dropout(kind, rate),
                         nn.BatchNorm1d(features, momentum=None))


@pytest.mark.parametrize(("kind", "rate"), [("bernoulli", 0.5), ("bernoulli", 0.2), ("uniform", 1.0),
                                            ("uniform", 0.5), ("gaussian", 0.5)])
def test_shift_of_dropout_before_bn_matches_theory_and_vanishes_after_recalibration(kind, rate):
    torch.manual_seed(0)
    batch, count = 4096, 32
    model = dropout_before_bn(kind, rate)
    train_data = gaussian_batches(count, batch, 8, seed=1)
    train_statistics(model, train_data)

    row = measure_variance_shift(model, train_data).iloc[0]
    # each unit is N(0, v) before the noise: c = 0, so the statistic is Var_train / Var_test
    expected = 1.0 / theory.shift_ratio(kind, rate, 0.0, 1.0)
    s2 = theory.noise_variance(kind, rate)
    noisy = relative_sd(3.0 * fourth_moment(kind, rate) / (1.0 + s2) ** 2, batch, count)
    clean = relative_sd(3.0, batch, count)
    # the channel mean of estimates is no noisier (relatively) than one channel, and sd(a - b) <= sd(a) + sd(b)
    tolerance = SIGMAS * (noisy + clean)
    assert tolerance <= 0.05
    assert row["shift"] == pytest.approx(expected, rel=tolerance)
    assert row["train_var"] / row["moving_var"] == pytest.approx(1.0, abs=SIGMAS * 2 * noisy)

    # recalibrated on the data it is measured on, BN's estimate and the probe's coincide
    recalibrate_bn(model, train_data)
    assert measure_variance_shift(model, train_data).iloc[0]["shift"] == pytest.approx(1.0, abs=1e-5)


class ChannelOffsets(nn.Module):
    """Adds a fixed mean to each channel."""

    def __init__(self, means: list[float]):
        super().__init__()
        self.register_buffer("means", torch.tensor(means))

    def forward(self, x):
        return x + self.means


@pytest.mark.parametrize(("kind", "rate"), [("bernoulli", 0.5), ("uniform", 1.0)])
def test_the_measured_input_mean_and_variance_give_the_theorys_shift_for_units_of_nonzero_mean(kind, rate):
    torch.manual_seed(0)
    batch, count = 4096, 32
    offsets = [2.0, -2.0, 1.0, -1.0, 3.0, -3.0, 0.5, -0.5]  # their plain mean is 0, their squares' is not
    model = nn.Sequential(ChannelOffsets(offsets), build_dropout(kind, rate), nn.BatchNorm1d(8, momentum=None))
    data = gaussian_batches(count, batch, 8, seed=7)
    train_statistics(model, data)
    row = measure_variance_shift(model, data).iloc[0]
    assert row["input_var"] == pytest.approx(1.0, rel=0.02)
    assert row["input_mean"] == pytest.approx(math.sqrt(np.mean(np.square(offsets))), rel=0.02)
    predicted = 1.0 / theory.shift_ratio(kind, rate, row["input_mean"], row["input_var"])
    # each channel's variance is estimated from 131,072 values (relative sd < 1%): 3% is many sds
    assert row["shift"] == pytest.approx(predicted, rel=0.03)
    zero_mean = 1.0 / theory.shift_ratio(kind, rate, 0.0, row["input_var"])
    assert row["shift"] > 1.5 * zero_mean


def test_after_recalibration_the_shift_on_fresh_data_is_within_sampling_error_of_one():
    torch.manual_seed(0)
    batch, count = 32768, 16
    model = dropout_before_bn("bernoulli", 0.5)
    train_statistics(model, gaussian_batches(count, batch, 8, seed=1))
    recalibrate_bn(model, gaussian_batches(count, batch, 8, seed=2))
    # two independent estimates of the same Gaussian variance
    tolerance = SIGMAS * 2 * relative_sd(3.0, batch, count)
    assert tolerance <= 0.02
    row = measure_variance_shift(model, gaussian_batches(count, batch, 8, seed=3)).iloc[0]
    assert row["shift"] == pytest.approx(1.0, abs=tolerance)


def image_batches(count: int, batch: int, seed: int, size: int = 28) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 1, size, size, generator=generator) for _ in range(count)]


def mlp_with_trained_statistics(position: str, images) -> nn.Module:
    torch.manual_seed(0)
    model = build_model("mlp", num_classes=10, in_channels=1, dropout={"kind": "bernoulli", "rate": 0.5},
                        position=position)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm1d):
            module.momentum = None
    train_statistics(model, images)
    return model


def test_dropout_at_the_head_leaves_every_bn_layer_unshifted():
    images = image_batches(16, 256, seed=4)
    head = measure_variance_shift(mlp_with_trained_statistics("head", images), images)
    assert len(head) == 2
    assert np.all(np.abs(head["shift"] - 1.0) <= 0.02)
    before_bn = measure_variance_shift(mlp_with_trained_statistics("before_bn", images), images)
    assert np.all(before_bn["shift"] > 1.5)  # theory: >= 1 / p = 2 with zero-mean units


class TwoBlocks(nn.Module):
    """Two BN layers, defined in the opposite order to the one the forward pass reaches them."""

    def __init__(self, dropout: float = 0.3):
        super().__init__()
        self.head_bn = nn.BatchNorm1d(6)
        self.first = nn.Linear(4, 5)
        self.hidden_bn = nn.BatchNorm1d(5)
        self.drop = build_dropout("bernoulli", dropout)
        self.second = nn.Linear(5, 6)

    def forward(self, x):
        x = torch.relu(self.hidden_bn(self.first(x)))
        return self.head_bn(self.second(self.drop(x)))


def trained_two_blocks(**kwargs) -> tuple[nn.Module, list[torch.Tensor]]:
    torch.manual_seed(0)
    model = TwoBlocks(**kwargs)
    batches = gaussian_batches(6, 32, 4, seed=5)
    train_statistics(model, batches)
    return model, batches


def test_rows_follow_the_forward_order_and_per_channel_rows_average_to_the_layer_rows():
    model, batches = trained_two_blocks()
    torch.manual_seed(1)
    layers = measure_variance_shift(model, batches)
    torch.manual_seed(1)
    channels = measure_variance_shift(model, batches, per_channel=True)
    assert list(layers.columns) == LAYER_COLUMNS
    assert list(channels.columns) == CHANNEL_COLUMNS
    assert layers["name"].tolist() == ["hidden_bn", "head_bn"]
    assert layers["layer"].tolist() == [0, 1]
    assert channels.groupby("layer")["channel"].apply(list).tolist() == [list(range(5)), list(range(6))]
    assert channels.groupby("layer")["name"].first().tolist() == ["hidden_bn", "head_bn"]
    means = channels.groupby("layer")[["moving_var", "real_var", "train_var", "input_var"]].mean()
    for column in means:
        np.testing.assert_allclose(layers[column], means[column], rtol=1e-12)
    for table in (layers, channels):
        ratio = table["real_var"] / table["moving_var"]
        np.testing.assert_allclose(table["shift"], np.maximum(ratio, 1.0 / ratio), rtol=1e-12)
    np.testing.assert_allclose(channels["moving_var"][:5], model.hidden_bn.running_var.double(), rtol=1e-7)


# scaled-down networks of four families (the same code paths as the paper's)
SMALL_NETWORKS = [("preresnet110", {"depth": 20}), ("densenet_bc100", {"depth": 16, "growth_rate": 4}),
                  ("small_cnn", {"channels": (4, 8), "hidden": 8}), ("mlp", {"hidden": 16, "depth": 3,
                                                                              "image_size": 16})]


def test_fed_by_dropout_marks_the_bn_layers_whose_input_a_dropout_returns():
    torch.manual_seed(0)
    batches = gaussian_batches(2, 16, 8, seed=8)
    assert measure_variance_shift(dropout_before_bn("bernoulli", 0.3), batches)["fed_by_dropout"].tolist() == [True]
    model, batches = trained_two_blocks()  # its dropout feeds a linear layer, not a BN
    assert measure_variance_shift(model, batches)["fed_by_dropout"].tolist() == [False, False]


@pytest.mark.parametrize("position", ["before_bn", "before_conv", "head"])
@pytest.mark.parametrize(("name", "kwargs"), SMALL_NETWORKS, ids=[name for name, _ in SMALL_NETWORKS])
def test_in_varshift_networks_each_before_bn_slot_feeds_the_bn_beside_it(name, kwargs, position):
    torch.manual_seed(0)
    model = build_model(name, in_channels=1, dropout={"kind": "bernoulli", "rate": 0.5}, position=position,
                        **kwargs)
    table = measure_variance_shift(model, image_batches(1, 4, seed=9, size=16))
    parents = {child: parent_name for parent_name, parent in model.named_modules() for child in parent.children()}
    modules = dict(model.named_modules())
    fed = table.loc[table["fed_by_dropout"], "name"]
    dropout_blocks = {parents[m] for m in model.modules() if isinstance(m, MultiplicativeNoise)}
    if position == "before_bn":
        assert len(fed) == len(dropout_blocks) > 0
        assert {parents[modules[bn]] for bn in fed} == dropout_blocks
    else:
        assert fed.empty


class ConvBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, kernel_size=3)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(self.conv(x))


def test_variances_are_the_cumulative_average_of_per_batch_unbiased_variances_over_batch_height_width():
    torch.manual_seed(0)
    model = ConvBN()
    generator = torch.Generator().manual_seed(6)
    # unequal sizes and scales: a pooled variance over all values would differ from the average
    batches = [scale * torch.randn(size, 3, 7, 7, generator=generator) + scale
               for size, scale in ((2, 1.0), (5, 3.0), (3, 0.5))]
    train_statistics(model, batches)
    table = measure_variance_shift(model, [(x, torch.zeros(len(x))) for x in batches], per_channel=True)
    with torch.no_grad():
        per_batch = [np.var(model.conv(x).double().numpy(), axis=(0, 2, 3), ddof=1) for x in batches]
    expected = np.mean(per_batch, axis=0)
    np.testing.assert_allclose(table["real_var"], expected, rtol=1e-9)
    np.testing.assert_allclose(table["train_var"], expected, rtol=1e-9)  # no dropout in front of the BN
    np.testing.assert_allclose(table["moving_var"], model.bn.running_var.double().numpy(), rtol=0)
    outputs = np.concatenate([model.conv(x).detach().double().numpy() for x in batches])
    pooled = np.var(outputs, axis=(0, 2, 3), ddof=1)
    assert not np.allclose(pooled, expected, rtol=1e-3)
    # the theory's c and v: over all values of the pass at once
    np.testing.assert_allclose(table["input_var"], pooled, rtol=1e-9)
    means = outputs.mean(axis=(0, 2, 3))
    np.testing.assert_allclose(table["input_mean"], means, rtol=1e-9)
    layer = measure_variance_shift(model, batches).iloc[0]
    assert layer["input_var"] == pytest.approx(pooled.mean(), rel=1e-9)
    assert layer["input_mean"] == pytest.approx(np.sqrt(np.mean(means**2)), rel=1e-9)


def snapshot(model: nn.Module) -> dict:
    return {
        "state": {key: (value, value.clone()) for key, value in model.state_dict(keep_vars=True).items()},
        "modes": {name: module.training for name, module in model.named_modules()},
        "momenta": {name: module.momentum for name, module in model.named_modules() if hasattr(module, "momentum")},
    }


def assert_untouched(model: nn.Module, before: dict) -> None:
    state = model.state_dict(keep_vars=True)
    assert state.keys() == before["state"].keys()
    for key, (tensor, copy) in before["state"].items():
        assert state[key] is tensor, f"{key} was replaced"
        assert torch.equal(tensor, copy), f"{key} changed"
        assert tensor.grad is None
    assert {name: module.training for name, module in model.named_modules()} == before["modes"]
    assert {name: m.momentum for name, m in model.named_modules() if hasattr(m, "momentum")} == before["momenta"]
    assert all(not module._forward_pre_hooks and not module._forward_hooks for module in model.modules())


def mixed_modes(model: TwoBlocks) -> TwoBlocks:
    model.train()
    model.hidden_bn.eval()
    model.second.eval()
    return model


def test_the_model_is_bit_identical_after_measuring():
    model, batches = trained_two_blocks()
    before = snapshot(mixed_modes(model))
    measure_variance_shift(model, batches)
    assert_untouched(model, before)


def test_measuring_leaves_the_global_rng_where_it_was():
    model, batches = trained_two_blocks()
    state = torch.get_rng_state()
    measure_variance_shift(model, batches)
    assert torch.equal(torch.get_rng_state(), state)


class FailsOnSecondPass:
    """Re-iterable batches whose second pass (the train-mode one) raises after two batches."""

    def __init__(self, batches):
        self.batches, self.passes = batches, 0

    def __iter__(self):
        self.passes += 1
        for index, x in enumerate(self.batches):
            if self.passes == 2 and index == 2:
                raise RuntimeError("loader failed")
            yield x


def test_the_model_is_bit_identical_when_a_pass_fails_midway():
    model, batches = trained_two_blocks()
    before = snapshot(mixed_modes(model))
    with pytest.raises(RuntimeError, match="loader failed"):
        measure_variance_shift(model, FailsOnSecondPass(batches))
    assert_untouched(model, before)
    with pytest.raises(ValueError, match="at least 2 values per channel"):
        measure_variance_shift(model, [*batches[:2], batches[2][:1], *batches[3:]])
    assert_untouched(model, before)


def test_batches_may_be_tuples_lists_or_bare_tensors_and_max_batches_takes_the_first():
    model, batches = trained_two_blocks()
    tables = []
    for form in (batches, [(x, x.sum(1)) for x in batches], [[x, None] for x in batches]):
        torch.manual_seed(2)
        tables.append(measure_variance_shift(model, form))
    for table in tables[1:]:
        assert table.equals(tables[0])
    torch.manual_seed(2)
    first_two = measure_variance_shift(model, batches, max_batches=2)
    torch.manual_seed(2)
    assert first_two.equals(measure_variance_shift(model, batches[:2]))
    assert not first_two.equals(tables[0])


# BN inputs rounded to 8 (bf16) or 11 (fp16) significant bits: relative rounding <= 2^-8 or 2^-11 per value
@pytest.mark.parametrize(("precision", "rtol"), [("bf16 model", 1e-2), ("fp16 model", 1e-3), ("bf16 autocast", 1e-2)])
def test_low_precision_models_and_autocast_are_measured_in_float64(precision, rtol):
    model, batches = trained_two_blocks(dropout=0.0)
    reference = measure_variance_shift(model, batches)
    if precision == "bf16 autocast":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            table = measure_variance_shift(model, batches)
    else:
        dtype = torch.bfloat16 if precision == "bf16 model" else torch.float16
        table = measure_variance_shift(model.to(dtype), [x.to(dtype) for x in batches])
    assert (table[["moving_var", "real_var", "train_var", "shift"]].dtypes == np.float64).all()
    np.testing.assert_allclose(table["real_var"], reference["real_var"], rtol=rtol)
    np.testing.assert_allclose(table["train_var"], reference["train_var"], rtol=rtol)


class WithUnusedBN(TwoBlocks):
    def __init__(self):
        super().__init__()
        self.spare_bn = nn.BatchNorm1d(3)


def test_bad_models_and_inputs_raise_value_errors_naming_the_problem():
    model, batches = trained_two_blocks()
    with pytest.raises(ValueError, match="never reached.*spare_bn"):
        measure_variance_shift(WithUnusedBN(), batches)
    with pytest.raises(ValueError, match="no BatchNorm"):
        measure_variance_shift(nn.Linear(4, 4), batches)
    model.head_bn = nn.BatchNorm1d(6, track_running_stats=False)
    with pytest.raises(ValueError, match="without running statistics.*head_bn"):
        measure_variance_shift(model, batches)
    model, batches = trained_two_blocks()
    with pytest.raises(ValueError, match="no batch"):
        measure_variance_shift(model, [])
    with pytest.raises(ValueError, match="no batch"):  # a generator is exhausted by the eval pass
        measure_variance_shift(model, (x for x in batches))
    with pytest.raises(ValueError, match="batch 1 is a str"):
        measure_variance_shift(model, [batches[0], "x"])
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match=f"max_batches must be .* got {bad!r}"):
            measure_variance_shift(model, batches, max_batches=bad)
