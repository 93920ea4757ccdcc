"""varshift.audit on real torchvision and varshift models: the dropout sites it finds, the BN layers they
shift, the prediction against the measurement, eval-mode dropout, and the varshift-audit command."""

from __future__ import annotations

import copy
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from varshift import theory
from varshift.audit import audit
from varshift.audit.cli import main
from varshift.audit.predict import CASE_A, EQ14
from varshift.audit.tables import DIRECT, INDIRECT, SAFE, SHIFTING
from varshift.audit.targets import TargetError, load_target, parse_kwargs
from varshift.bn import recalibrate_bn
from varshift.dropout import MultiplicativeNoise
from varshift.models import MODEL_NAMES, build_model

SIGMAS = 4.0  # tolerances are this many standard deviations of the estimate (fixed seeds)
TINY = {"input_shape": (3, 32, 32), "batch_size": 2, "num_batches": 1}
SMALL_SIZES = {
    "preresnet110": {"depth": 11},
    "resnext29_8x64d": {"depth": 11, "cardinality": 2, "base_width": 2, "widen_factor": 1},
    "wrn28_10": {"depth": 10, "widen_factor": 1},
    "densenet_bc100": {"depth": 10, "growth_rate": 4},
    "small_cnn": {"channels": (4, 8), "hidden": 8},
    "mlp": {"hidden": 8, "image_size": 16},
    "preresnet14_w8": {"depth": 8},
    "resnet200": {"layers": [1, 1, 1, 1], "width": 4},
    "resnext101_64x4d": {"layers": [1, 1, 1, 1], "width": 4, "cardinality": 2, "base_width": 32},
    "senet154": {"layers": [1, 1, 1, 1], "width": 4, "cardinality": 2, "base_width": 32},
    "resnet50": {"layers": [1, 1, 1, 1], "width": 4},
}


def feeds_of(report, site: str):
    rows = report.feeds[report.feeds["site"] == site]
    return rows[rows["bn"] != ""]


def test_densenet121_dropout_feeds_every_later_bn_of_its_block_directly():
    model = torchvision.models.densenet121(drop_rate=0.2)
    report = audit(model, input_shape=(3, 64, 64), batch_size=2, num_batches=1)
    blocks = [(index, getattr(model.features, f"denseblock{index}")) for index in range(1, 5)]
    expected = {}
    for index, block in blocks:
        layers = list(block.named_children())
        closing = f"features.transition{index}.norm" if index < 4 else "features.norm5"
        first_width = layers[0][1].norm1.num_features
        for position, (name, layer) in enumerate(layers):
            site = f"features.denseblock{index}.{name}:F.dropout#0"
            start = first_width + position * layer.conv2.out_channels
            channels = f"{start}:{start + layer.conv2.out_channels}"
            later_bns = [f"features.denseblock{index}.{later}.norm1" for later, _ in layers[position + 1:]]
            expected[site] = dict.fromkeys([*later_bns, closing], channels)
    assert list(report.sites["site"]) == list(expected)
    assert set(report.sites["verdict"]) == {SHIFTING}
    for site, bns in expected.items():
        rows = feeds_of(report, site)
        assert dict(zip(rows["bn"], rows["channels"], strict=True)) == bns
    assert set(report.feeds["path"]) == {DIRECT} and set(report.feeds["prediction"]) == {CASE_A}
    assert (report.feeds["predicted_shift"] > 1.0).all()
    # Uout at beta 0.1 has s2 = 1/300 against 0.25 for Bernoulli 0.2: a far smaller predicted shift
    assert (report.feeds["uout_shift"] < report.feeds["predicted_shift"]).all()
    assert report.exit_code == 1 and report.eval_noise is None


@pytest.mark.parametrize("name", ["vgg11_bn", "mobilenet_v2", "efficientnet_b0"])
def test_torchvision_classifier_dropout_is_safe(name):
    model = getattr(torchvision.models, name)()
    report = audit(model, **TINY)
    dropouts = {f"classifier.{index}" for index, module in enumerate(model.classifier)
                if isinstance(module, nn.Dropout)}
    classifier = report.sites[report.sites["site"].isin(dropouts)]
    assert set(classifier["site"]) == dropouts and set(classifier["verdict"]) == {SAFE}
    assert (classifier["bn_layers"] == 0).all()
    assert report.eval_noise is None


def test_efficientnet_stochastic_depth_shifts_the_next_blocks_bn_through_its_convs():
    model = torchvision.models.efficientnet_b0()
    report = audit(model, **TINY)
    residual = {f"{name}.stochastic_depth" for name, module in model.named_modules()
                if hasattr(module, "use_res_connect") and module.use_res_connect}
    depth = report.sites[report.sites["layer"] == "StochasticDepth(row)"]
    assert set(depth["site"]) == residual
    assert ((depth["verdict"] == SHIFTING) == (depth["rate"] > 0)).all()
    shifting_feeds = report.feeds[report.feeds["site"].isin(depth["site"]) & (report.feeds["verdict"] == SHIFTING)]
    assert len(shifting_feeds) and set(shifting_feeds["path"]) == {INDIRECT}
    # stochastic depth reaches the next block's BN through residual adds and the expansion conv: a linear path
    assert set(shifting_feeds["prediction"]) == {EQ14} and (shifting_feeds["predicted_shift"] > 1.0).all()
    assert report.exit_code == 1
    # a dropped residual branch cannot move after the last BN: its remedies are BN recalibration and Uout's noise
    assert shifting_feeds["remedy"].str.startswith("varshift.bn.recalibrate_bn after training").all()
    assert not shifting_feeds["remedy"].str.contains("move the dropout").any()
    assert "or scale the residual branch by 1 + U(-0.1, 0.1) per sample" in shifting_feeds["remedy"].iloc[0]


class ForgetfulDropout(nn.Module):
    """F.dropout without training=self.training: it keeps dropping in eval mode."""

    def __init__(self, remember: bool = False):
        super().__init__()
        self.remember = remember

    def forward(self, x):
        return F.dropout(x, 0.5, self.training) if self.remember else F.dropout(x, 0.5)


def forgetful_model(remember: bool) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), ForgetfulDropout(remember), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Flatten(), nn.Linear(4 * 6 * 6, 2))


def test_functional_dropout_left_on_in_eval_mode_is_named():
    model = forgetful_model(remember=False)
    rng = torch.get_rng_state()
    report = audit(model, input_shape=(3, 8, 8), batch_size=4, num_batches=2)
    assert report.eval_noise is not None
    assert (report.eval_noise.module, report.eval_noise.layer) == ("1", "ForgetfulDropout")
    assert report.exit_code == 1
    feeds = feeds_of(report, "1:F.dropout#0")
    assert list(feeds["bn"]) == ["2"] and list(feeds["path"]) == [DIRECT]
    assert torch.equal(torch.get_rng_state(), rng), "the audit's forwards drew from the caller's RNG"


def test_functional_dropout_that_follows_the_mode_is_not_flagged_in_eval():
    report = audit(forgetful_model(remember=True), input_shape=(3, 8, 8), batch_size=4, num_batches=1)
    assert report.eval_noise is None
    assert list(report.sites["verdict"]) == [SHIFTING]


class DropPath(nn.Module):
    """timm's DropPath: a per-sample Bernoulli mask on a residual branch, scaled by 1 / keep."""

    def __init__(self, drop_prob: float):
        super().__init__()
        self.drop_prob, self.scale_by_keep = drop_prob, True

    def forward(self, x):
        if not self.training:
            return x
        keep = 1.0 - self.drop_prob
        return x * x.new_empty(x.shape[0], 1, 1, 1).bernoulli_(keep).div_(keep)


class ResidualThenAlpha(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.drop_path = DropPath(0.3)
        self.bn = nn.BatchNorm2d(4)
        self.alpha = nn.AlphaDropout(0.2)
        self.bn_after_alpha = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn_after_alpha(self.alpha(self.bn(x + self.drop_path(self.conv(x)))))


def test_drop_path_and_alpha_dropout_are_sites_with_their_noise():
    report = audit(ResidualThenAlpha(), input_shape=(4, 8, 8), batch_size=4, num_batches=1)
    sites = report.sites.set_index("site")
    assert list(sites.index) == ["drop_path", "alpha"]
    assert set(sites["verdict"]) == {SHIFTING}
    drop_path = feeds_of(report, "drop_path").iloc[0]
    assert (drop_path["bn"], drop_path["path"]) == ("bn", INDIRECT)  # the residual add lies between
    assert drop_path["noise_variance"] == pytest.approx(0.3 / 0.7)
    alpha = feeds_of(report, "alpha").iloc[0]
    assert (alpha["bn"], alpha["path"]) == ("bn_after_alpha", DIRECT)
    assert math.isnan(alpha["predicted_shift"])  # no closed form for alpha dropout


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_varshift_models_shift_at_every_slot_before_bn_and_conv_and_never_at_the_head(name):
    dropout = {"kind": "bernoulli", "rate": 0.5}
    for position in ("before_bn", "before_conv", "head"):
        model = build_model(name, in_channels=3, dropout=dropout, position=position, **SMALL_SIZES[name])
        report = audit(model, input_shape=(3, 16, 16), batch_size=2, num_batches=1)
        slots = [module for module in model.modules() if isinstance(module, MultiplicativeNoise)]
        assert len(report.sites) == len(slots) > 0, position
        verdicts = set(report.sites["verdict"])
        assert verdicts == ({SAFE} if position == "head" else {SHIFTING}), position
        per_site_paths = report.feeds.groupby("site")["path"].agg(set)
        if position == "before_bn":  # Dropout-(a): each slot feeds its block's BN itself
            assert all(DIRECT in paths for paths in per_site_paths), per_site_paths
        if position == "before_conv":  # Dropout-(b): a conv lies between every slot and its BN
            assert set(report.feeds["path"]) == {INDIRECT}
        assert report.exit_code == (0 if position == "head" else 1)


def trained_running_stats(model: nn.Module, batches) -> nn.Module:
    """BN running statistics as training leaves them: the average over batches in train mode, dropout on."""
    bns = [module for module in model.modules() if isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    with torch.no_grad():
        for x in batches:
            model(x)
    for bn in bns:
        bn.momentum = 0.1
    return model.eval()


def test_prediction_matches_the_measured_shift_and_recalibration_removes_it():
    torch.manual_seed(0)
    model = build_model("small_cnn", in_channels=1, dropout={"kind": "bernoulli", "rate": 0.5},
                        position="before_bn", channels=(8,), hidden=16)
    generator = torch.Generator().manual_seed(1)
    batches = [(torch.randn(16, 1, 16, 16, generator=generator), torch.zeros(16)) for _ in range(4)]
    trained_running_stats(model, [x for x, _ in batches])
    state = {key: value.clone() for key, value in model.state_dict().items()}

    report = audit(model, batches, num_batches=4)

    first = feeds_of(report, "features.0.drop_before_bn").iloc[0]
    assert (first["bn"], first["path"], first["prediction"]) == ("features.0.bn", DIRECT, CASE_A)
    # moving_var differs from its expectation only through the sampled Bernoulli mask: relative standard error
    # sqrt(q / (1 - q) * kurtosis / n) = sqrt(3 / n) at q = 0.5 for n = 4 * 16 * 16 * 16 values per channel
    values_per_channel = 4 * 16 * 16 * 16
    tolerance = 5 * math.sqrt(3 / values_per_channel)
    assert first["predicted_shift"] > 2.0  # s2 = 1: Var_train = 2 v + c^2
    assert first["measured_shift"] == pytest.approx(first["predicted_shift"], rel=tolerance)
    assert first["recalibrated_shift"] == pytest.approx(1.0, abs=1e-4)
    assert report.from_data and report.measured and report.exit_code == 1
    assert all(torch.equal(value, state[key]) for key, value in model.state_dict().items())
    assert not model.training


def test_cli_writes_the_tables_and_gates_on_the_shift(tmp_path, capsys):
    small = "small_cnn:channels=(4,),hidden=8"
    args = ["--batches", "1", "--batch-size", "2", "--out"]
    assert main([f"{small},position=before_bn", *args, str(tmp_path / "bn")]) == 1
    out = capsys.readouterr().out
    assert "variance shift found (exit 1)" in out and "features.0.drop_before_bn" in out
    markdown = (tmp_path / "bn" / "audit.md").read_text()
    assert "| features.0.drop_before_bn" in markdown and "features.0.bn" in markdown
    lines = (tmp_path / "bn" / "audit.csv").read_text().splitlines()
    assert lines[0].startswith("site,layer,rate,noise_variance,verdict,bn,")
    assert len(lines) == 1 + 2  # the conv block's and the hidden FC's slot, one BN each
    assert main([f"{small},position=head", *args, str(tmp_path / "head")]) == 0
    assert main(["torchvision.models:resnet18", "--input-shape", "3,32,32", "--batches", "1"]) == 0
    assert "no variance shift (exit 0)" in capsys.readouterr().out


@pytest.mark.parametrize("target, extra, message", [
    ("no_such_module_xyz:build", [], "cannot be imported"),
    ("torchvision.models:no_such_builder", [], "has no callable"),
    ("torchvision.models:resnet18:depth=", [], "cannot be read"),
    ("torchvision.models:resnet18:num_classes=ten", [], "failed"),
    ("small_cnn:position=sideways", [], "position"),
    ("densenet", [], "neither a varshift model name"),
    ("torchvision.models:resnet18", ["--input-shape", "5,16,16"], "set --input-shape"),
])
def test_cli_bad_target_is_one_clear_line_and_exit_2(target, extra, message, capsys):
    assert main([target, "--batches", "1", "--batch-size", "2", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_cli_help_explains_the_exit_status(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "Exit status: 0" in capsys.readouterr().out


def test_target_kwargs_are_literals_or_bare_words():
    assert parse_kwargs("drop_rate=0.2, channels=(4, 8), position=before_bn, flag=True") == {
        "drop_rate": 0.2, "channels": (4, 8), "position": "before_bn", "flag": True}
    with pytest.raises(TargetError, match="cannot be read"):
        parse_kwargs("0.2")
    target = load_target("mlp:position=before_bn,hidden=8,dataset=cifar10")
    assert target.input_shape == (3, 32, 32)
    assert sum(isinstance(module, MultiplicativeNoise) for module in target.model.modules()) == 2


# -- the command line on the user's own code and data --

MODEL_FILE = """\
from torch import nn

if FAIL_ON_IMPORT:
    raise ImportError("a dependency of this file is missing")


class Asserting(nn.Module):
    def forward(self, x):
        assert x.shape[1] == 1, "expects grey images"
        return x


def make(width=4):
    net = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.Dropout(0.5), nn.BatchNorm2d(width), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 2))
    net.input_shape = (3, 8, 8)
    return net


def broken():
    raise RuntimeError("CUDA out of memory")


def asserting():
    return Asserting()


def bad_shape():
    net = make()
    net.input_shape = "3x8x8"
    return net
"""
TINY_ARGS = ["--batches", "1", "--batch-size", "4"]


@pytest.fixture
def model_files(tmp_path, monkeypatch):
    """mymodel.py in the current folder and models/netfile.py below it (whose import fails with ``broken_import``)."""
    (tmp_path / "mymodel.py").write_text("FAIL_ON_IMPORT = False\n" + MODEL_FILE)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "netfile.py").write_text("FAIL_ON_IMPORT = False\n" + MODEL_FILE)
    (tmp_path / "models" / "broken_import.py").write_text("FAIL_ON_IMPORT = True\n" + MODEL_FILE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    for name in ("mymodel", "netfile", "broken_import"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    return tmp_path


def test_cli_audits_a_module_of_the_current_folder_and_a_python_file(model_files, capsys):
    assert main(["mymodel:make", *TINY_ARGS]) == 1
    assert main(["models/netfile.py:make:width=3", *TINY_ARGS]) == 1
    out = capsys.readouterr().out
    assert out.count("input 3x8x8") == 2 and out.count("variance shift found (exit 1)") == 2
    assert "remedy for the 1 dropout site(s)" in out and "move the dropout after the last BN" in out


@pytest.mark.parametrize("target, stage", [
    ("mymodel:broken", "building the model mymodel:broken() failed: RuntimeError: CUDA out of memory"),
    ("models/netfile.py:asserting", "the forward pass of the model on inputs of shape 4x3x224x224 failed: "
                                    "AssertionError: expects grey images; set --input-shape"),
    ("mymodel:bad_shape", "the model's input_shape = '3x8x8' is not an input shape"),
    ("models/broken_import.py:make", "importing models/broken_import.py failed: ImportError: a dependency of this "
                                     "file is missing"),
])
def test_cli_a_failure_of_the_users_code_is_exit_2_in_one_line_naming_the_stage(model_files, capsys, target, stage):
    """Exit status 1 means "shift found" to a CI gate: a crash of the model's own code must never read as that."""
    assert main([target, *TINY_ARGS]) == 2
    err = capsys.readouterr().err
    assert err == f"varshift-audit: error: {target}: {stage}" + err.split(stage, 1)[1] and err.count("\n") == 1


def test_cli_data_predicts_from_real_images_and_measures_the_shift(model_files, fashion_root, monkeypatch, capsys):
    from PIL import Image

    monkeypatch.setenv("VARSHIFT_DATA", str(fashion_root))
    assert main(["small_cnn:position=before_bn,channels=(4,),hidden=8", "--data", "fashion_mnist", *TINY_ARGS,
                 "--threads", "1"]) == 1
    out = capsys.readouterr().out
    assert "input 1x28x28, 1 data batch(es) of 4" in out and "measured_shift" in out and "recalibrated_shift" in out
    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (model_files / "images" / label).mkdir(parents=True)
        for index in range(3):
            Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)).save(
                model_files / "images" / label / f"{index}.png")
    assert main(["mymodel:make", "--data", "images", "--input-shape", "3,8,8", *TINY_ARGS]) == 1
    out = capsys.readouterr().out
    assert "input 3x8x8, 1 data batch(es) of 4" in out and "measured_shift" in out
    assert main(["mymodel:make", "--data", "models", *TINY_ARGS]) == 2
    assert "--data models: not a folder of class folders of images" in capsys.readouterr().err


def test_cli_help_answers_without_torch():
    code = ("import sys\nfrom varshift.audit.cli import main\ntry:\n    main(['--help'])\n"
            "except SystemExit:\n    pass\nprint(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "--data DATASET" in result.stdout and "--threads N" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "[]"


def zero_sum_filter_model() -> nn.Module:
    """Dropout(0.5) -> a 1x1 conv whose one filter sums to zero (D = d cos^2 = 0) -> BN2d."""
    model = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(4, 1, 1, bias=False), nn.BatchNorm2d(1))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([1.0, -1.0, 2.0, -2.0]).reshape(1, 4, 1, 1))
    return model


def correlated_inputs(count: int, seed: int) -> list[torch.Tensor]:
    """Four channels of variance 1, mean 0 and pairwise correlation 0.5 at each position, independent elsewhere."""
    generator = torch.Generator().manual_seed(seed)
    return [math.sqrt(0.5) * (torch.randn(64, 1, 8, 8, generator=generator)
                              + torch.randn(64, 4, 8, 8, generator=generator)) for _ in range(count)]


def test_a_conv_behind_the_dropout_can_shift_more_than_case_a_and_the_audit_gives_eq14_not_a_bound():
    """Eq. 14 at D = 0, rho = 0.5, s2 = 1: (v - v rho) / (v + s2 v - v rho) = 0.5 / 1.5, the statistic 3.0; case (a)
    on the dropout's own output says 1 + s2 = 2.0, so it bounds nothing here. The audit's prediction estimates the
    conv output's test variance and the noise term from N = 4 x 64 x 64 values, each to a relative sd of about
    sqrt(2 / N): the statistic to sqrt(2) x sqrt(2 / N) = 1.6 %; the measured shift (running statistics from
    train-mode passes over the same batches) to the same."""
    torch.manual_seed(0)
    model = zero_sum_filter_model()
    batches = correlated_inputs(4, seed=1)
    trained_running_stats(model, batches)
    report = audit(model, batches, num_batches=4)
    feed = feeds_of(report, "0").iloc[0]
    tolerance = SIGMAS * math.sqrt(2) * math.sqrt(2 / (4 * 64 * 64))
    assert (feed["bn"], feed["path"], feed["prediction"]) == ("2", INDIRECT, EQ14)
    assert feed["predicted_shift"] == pytest.approx(3.0, rel=tolerance)
    assert feed["joint_predicted_shift"] == feed["predicted_shift"]  # the only site
    assert feed["measured_shift"] == pytest.approx(3.0, rel=2 * tolerance)
    case_a_on_the_dropout_output = 1.0 + theory.noise_variance("bernoulli", 0.5)
    assert feed["measured_shift"] > case_a_on_the_dropout_output + 0.5
    assert "bound" not in report.feeds["prediction"].str.cat() + report.feeds["remedy"].str.cat()


def test_efficientnet_joint_prediction_of_the_stochastic_depths_that_reach_one_bn_is_the_measured_shift():
    """features.7.0.block.0.1 is reached by the stochastic depth of blocks 6.1-6.3 through the residual stream and
    the expansion conv, and by each through the later blocks too. The measured value: the BN input's variance with
    those three on (the modules in train mode, everything else in eval mode, BN statistics re-estimated on the sample
    batches as the audit does for an untrained model) over 48 draws of their masks, against the variance with them
    off. 1,536 masks per site give the noise term a relative sd of about 2 / sqrt(1536) = 5 % (a Bernoulli mask
    at p <= 0.19 has E[(m - 1)^4] / s2^2 < 4): 2 % of the statistic; the joint prediction is first order in the
    noise. Within 10 %; the per-site values are each far below it."""
    torch.manual_seed(0)
    model = torchvision.models.efficientnet_b0()
    shape, bn = (3, 64, 64), "features.7.0.block.0.1"
    report = audit(model, input_shape=shape, batch_size=8, num_batches=2, seed=0)
    feeds = report.feeds[report.feeds["bn"] == bn]
    sites = list(feeds["site"])
    assert sites == [f"features.6.{block}.stochastic_depth" for block in (1, 2, 3)]
    assert any("re-estimated on the sample batches" in note for note in report.notes)
    generator = torch.Generator().manual_seed(0)
    inputs = [torch.randn(8, *shape, generator=generator) for _ in range(2)]
    calibrated = recalibrate_bn(copy.deepcopy(model), inputs).eval()
    modules = dict(calibrated.named_modules())

    def bn_input_variance(noise: bool, draws: int) -> float:
        values = []
        handle = modules[bn].register_forward_pre_hook(
            lambda module, args: values.append(args[0].double().var(dim=(0, 2, 3), correction=1)))
        for site in sites:
            modules[site].train(noise)
        with torch.no_grad():
            for _ in range(draws):
                for x in inputs:
                    calibrated(x)
        handle.remove()
        return float(torch.stack(values).mean(0).mean())

    measured = bn_input_variance(True, 48) / bn_input_variance(False, 1)
    joint = feeds["joint_predicted_shift"]
    assert joint.nunique() == 1 and joint.iloc[0] == pytest.approx(measured, rel=0.10)
    assert measured > 1.1 and (feeds["predicted_shift"] - 1 < (measured - 1) / 2).all()


def test_an_all_zero_site_output_is_not_taken_for_a_direct_feed():
    """Dropout of an input the ReLU zeroes -> bias-free conv -> BN: the BN input is zeros too, equal to the site's
    output, but a conv lies between (small networks on tiny inputs hit this at random)."""
    model = nn.Sequential(nn.ReLU(), nn.Dropout(0.5), nn.Conv2d(2, 2, 1, bias=False), nn.BatchNorm2d(2))
    report = audit(model, batches=[-torch.ones(2, 2, 4, 4)], num_batches=1)
    assert list(report.feeds["path"]) == [INDIRECT]
