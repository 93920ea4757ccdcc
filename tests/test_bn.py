"""recalibrate_bn and the helpers shared with the probes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from varshift.bn import (
    batchnorm_layers,
    model_inputs,
    preserved_bn_buffers,
    preserved_modes,
    recalibrate_bn,
)
from varshift.dropout import build_dropout


class Failure(Exception):
    pass


def dropout_net(momenta=(0.1, 0.1)) -> nn.Sequential:
    """Linear -> dropout(0.5) -> BN -> ReLU -> Linear -> BN, with running statistics from a train pass."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), build_dropout("bernoulli", 0.5), nn.BatchNorm1d(4, momentum=momenta[0]),
                          nn.ReLU(), nn.Linear(4, 5), nn.BatchNorm1d(5, momentum=momenta[1]))
    with torch.no_grad():
        for x in shifted_batches((16, 16, 16)):
            model(x)
    return model


def shifted_batches(sizes, seed: int = 0) -> list[torch.Tensor]:
    """Batches of the given sizes whose means and scales differ from batch to batch."""
    generator = torch.Generator().manual_seed(seed)
    return [(index + 1.0) * torch.randn(size, 3, generator=generator) + 2.0 * index
            for index, size in enumerate(sizes)]


def first_bn_inputs(model: nn.Sequential, batches) -> list[np.ndarray]:
    """What the first BN sees with dropout off: the first Linear's output, in float64."""
    with torch.no_grad():
        return [model[0](x).double().numpy() for x in batches]


def test_running_stats_become_the_average_of_per_batch_means_and_unbiased_variances_with_dropout_off():
    model = dropout_net()
    batches = shifted_batches((7, 3, 12), seed=1)
    assert recalibrate_bn(model, [(x, None) for x in batches]) is model
    inputs = first_bn_inputs(model, batches)
    bn = model[2]
    np.testing.assert_allclose(bn.running_mean, np.mean([x.mean(0) for x in inputs], axis=0),
                               rtol=1e-5, atol=1e-6)
    # dropout on would double these variances
    np.testing.assert_allclose(bn.running_var, np.mean([x.var(0, ddof=1) for x in inputs], axis=0), rtol=1e-5)
    assert bn.num_batches_tracked.item() == model[5].num_batches_tracked.item() == 3


def test_with_equal_batches_the_running_variance_is_the_pooled_within_batch_variance():
    # For B batches of n values: running_var = sum_b sum_i (x_bi - m_b)^2 / (B (n - 1)), and the unbiased
    # variance of all the data adds the spread of the batch means m_b around the overall mean m:
    # var_all = (B (n - 1) running_var + n sum_b (m_b - m)^2) / (B n - 1), with running_mean = m.
    model = dropout_net()
    count, size = 4, 10
    batches = shifted_batches([size] * count, seed=2)
    recalibrate_bn(model, batches)
    inputs = first_bn_inputs(model, batches)
    data = np.concatenate(inputs)
    batch_means = np.stack([x.mean(0) for x in inputs])
    within = sum(((x - x.mean(0)) ** 2).sum(0) for x in inputs) / (count * (size - 1))
    bn = model[2]
    np.testing.assert_allclose(bn.running_mean, data.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.running_var, within, rtol=1e-5)
    between = size * ((batch_means - data.mean(0)) ** 2).sum(0)
    np.testing.assert_allclose(data.var(0, ddof=1), (count * (size - 1) * bn.running_var.double().numpy()
                                                     + between) / (count * size - 1), rtol=1e-5)
    assert not np.allclose(bn.running_var, data.var(0, ddof=1), rtol=0.1)  # the batches' means differ a lot


def modes_and_momenta(model: nn.Module) -> tuple[list[bool], list]:
    return ([module.training for module in model.modules()],
            [module.momentum for module in model.modules() if isinstance(module, nn.BatchNorm1d)])


def test_modes_momenta_and_parameters_come_back_and_max_batches_takes_the_first():
    model = dropout_net(momenta=(0.3, None))
    model.train()
    model[2].eval()
    model[1].train()
    before = modes_and_momenta(model)
    parameters = [p.detach().clone() for p in model.parameters()]
    batches = shifted_batches((5, 6, 7, 8), seed=3)
    recalibrate_bn(model, batches, max_batches=2)
    assert modes_and_momenta(model) == before
    assert all(torch.equal(p, q) and p.grad is None for p, q in zip(model.parameters(), parameters, strict=True))
    assert model[2].num_batches_tracked.item() == 2
    limited = model[2].running_var.clone()
    recalibrate_bn(model, batches[:2])
    assert torch.equal(model[2].running_var, limited)


def batches_failing_after(batches, count: int):
    for index, x in enumerate(batches):
        if index == count:
            raise Failure("loader failed")
        yield x


def test_a_failed_recalibration_keeps_the_old_statistics_modes_and_momenta():
    model = dropout_net(momenta=(0.3, None))
    model[4].eval()
    before = modes_and_momenta(model)
    buffers = {key: value.clone() for key, value in model.state_dict().items()}
    with pytest.raises(Failure):
        recalibrate_bn(model, batches_failing_after(shifted_batches((5, 5, 5)), 2))
    with pytest.raises(ValueError, match="no batch"):
        recalibrate_bn(model, [])
    assert modes_and_momenta(model) == before
    assert all(torch.equal(model.state_dict()[key], value) for key, value in buffers.items())


def test_recalibration_needs_a_bn_layer_and_skips_those_without_running_statistics():
    with pytest.raises(ValueError, match="no BatchNorm"):
        recalibrate_bn(nn.Sequential(nn.Linear(3, 3)), shifted_batches((4,)))
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, track_running_stats=False), nn.BatchNorm1d(4))
    recalibrate_bn(model, shifted_batches((4, 4)))
    assert model[1].running_var is None and model[2].num_batches_tracked.item() == 2
    with pytest.raises(ValueError, match="max_batches must be .* got 0"):
        recalibrate_bn(model, shifted_batches((4,)), max_batches=0)


class Custom(nn.BatchNorm2d):
    pass


def test_batchnorm_layers_finds_every_batchnorm_and_nothing_else():
    model = nn.Sequential(nn.BatchNorm1d(2), nn.Sequential(nn.BatchNorm2d(2), nn.InstanceNorm2d(2)),
                          nn.LayerNorm(2), nn.GroupNorm(1, 2), nn.BatchNorm3d(2), nn.SyncBatchNorm(2), Custom(2))
    assert [name for name, _ in batchnorm_layers(model)] == ["0", "1.0", "4", "5", "6"]


def test_preserved_modes_restores_every_flag_even_on_exceptions():
    model = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Dropout(), nn.BatchNorm1d(2)))
    model[1].eval()
    flags = [module.training for module in model.modules()]
    with pytest.raises(Failure), preserved_modes(model):
        model.train()
        raise Failure
    assert [module.training for module in model.modules()] == flags


def bn_buffers(layers) -> list[torch.Tensor]:
    return [getattr(bn, name) for _, bn in layers for name in ("running_mean", "running_var", "num_batches_tracked")]


def equal_values(tensors, copies) -> bool:
    return all(torch.equal(t, c) for t, c in zip(tensors, copies, strict=True))


@pytest.mark.parametrize("only_on_error", [False, True])
def test_preserved_bn_buffers_copies_back_into_the_same_tensors(only_on_error):
    model = dropout_net().train()
    layers = batchnorm_layers(model)
    buffers = bn_buffers(layers)
    x = shifted_batches((6,))[0]
    entry = [b.clone() for b in buffers]
    with torch.no_grad(), preserved_bn_buffers(layers, only_on_error=only_on_error):
        model(x)
    assert equal_values(buffers, entry) != only_on_error  # a successful block keeps its changes only if asked
    entry = [b.clone() for b in buffers]
    with pytest.raises(Failure), torch.no_grad(), preserved_bn_buffers(layers, only_on_error=only_on_error):
        model(x)
        raise Failure
    assert equal_values(buffers, entry)
    assert all(now is then for now, then in zip(bn_buffers(layers), buffers, strict=True))


def test_model_inputs_takes_x_from_tuples_lists_and_tensors():
    x = torch.ones(2, 3)
    inputs = list(model_inputs([(x, 0), [x, 1], x, (x,)], torch.device("cpu")))
    assert len(inputs) == 4 and all(item is x for item in inputs)
    assert len(list(model_inputs([x] * 5, torch.device("cpu"), max_batches=3))) == 3
    with pytest.raises(ValueError, match="batch 0 is a dict"):
        list(model_inputs([{"x": x}], torch.device("cpu")))
    with pytest.raises(ValueError, match="got 2.0"):
        model_inputs([x], torch.device("cpu"), max_batches=2.0)
