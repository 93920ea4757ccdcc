"""The theory set against every BN layer: Eq. 8 with the training-time c', v' of the dropout's input at each fed layer
of a trained network, the chain factor beside it, and Eq. 14 with the measured correlation through a conv."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from test_probes import train_statistics
from torch import nn

from varshift import theory
from varshift.analysis.decomposition import decompose
from varshift.noise_geometry import filter_alignment, uniform_layout
from varshift.probes import measure_variance_shift

SIGMAS = 4.0


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, fashion_root):
    """A small CNN with Bernoulli 0.5 before each of its two conv BNs, trained 8 epochs on 1,000 images, the last five
    at 1 % of the learning rate: 50 batches, after which the moving averages (momentum 0.1) keep 0.9^50 = 0.5 % of
    what the weights of the fast epochs gave them."""
    from hydra import compose, initialize_config_module

    from varshift.config import register_schema, to_plain, validate
    from varshift.training import run

    register_schema()
    overrides = ["scale=smoke", f"dataset.root={fashion_root}", "dataset.download=false", "trainer.device=cpu",
                 "trainer.threads=1", "model.kwargs.channels=[8,16]", "model.kwargs.hidden_bn=false",
                 "dataset.subset=1000", "trainer.batch_size=100", "trainer.epochs=8", "optim.schedule=multistep",
                 "optim.milestones=[0.375]", "optim.gamma=0.01", "probe.batches=null", "probe.per_channel=true"]
    with initialize_config_module(config_module="varshift.conf", version_base="1.3"):
        cfg = validate(to_plain(compose("config", overrides=overrides)))
    run_dir = tmp_path_factory.mktemp("eq8") / "run"
    run(cfg, run_dir)
    return run_dir


def final_rows(run_dir) -> pd.DataFrame:
    variance = pd.read_csv(run_dir / "variance.csv")
    return variance[variance["stage"] == "final"].reset_index(drop=True)


def test_eq8_with_the_training_time_input_of_the_dropout_gives_every_fed_layers_moving_variance(trained_run):
    """Within 1 %: the moving average's own sampling error is 0.3 % (the per-batch variance of the second layer's
    input varies by 1.3 % between batches of 100 images; momentum 0.1 averages about 19 of them)."""
    rows = final_rows(trained_run)
    fed = rows[rows["feed"] == "direct"]
    assert list(fed["name"]) == ["features.0.bn", "features.1.bn"]
    # Eq. 8 from the dropout's input: v' + s2 (c'^2 + v'), with clean_var = v' for a direct feed
    s2 = theory.noise_variance("bernoulli", 0.5)
    eq8 = fed["source_var"] + s2 * (fed["source_mean"] ** 2 + fed["source_var"])
    np.testing.assert_allclose(fed["clean_var"], fed["source_var"], rtol=1e-9)
    np.testing.assert_allclose(eq8, fed["clean_var"] + fed["noise_predicted"], rtol=1e-6)
    np.testing.assert_allclose(fed["moving_var"], eq8, rtol=0.01)
    # the statistic is Eq. 8's factor times the chain factor: 1 at the first fed layer, above 1 after it
    parts = decompose(fed.assign(run_dir="run"))
    np.testing.assert_allclose(parts["ratio"], parts["theory"] * parts["chain"] * (1 + parts["moving_error"] / 100),
                               rtol=1e-9)
    assert parts["chain"].iloc[0] == pytest.approx(1.0, abs=0.01)
    assert parts["chain"].iloc[1] > 1.05


def test_the_per_channel_file_averages_to_the_layer_rows(trained_run):
    channels = pd.read_csv(trained_run / "variance_channels.csv")
    rows = final_rows(trained_run)
    final = channels[channels["stage"] == "final"]
    means = final.groupby("layer")[["moving_var", "real_var", "noise_predicted", "clean_var"]].mean()
    for column in means:
        np.testing.assert_allclose(rows[column], means[column], rtol=1e-9)


def correlated_batches(count: int, size: int, channels: int, mean: float, var: float, rho: float,
                       seed: int) -> list[torch.Tensor]:
    """Feature maps whose channels at one position have mean ``mean``, variance ``var`` and pairwise correlation
    ``rho`` (a factor shared by the channels of one position), independent across positions and samples."""
    generator = torch.Generator().manual_seed(seed)

    def batch():
        shared = torch.randn(size, 1, 8, 8, generator=generator)
        own = torch.randn(size, channels, 8, 8, generator=generator)
        return mean + math.sqrt(var) * (math.sqrt(rho) * shared + math.sqrt(1 - rho) * own)

    return [batch() for _ in range(count)]


def test_eq14_with_the_measured_correlation_gives_the_moving_variance_through_a_conv():
    """Dropout(0.3) -> 1x1 conv of 16 inputs -> BN, inputs of mean 0.5, variance 1 and correlation 0.5 across the
    fan-in: Eq. 14 per filter with the true c, v, rho and each filter's D is exact. The BN's cumulative moving variance
    averages N = 40 x 128 x 64 independent values per channel; its relative sd is at most sqrt((k - 1) / N), k the
    kurtosis of one output, below that of one noisy input m x: E[m^4] / E[m^2]^2 x 3 (1 + c^2 / v)^2 = 3 / 0.7 x 1.5625.
    The probe's rho' and its Eq. 14 from the measured c', v', rho' agree within the same tolerance."""
    rate, mean, var, rho = 0.3, 0.5, 1.0, 0.5
    torch.manual_seed(0)
    model = nn.Sequential(nn.Dropout(rate), nn.Conv2d(16, 8, 1, bias=False), nn.BatchNorm2d(8, momentum=None))
    batches = correlated_batches(40, 128, 16, mean, var, rho, seed=1)
    train_statistics(model, batches)
    row = measure_variance_shift(model, batches).iloc[0]
    assert (row["feed"], row["sources"]) == ("weight", "0 via 1")
    s2 = theory.noise_variance("bernoulli", rate)
    filters = filter_alignment(model[1], uniform_layout(model[1], s2, shared=False, across_channels=False))
    train = np.mean(filters.norm2 * theory.weighted_train_variance(s2, mean, var, filters.d_cos2, rho))
    test = np.mean(filters.norm2 * theory.weighted_test_variance(var, filters.d_cos2, rho))
    tolerance = SIGMAS * math.sqrt((3 / (1 - rate) * (1 + mean**2 / var) ** 2 - 1) / (40 * 128 * 64))
    assert row["moving_var"] == pytest.approx(train, rel=tolerance)
    assert row["real_var"] == pytest.approx(test, rel=tolerance)
    assert row["shift"] == pytest.approx(train / test, rel=2 * tolerance)
    assert row["rho"] == pytest.approx(rho, abs=tolerance)
    assert row["clean_var"] + row["noise_predicted"] == pytest.approx(row["moving_var"], rel=2 * tolerance)
    assert row["noise_predicted"] == pytest.approx(row["noise_measured"], rel=2 * tolerance)
    # Eq. 14 as the paper writes it, with the layer's |w|^2-weighted D, is the channel mean of the per-filter form
    assert theory.shift_ratio_weighted("bernoulli", rate, mean, var, 1, row["d_cos2"], rho) == pytest.approx(
        test / train, rel=1e-9)


def test_decomposition_refuses_runs_without_the_theorys_terms():
    old = pd.DataFrame({"run_dir": ["r"], "stage": ["final"], "layer": [0], "name": ["bn"], "moving_var": [2.0],
                        "real_var": [1.0]})
    with pytest.raises(ValueError, match="written by an older varshift"):
        decompose(old)


def test_eq14_counts_only_the_taps_that_read_the_map_not_the_padding():
    """Dropout(0.5) -> 3x3 conv, padding 1, on 4x4 maps of independent inputs (mean 1, variance 1): at the border a
    filter reads fewer inputs, and the noise it adds is s2 (c^2 + v) sum_t w_t^2 f_t, f_t the share of positions at
    which tap t reads the map (here 0.69 on average). The measured noise term averages 20 x 128 x 16 values per
    channel: relative sd about sqrt(k / N) with k <= 3 / (1 - q) x (1 + c^2 / v)^2 = 24 for one noisy input."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4, momentum=None))
    generator = torch.Generator().manual_seed(2)
    batches = [1.0 + torch.randn(128, 3, 4, 4, generator=generator) for _ in range(20)]
    train_statistics(model, batches)
    row = measure_variance_shift(model, batches).iloc[0]
    tolerance = SIGMAS * math.sqrt(24 / (20 * 128 * 16))
    assert row["noise_predicted"] == pytest.approx(row["noise_measured"], rel=tolerance)
    unpadded = np.mean(filter_alignment(model[1], uniform_layout(model[1], 1.0, False, False)).norm2) * 2.0
    assert unpadded > (1 + 3 * tolerance) * row["noise_measured"]  # Eq. 14 over all nine taps: far too much
