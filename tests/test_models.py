"""The model zoo: paper parameter counts, where the dropout slots sit, eval equivalence, dtypes, bad input."""

import math

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from varshift.dropout import BernoulliDropout, GaussianDropout, MultiplicativeNoise, UniformDropout
from varshift.models import FAMILIES, MODEL_NAMES, POSITIONS, build_model, family_parameters
from varshift.paths import conf_file, conf_options

PAPER_MODELS = ("preresnet110", "resnext29_8x64d", "wrn28_10", "densenet_bc100")
DROPOUT = {"kind": "bernoulli", "rate": 0.5, "channelwise": False}
BatchNorm = nn.modules.batchnorm._BatchNorm

# The paper's Table 2 (PreResNet: the exact bearpaw count), and the BN layers of its Figure 4 curves.
PAPER_PARAMETERS = {
    ("preresnet110", 10): 1_703_258, ("preresnet110", 100): 1_726_388,
    ("resnext29_8x64d", 10): 34.43e6, ("resnext29_8x64d", 100): 34.52e6,
    ("wrn28_10", 10): 36.48e6, ("wrn28_10", 100): 36.54e6,
    ("densenet_bc100", 10): 0.77e6, ("densenet_bc100", 100): 0.80e6,
}
PAPER_BN_LAYERS = {"preresnet110": 163, "resnext29_8x64d": 31, "wrn28_10": 25, "densenet_bc100": 99}
PAPER_BLOCKS = {"preresnet110": 54, "resnext29_8x64d": 9, "wrn28_10": 12, "densenet_bc100": 48}

# Scaled-down networks of every family (same code path), with their slot counts per position:
# (name, kwargs, before_bn slots, before_conv slots).
SMALL = [
    ("preresnet110", {"depth": 20}, 6, 6),
    ("preresnet110", {"depth": 14, "block": "basic"}, 6, 6),
    ("resnext29_8x64d", {"depth": 11, "cardinality": 2, "base_width": 4, "widen_factor": 1}, 3, 3),
    ("wrn28_10", {"depth": 10, "widen_factor": 2}, 3, 3),
    ("densenet_bc100", {"depth": 16, "growth_rate": 4}, 6, 6),
    ("small_cnn", {"channels": (4, 8, 8), "hidden": 8}, 4, 3),
    ("mlp", {"hidden": 16, "depth": 3}, 3, 2),
]
SMALL_IDS = [f"{name}-{'-'.join(f'{k}{v}' for k, v in kwargs.items())}" for name, kwargs, _, _ in SMALL]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Many small convs: with other processes on the cores, one thread beats spinning thread barriers."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def dropouts(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, MultiplicativeNoise)]


def image(name: str, size: int, kwargs: dict, batch: int = 2, channels: int | None = None
          ) -> tuple[torch.Tensor, dict]:
    """A random batch at ``size`` (with ``channels``, by default the model's own: 1 for the small networks, 3 for
    the paper's) and the kwargs that let the model take it (the MLP's image_size)."""
    if channels is None:
        channels = 1 if name in ("small_cnn", "mlp") else 3
    if name == "mlp":
        kwargs = {**kwargs, "image_size": size}
    return torch.randn(batch, channels, size, size), kwargs


@pytest.mark.parametrize("name,classes", list(PAPER_PARAMETERS))
def test_paper_networks_have_the_papers_parameter_and_bn_counts(name, classes):
    with torch.device("meta"):
        model = build_model(name, num_classes=classes, position="none")
    count = parameter_count(model)
    expected = PAPER_PARAMETERS[name, classes]
    if name == "preresnet110":
        assert count == expected
    else:
        assert round(count / 1e6, 2) == pytest.approx(expected / 1e6)
    assert sum(isinstance(m, BatchNorm) for m in model.modules()) == PAPER_BN_LAYERS[name]


def test_basic_block_preresnet110_is_the_109_bn_variant():
    with torch.device("meta"):
        model = build_model("preresnet110", position="none", depth=110, block="basic")
    assert sum(isinstance(m, BatchNorm) for m in model.modules()) == 109
    assert round(parameter_count(model) / 1e6, 2) == pytest.approx(1.73)


@pytest.mark.parametrize("position", ["before_bn", "before_conv", "head"])
@pytest.mark.parametrize("name", PAPER_MODELS)
def test_paper_networks_have_one_dropout_per_block_or_one_head(name, position):
    with torch.device("meta"):
        model = build_model(name, dropout=DROPOUT, position=position)
    expected = 1 if position == "head" else PAPER_BLOCKS[name]
    assert len(dropouts(model)) == expected
    if name == "preresnet110":
        assert parameter_count(model) == PAPER_PARAMETERS[name, 10]


@pytest.mark.parametrize("name", PAPER_MODELS)
def test_paper_networks_run_forward_and_backward_at_full_size(name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=100, dropout=DROPOUT, position="before_conv")
    out = model(torch.randn(2, 3, 32, 32))
    out.sum().backward()
    assert out.shape == (2, 100)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("position", ["before_bn", "before_conv", "head"])
@pytest.mark.parametrize("name,kwargs,n_bn,n_conv", SMALL, ids=SMALL_IDS)
def test_dropout_adds_no_parameters_is_an_identity_in_eval_and_noise_in_train(name, kwargs, n_bn, n_conv,
                                                                              position):
    torch.manual_seed(0)
    baseline = build_model(name, dropout=DROPOUT, position="none", **kwargs)
    model = build_model(name, dropout=DROPOUT, position=position, **kwargs)
    model.load_state_dict(baseline.state_dict())
    assert parameter_count(model) == parameter_count(baseline)
    assert len(dropouts(model)) == {"before_bn": n_bn, "before_conv": n_conv, "head": 1}[position]
    assert not dropouts(baseline)

    x, _ = image(name, 28, kwargs, batch=4)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), baseline.eval()(x))
        assert not torch.allclose(model.train()(x), baseline.train()(x))


def trace(model: nn.Module, x: torch.Tensor) -> tuple[list, dict]:
    """One train-mode forward: the leaf modules run, with their inputs, in order; each dropout's output."""
    calls, outputs = [], {}

    def record_input(module, args):
        calls.append((module, args[0]))

    def record_output(module, args, output):
        outputs[module] = output

    handles = [m.register_forward_pre_hook(record_input) for m in model.modules() if not list(m.children())]
    handles += [m.register_forward_hook(record_output) for m in dropouts(model)]
    model.train()(x)
    for handle in handles:
        handle.remove()
    return calls, outputs


def depends_on(tensor: torch.Tensor, source: torch.Tensor) -> bool:
    if not tensor.requires_grad:
        return False
    grad = torch.autograd.grad(tensor, source, torch.ones_like(tensor), retain_graph=True, allow_unused=True)
    return grad[0] is not None


@pytest.mark.parametrize("position", ["before_bn", "before_conv", "head"])
@pytest.mark.parametrize("name,kwargs,n_bn,n_conv", SMALL, ids=SMALL_IDS)
def test_each_dropout_feeds_the_layer_its_position_names(name, kwargs, n_bn, n_conv, position):
    """The layer taking a dropout's output is a BN (before_bn), a conv or hidden FC (before_conv) or the
    classifier (head), and it is the last such layer on the dropout's path through its block."""
    torch.manual_seed(0)
    model = build_model(name, dropout=DROPOUT, position=position, **kwargs)
    x, _ = image(name, 32 if name != "mlp" else 28, kwargs, batch=4)
    calls, outputs = trace(model, x)
    assert len(outputs) == len(dropouts(model)) > 0
    parent = {child: module for module in model.modules() for child in module.children()}
    classifier = [m for m, _ in calls if isinstance(m, nn.Linear)][-1]
    watched = BatchNorm if position == "before_bn" else (nn.Conv2d, nn.Linear)
    for dropout, output in outputs.items():
        consumers = [m for m, inp in calls if inp is output]
        assert len(consumers) == 1, "each dropout's output goes to exactly one layer"
        if position == "head":
            # beside the classifier (in the model itself or in its head module), not inside a block
            assert classifier in set(parent[dropout].modules()) and parent.get(parent[dropout], model) is model
            assert consumers == [classifier]
            after = calls[[m for m, _ in calls].index(dropout):]
            assert not any(isinstance(m, BatchNorm) for m, _ in after), "head dropout is after all BN"
            continue
        block = set(parent[dropout].modules())
        start = [m for m, _ in calls].index(dropout)
        fed = [m for m, inp in calls[start + 1:]
               if m in block and isinstance(m, watched) and depends_on(inp, output)]
        assert fed == consumers and consumers[0] is not classifier


@pytest.mark.parametrize("name,kwargs,n_bn,n_conv", SMALL, ids=SMALL_IDS)
@pytest.mark.parametrize("size", [28, 32])
def test_models_take_28_and_32_pixel_images_and_train(name, kwargs, n_bn, n_conv, size):
    torch.manual_seed(0)
    x, kwargs = image(name, size, kwargs, channels=1)
    model = build_model(name, num_classes=7, in_channels=1, dropout=DROPOUT, position="before_bn", **kwargs)
    pooled = []
    if name in PAPER_MODELS:
        pool = next(m for m in model.modules() if isinstance(m, nn.AdaptiveAvgPool2d))
        pool.register_forward_pre_hook(lambda module, args: pooled.append(args[0].shape[-2:]))
    out = model(x)
    out.sum().backward()
    assert out.shape == (2, 7)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    if name in PAPER_MODELS:  # bearpaw's AvgPool2d(8) at 32x32
        assert pooled == [(size // 4, size // 4)]


@pytest.mark.parametrize("name,kwargs,n_bn,n_conv", SMALL, ids=SMALL_IDS)
def test_models_run_in_channels_last_under_bf16_autocast(name, kwargs, n_bn, n_conv):
    torch.manual_seed(0)
    x, kwargs = image(name, 32, kwargs)
    model = build_model(name, dropout=DROPOUT, position="before_conv", **kwargs)
    model = model.to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x.to(memory_format=torch.channels_last))
    out.float().sum().backward()
    assert out.dtype == torch.bfloat16
    assert all(p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all() for p in model.parameters())


def test_convs_start_from_bearpaws_normal_init():
    torch.manual_seed(0)
    model = build_model("wrn28_10", position="none", depth=10, widen_factor=4)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.weight.numel() >= 10_000]
    assert len(convs) >= 4
    for conv in convs:
        w = conv.weight.detach().flatten().double()
        expected_std = math.sqrt(2.0 / (conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels))
        # Five standard errors of the sample std (relative error 1/sqrt(2N)) and of the sample mean.
        assert w.std().item() / expected_std == pytest.approx(1.0, abs=5 / math.sqrt(2 * w.numel()))
        assert abs(w.mean().item()) < 5 * expected_std / math.sqrt(w.numel())


@pytest.mark.parametrize("kind,cls", [("bernoulli", BernoulliDropout), ("gaussian", GaussianDropout),
                                      ("uniform", UniformDropout)])
def test_the_spec_chooses_the_dropout_kind_rate_and_channelwise(kind, cls):
    spec = OmegaConf.create({"kind": kind, "rate": 0.3, "channelwise": True})
    model = build_model("wrn28_10", dropout=spec, position="before_bn", depth=10, widen_factor=1)
    layers = dropouts(model)
    assert len(layers) == 3
    assert all(type(m) is cls and m.rate == 0.3 and m.channelwise for m in layers)
    default = build_model("mlp", dropout={"kind": kind, "rate": 0.2}, position="head")
    assert [m.channelwise for m in dropouts(default)] == [False]


@pytest.mark.parametrize("spec,position", [(None, "before_bn"), ({"kind": "none"}, "head"),
                                           ({"kind": "none", "rate": 0.0}, "before_conv"), (DROPOUT, "none")])
def test_no_dropout_spec_or_position_none_builds_identity_slots(spec, position):
    model = build_model("small_cnn", dropout=spec, position=position)
    assert not dropouts(model)


def test_a_config_dropout_group_with_its_position_builds_that_position():
    group = OmegaConf.create({"kind": "uniform", "rate": 0.3, "position": "before_conv"})
    layers = dropouts(build_model("small_cnn", dropout=group, position=group.position))
    convs = len(family_parameters("small_cnn")["channels"])
    assert len(layers) == convs - 1 + 1  # in front of every conv but the first, and in front of the hidden FC
    assert all(type(m) is UniformDropout for m in layers)


def test_position_defaults_to_none_and_dropout_to_bernoulli_half():
    assert not dropouts(build_model("mlp"))
    layers = dropouts(build_model("mlp", position="head"))
    assert [(type(m), m.rate) for m in layers] == [(BernoulliDropout, 0.5)]


@pytest.mark.parametrize("name,channels", [("small_cnn", 1), ("mlp", 1), ("preresnet110", 3), ("wrn28_10", 3)])
def test_build_model_defaults_to_the_input_channels_of_the_family(name, channels):
    """The small networks are for MNIST-like data: build_model without in_channels takes 1-channel images."""
    with torch.device("meta"):
        model = build_model(name, position="none")
    first_weight = next(m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))).weight
    fan_in_per_pixel = first_weight.shape[1] if first_weight.dim() == 4 else first_weight.shape[1] // 28 ** 2
    assert fan_in_per_pixel == channels


def test_positions_are_the_five_documented():
    assert POSITIONS == ("none", "before_bn", "before_conv", "head", "residual")
    assert tuple(FAMILIES) == MODEL_NAMES
    assert MODEL_NAMES == ("preresnet110", "resnext29_8x64d", "wrn28_10", "densenet_bc100", "small_cnn",
                           "mlp", "preresnet14_w8", "resnet200", "resnext101_64x4d", "senet154", "resnet50")


def test_each_model_has_a_yaml_with_the_papers_values():
    names = conf_options("model")
    assert names == sorted(MODEL_NAMES)
    for name in names:
        cfg = OmegaConf.create(conf_file("model", name).read_text())
        assert cfg.name == name
        defaults = family_parameters(cfg.name)
        assert set(cfg.kwargs) == set(defaults)
        for key, value in cfg.kwargs.items():
            expected = defaults[key]
            assert (list(expected) if isinstance(expected, tuple) else expected) == value, (name, key)
        with torch.device("meta"):
            from_yaml = build_model(cfg.name, num_classes=10, dropout=None, position="none",
                                    **cfg.kwargs)
            from_defaults = build_model(cfg.name, position="none")
        assert parameter_count(from_yaml) == parameter_count(from_defaults)


@pytest.mark.parametrize("call,message", [
    (lambda: build_model("resnet18"), "'resnet18' is not allowed: one of preresnet110, resnext29_8x64d"),
    (lambda: build_model("mlp", position="after_bn"), "'after_bn' is not allowed: one of none, before_bn"),
    (lambda: build_model("wrn28_10", width=3), "no parameter 'width'; its parameters: depth, widen_factor"),
    (lambda: build_model("preresnet110", depth=50), "depth=50 is not allowed: 9n+2"),
    (lambda: build_model("preresnet110", depth=11, block="basic"), "6n+2 for n >= 1 (8, 14"),
    (lambda: build_model("preresnet110", block="wide"), "'wide' is not allowed: one of bottleneck, basic"),
    (lambda: build_model("resnext29_8x64d", depth=30), "depth=30 is not allowed: 9n+2"),
    (lambda: build_model("wrn28_10", depth=2), "depth=2 is not allowed: 6n+4"),
    (lambda: build_model("densenet_bc100", depth=100.0), "depth=100.0 is not allowed: 6n+4"),
    (lambda: build_model("densenet_bc100", compression=0), "compression=0 is not allowed: a number in"),
    (lambda: build_model("densenet_bc100", depth=10, compression=0.01), "leaves no channels"),
    (lambda: build_model("resnext29_8x64d", cardinality=0), "cardinality=0 is not allowed"),
    (lambda: build_model("small_cnn", channels=[]), "channels=[] is not allowed"),
    (lambda: build_model("small_cnn", hidden_bn="yes"), "hidden_bn='yes' is not allowed: true or false"),
    (lambda: build_model("mlp", num_classes=0), "num_classes=0 is not allowed"),
    (lambda: build_model("mlp", in_channels=True), "in_channels=True is not allowed"),
    (lambda: build_model("mlp", position="head", dropout="bernoulli"), "'bernoulli' is not a mapping"),
    (lambda: build_model("mlp", position="head", dropout={"kind": "bernoulli", "p": 0.5}),
     "key 'p' is not known; allowed keys: kind, rate, channelwise, position"),
    (lambda: build_model("mlp", position="head", dropout={**DROPOUT, "position": "before_bn"}),
     "spec position 'before_bn' contradicts the position 'head'"),
    (lambda: build_model("mlp", position="head", dropout={"rate": 0.5}), "has no 'kind'"),
    (lambda: build_model("mlp", position="head", dropout={"kind": "uniform"}), "has no 'rate'"),
    (lambda: build_model("mlp", position="head", dropout={"kind": "bernoulli", "rate": 1.0}),
     "rate (drop ratio) 1.0 is outside the allowed range [0, 1)"),
    (lambda: build_model("mlp", position="head", dropout={"kind": "uniform", "rate": 0.1, "channelwise": 1}),
     "channelwise=1 is not allowed"),
    (lambda: build_model("mlp", depth=1)(torch.randn(2, 3, 32, 32)), "set image_size to match"),
])
def test_bad_input_raises_a_value_error_naming_it(call, message):
    with pytest.raises(ValueError) as error:
        call()
    assert message in str(error.value)


def test_preresnet_width_sets_the_stage_widths_and_the_laptop_network_is_the_narrow_preresnet():
    def conv_widths(model):
        return sorted({m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)})

    with torch.device("meta"):
        paper = build_model("preresnet110", position="none", depth=14, block="basic")
        explicit = build_model("preresnet110", position="none", depth=14, block="basic", width=16)
        narrow = build_model("preresnet14_w8", in_channels=1, position="none")
    assert conv_widths(paper) == conv_widths(explicit) == [16, 32, 64]
    assert parameter_count(paper) == parameter_count(explicit)
    assert conv_widths(narrow) == [8, 16, 32]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in narrow.modules()) == 13  # >= 10 BN layers to shift
