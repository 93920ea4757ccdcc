"""Which dropouts feed each BN layer, and how: the structure the per-layer theory needs, and its training-time inputs.

A dropout's noise reaches a BN input before any other BN in one of three ways the theory covers exactly:

* ``direct``: the BN input is the dropout's output (the paper's case (a), Eq. 7-8);
* ``additive``: the dropout's output is added into the BN input through residual adds only (DropPath's ``x + m f``):
  the same noise term, ``s2 E[x'^2]``, per channel;
* ``weight``: a conv or linear layer reads the dropout's output and its own output is the BN input or is added into
  it (the paper's case (b), Eq. 14; PreResNet's Dropout-(b) reaches the next block's BN through the add).

Several sources of one BN add their noise terms (their noises are independent). A BN that a dropout's noise reaches
any other way (through a nonlinearity or a second weight layer before any BN) is ``downstream``: the theory has no
closed form for it. :func:`trace_feeds` finds the structure with one eval-mode forward of two samples, autograd as the
tracer (as :mod:`varshift.audit.reach` does): every dropout's output and every dropout-fed weight layer's output gets a
zero ``delta`` that requires grad (a weight layer's output also loses its own dependence on the dropout), BN outputs
are detached, and the gradient of a random probe ``r`` at a BN input says how a delta reaches it: not at all (None),
additively (the gradient is ``r`` itself) or otherwise.

:class:`FeedRecorder` then records, in the training-mode probe pass, each source dropout's input ``x'`` (its per-channel
mean ``c'`` and BN's estimate of its variance ``v'``), the variance the noise adds at the dropout's own output, and for
a fed weight layer the correlation ``rho'`` of ``x'`` across the layer's fan-in and the variance its noise adds at the
layer's output (the layer run once more on ``x'``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from varshift import theory
from varshift.bn import batchnorm_layers, preserved_modes
from varshift.dropout import DropBlock, DropPath, MultiplicativeNoise
from varshift.noise_geometry import NoiseLayout, dropblock_layout, filter_alignment, tap_overlap, uniform_layout

# torch's dropouts count too, for models that are not varshift's own
DROPOUT_TYPES = (MultiplicativeNoise, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
                 nn.FeatureAlphaDropout)
WEIGHT_TYPES = (nn.Conv2d, nn.Linear)
DIRECT, ADDITIVE, WEIGHT, DOWNSTREAM, UNREACHED = "direct", "additive", "weight", "downstream", "none"


@dataclass(frozen=True)
class Source:
    """A dropout whose noise reaches a BN input directly, additively, or through the weight layer ``via``."""

    dropout: str
    via: str | None = None
    direct: bool = False

    @property
    def how(self) -> str:
        return WEIGHT if self.via is not None else DIRECT if self.direct else ADDITIVE

    def label(self) -> str:
        return f"{self.dropout} via {self.via}" if self.via is not None else self.dropout


@dataclass(frozen=True)
class Feeds:
    """Per BN layer: its sources, and whether some noise also reaches it another way (``downstream``)."""

    sources: dict[str, list[Source]]
    downstream: set[str]
    weight_sources: dict[str, str]  # weight layer -> the dropout it reads

    def kind(self, bn: str) -> str:
        """direct, additive, weight, downstream or none (no dropout's noise reaches it before another BN)."""
        sources = self.sources.get(bn, [])
        if bn in self.downstream:
            return DOWNSTREAM
        if not sources:
            return UNREACHED
        if len(sources) == 1 and sources[0].direct:
            return DIRECT
        return WEIGHT if any(source.via is not None for source in sources) else ADDITIVE


def noise_layout(dropout: nn.Module, layer: nn.Module, shape: torch.Size) -> NoiseLayout | None:
    """How the noise of ``dropout`` (on inputs of ``shape``) is shared across the fan-in of ``layer``; None for a
    noise without a closed form (alpha dropout)."""
    s2 = noise_variance(dropout, shape)
    if s2 is None:
        return None
    size = feature_size(shape)
    if isinstance(dropout, DropBlock):
        return dropblock_layout(layer, dropout.rate, dropout.block_size, *size)
    if isinstance(dropout, DropPath):
        return uniform_layout(layer, s2, shared=True, across_channels=True, feature_size=size)
    channelwise = (isinstance(dropout, (nn.Dropout2d, nn.Dropout3d))
                   or (isinstance(dropout, MultiplicativeNoise) and dropout.channelwise)) and len(shape) > 2
    return uniform_layout(layer, s2, shared=channelwise, across_channels=False, feature_size=size)


def feature_size(shape: torch.Size) -> tuple[int, int]:
    """Height and width of a conv's input (1 x 1 for a linear layer's)."""
    return (int(shape[2]), int(shape[3])) if len(shape) == 4 else (1, 1)


def noise_variance(dropout: nn.Module, shape: torch.Size) -> float | None:
    """Var[m] of a dropout's noise on inputs of ``shape``; None without a closed form."""
    if isinstance(dropout, MultiplicativeNoise):
        return dropout.noise_variance(shape)
    if isinstance(dropout, (nn.AlphaDropout, nn.FeatureAlphaDropout)):
        return None
    return theory.noise_variance("bernoulli", dropout.p) if dropout.p < 1.0 else None


class _Tracer:
    def __init__(self):
        self.deltas: list[tuple[str, str | None, Tensor]] = []  # dropout, weight layer (or None), delta
        self.outputs: dict[str, Tensor] = {}  # dropout -> its perturbed output
        self.weight_sources: dict[str, str] = {}
        self.reach: dict[str, list[tuple[str, str | None, bool, bool]]] = {}  # bn -> (dropout, via, additive, is)

    def perturb(self, output: Tensor) -> Tensor:
        return output + torch.zeros_like(output, requires_grad=True)

    def dropout_hook(self, name: str):
        def hook(module, args, output):
            perturbed = self.perturb(output.detach() if output is args[0] else output)
            self.deltas.append((name, None, perturbed))
            self.outputs[name] = perturbed
            return perturbed

        return hook

    def weight_hook(self, name: str):
        def hook(module, args, output):
            source = next((dropout for dropout, out in self.outputs.items() if args[0] is out), None)
            if source is None:
                return None
            self.weight_sources[name] = source
            perturbed = self.perturb(output.detach())  # the layer's own path from the dropout is the weight feed
            self.deltas.append((source, name, perturbed))
            return perturbed

        return hook

    def bn_hook(self, name: str):
        def hook(module, args):
            x = args[0]
            if name in self.reach or not self.deltas or not x.requires_grad:
                return
            generator = torch.Generator(x.device).manual_seed(len(self.reach))
            probe = torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)
            grads = torch.autograd.grad(x, [delta for _, _, delta in self.deltas], grad_outputs=probe,
                                        retain_graph=True, allow_unused=True)
            self.reach[name] = [(dropout, via, grad.shape == x.shape and torch.equal(grad, probe),
                                 via is None and x is self.outputs[dropout])
                                for (dropout, via, _), grad in zip(self.deltas, grads, strict=True)
                                if grad is not None]

        return hook


def trace_feeds(model: nn.Module, x: Tensor) -> Feeds:
    """The feeds of every BN layer of ``model`` from one eval-mode forward of ``x`` (see the module's docstring)."""
    tracer = _Tracer()
    handles = []
    try:
        for name, module in model.named_modules():
            if isinstance(module, DROPOUT_TYPES):
                handles.append(module.register_forward_hook(tracer.dropout_hook(name)))
            elif isinstance(module, WEIGHT_TYPES):
                handles.append(module.register_forward_hook(tracer.weight_hook(name)))
        for name, bn in batchnorm_layers(model):
            handles.append(bn.register_forward_pre_hook(tracer.bn_hook(name)))
            handles.append(bn.register_forward_hook(lambda module, args, output: output.detach()))
        # a dropout left on in eval mode would draw from the caller's RNG
        with preserved_modes(model), torch.enable_grad(), torch.autocast(x.device.type, enabled=False), \
                torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
            model.eval()
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    sources, downstream = {}, set()
    for bn, reached in tracer.reach.items():
        weight_fed = {dropout for dropout, via, additive, _ in reached if via is not None and additive}
        for dropout, via, additive, is_output in reached:
            if additive:
                sources.setdefault(bn, []).append(Source(dropout, via, is_output))
            elif via is not None or dropout not in weight_fed:
                downstream.add(bn)
    return Feeds(sources, downstream, tracer.weight_sources)


SUMMED = ("variance_sums", "sums", "square_sums")  # the tensors of ChannelMoments, per name


class ChannelMoments:
    """Per name and channel (dimension 1): BN's variance estimate (the unbiased variance of each batch, averaged
    over the batches) and the count, sum and sum of squares of all values, in float64 on the input's device, so that
    recording never waits for the device."""

    def __init__(self):
        self.variance_sums: dict[str, Tensor] = {}
        self.calls: dict[str, int] = {}
        self.counts: dict[str, int] = {}
        self.sums: dict[str, Tensor] = {}
        self.square_sums: dict[str, Tensor] = {}

    def add(self, name: str, x: Tensor) -> None:
        variance, mean = torch.var_mean(x.detach().to(torch.float64), dim=[0, *range(2, x.dim())], correction=1)
        count = x.numel() // x.shape[1]
        squares = (count - 1) * variance + count * mean * mean
        if name in self.calls:
            self.variance_sums[name] += variance
            self.sums[name] += count * mean
            self.square_sums[name] += squares
        else:
            self.variance_sums[name], self.sums[name], self.square_sums[name] = variance, count * mean, squares
        self.calls[name] = self.calls.get(name, 0) + 1
        self.counts[name] = self.counts.get(name, 0) + count

    def on(self, device: torch.device) -> ChannelMoments:
        """A copy with its sums on ``device``."""
        return type(self).combined([self], device)

    @classmethod
    def combined(cls, parts: list[ChannelMoments], device: torch.device) -> ChannelMoments:
        """The moments of all ``parts`` (passes over disjoint batches) together, on ``device``; names in the order the
        parts first hold them."""
        total = cls()
        for part in parts:
            for name, calls in part.calls.items():
                sums = {key: getattr(part, key)[name].to(device) for key in SUMMED}
                for key, value in sums.items():
                    held = getattr(total, key)
                    held[name] = held[name] + value if name in held else value.clone()
                total.calls[name] = total.calls.get(name, 0) + calls
                total.counts[name] = total.counts.get(name, 0) + part.counts[name]
        return total

    def variance(self, name: str) -> Tensor:
        """BN's estimate: the average over calls of the per-batch unbiased variance."""
        return self.variance_sums[name] / self.calls[name]

    def mean(self, name: str) -> Tensor:
        return self.sums[name] / self.counts[name]

    def second_moment(self, name: str) -> Tensor:
        """``E[x^2]`` over all values of the pass."""
        return self.square_sums[name] / self.counts[name]

    def pooled_variance(self, name: str) -> Tensor:
        """The unbiased variance over all values of the pass."""
        counts = self.counts[name]
        return (self.square_sums[name] - counts * self.mean(name) ** 2) / (counts - 1)


def fan_in_sums(layer: nn.Module, x: Tensor) -> Tensor:
    """The sum of ``x`` over each fan-in the layer reads (all its input channels of one group, all taps): the output
    of an all-ones filter per group, shape (batch, groups, ...)."""
    if isinstance(layer, nn.Linear):
        return x.sum(dim=1, keepdim=True)
    groups = layer.groups
    ones = torch.ones(groups, x.shape[1] // groups, *layer.kernel_size, dtype=x.dtype, device=x.device)
    return F.conv2d(x, ones, None, layer.stride, layer.padding, layer.dilation, groups)


def plain_forward(layer: nn.Module, x: Tensor) -> Tensor:
    """The layer's forward without its hooks."""
    return type(layer).forward(layer, x)


MOMENTS = ("inputs", "noisy", "clean", "fan_in")  # what a FeedRecorder sums over the pass


class FeedRecorder:
    """Hooks for the training-mode pass that record what the theory of each fed BN layer needs (module docstring).
    :meth:`start` traces the feeds on the pass's first input, before any hook is in place. In a data-parallel pass
    each process records its share, and :meth:`combine` adds up what all of them recorded."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.traced = False
        self.use(Feeds({}, set(), {}))

    def use(self, feeds: Feeds) -> None:
        """Record for the structure ``feeds`` from now on: its source dropouts and fed weight layers, nothing yet."""
        modules = dict(self.model.named_modules())
        self.feeds = feeds
        self.dropouts = {source.dropout for sources in feeds.sources.values() for source in sources}
        self.dropout_modules = {name: modules[name] for name in self.dropouts}
        self.weights = {name: modules[name] for name in feeds.weight_sources
                        if any(source.via == name for sources in feeds.sources.values() for source in sources)}
        self.inputs = ChannelMoments()  # each source dropout's input x'
        self.noisy = ChannelMoments()  # each source dropout's output, each fed weight layer's output
        self.clean = ChannelMoments()  # each fed weight layer run on x'
        self.fan_in = ChannelMoments()  # each fed weight layer: x' summed over each fan-in
        self.shapes: dict[str, torch.Size] = {}
        self._last_input: dict[str, Tensor] = {}

    def start(self, x: Tensor) -> list:
        """Trace the feeds on ``x`` and put the recording hooks in place; returns their handles."""
        self.use(trace_feeds(self.model, x))
        self.traced = True
        handles = []
        for name, module in self.dropout_modules.items():
            handles.append(module.register_forward_hook(self._dropout_hook(name)))
        for name, module in self.weights.items():
            handles.append(module.register_forward_hook(self._weight_hook(name, self.feeds.weight_sources[name])))
        return handles

    def record(self) -> dict | None:
        """What the pass recorded, on the CPU, for another process to add (None: no batch was passed here)."""
        if not self.traced:
            return None
        return {"feeds": self.feeds, "shapes": self.shapes,
                **{moments: getattr(self, moments).on(torch.device("cpu")) for moments in MOMENTS}}

    def combine(self, records: list[dict | None], device: torch.device) -> None:
        """Replace what this process recorded with the sum of ``records`` (every process's :meth:`record`, in rank
        order; the feeds and input shapes are the same in each), on ``device``."""
        recorded = [record for record in records if record is not None]
        self.use(recorded[0]["feeds"])
        self.traced = True
        self.shapes = recorded[0]["shapes"]
        for moments in MOMENTS:
            setattr(self, moments, ChannelMoments.combined([record[moments] for record in recorded], device))

    def clear(self) -> None:
        self._last_input.clear()

    def _dropout_hook(self, name: str):
        def hook(module, args, output):
            x = args[0]
            self.inputs.add(name, x)
            self.noisy.add(name, output)
            self.shapes[name] = x.shape
            self._last_input[name] = x

        return hook

    def _weight_hook(self, name: str, source: str):
        def hook(module, args, output):
            x = self._last_input[source]
            self.noisy.add(name, output)
            self.clean.add(name, plain_forward(module, x))
            self.fan_in.add(name, fan_in_sums(module, x))

        return hook

    # -- what the theory needs, per BN layer (channel vectors as numpy float64) --
    def source_moments(self, dropout: str) -> tuple[np.ndarray, np.ndarray]:
        """Per channel of the dropout's input: ``c'^2 = E[x'^2] - v'`` and ``v'`` (BN's estimate), so that
        ``v' + s2 (c'^2 + v')`` is the expected BN estimate of the variance of the dropout's output."""
        var = self.inputs.variance(dropout).cpu().numpy()
        return self.inputs.second_moment(dropout).cpu().numpy() - var, var

    def correlation(self, layer: str, dropout: str) -> float:
        """``rho'``: the mean pairwise correlation of ``x'`` across the layer's fan-in, from the variance of its sum:
        ``Var(sum_i x_i) = sum_i v_i + rho sum_(i != j) sd_i sd_j``, the sums over the taps that read the map (not
        the padding) averaged over output positions; per group, averaged over groups."""
        module = self.weights[layer]
        var = self.inputs.variance(dropout).cpu().numpy()
        groups = getattr(module, "groups", 1)
        overlap = tap_overlap(module, *feature_size(self.shapes[dropout]))
        inside, pairs = np.trace(overlap), overlap.sum()
        summed = self.fan_in.variance(layer).cpu().numpy()
        rhos = []
        for group, group_var in enumerate(np.split(var, groups)):
            total = inside * group_var.sum()
            spread = pairs * np.sqrt(group_var).sum() ** 2 - total
            rhos.append((summed[group] - total) / spread if spread > 0 else 0.0)
        return float(np.mean(rhos))

    def terms(self, bn: str) -> dict:
        """Per channel of BN ``bn``: the noise its sources add to its input's variance in training, predicted and
        measured; and, where it has one source, that source's description (``c'``, ``v'``, ``rho'``, D, B)."""
        sources = self.feeds.sources[bn]
        predicted = measured = 0.0
        description = {}
        for source in sources:
            dropout = self.dropout_modules[source.dropout]
            shape = self.shapes[source.dropout]
            s2 = noise_variance(dropout, shape)
            mean2, var = self.source_moments(source.dropout)
            if source.via is None:
                noise = None if s2 is None else s2 * (mean2 + var)
                gained = self.noisy.variance(source.dropout).cpu().numpy() - var
                description = {"source_mean": np.sqrt(np.maximum(mean2, 0.0)), "source_var": var}
            else:
                layer = self.weights[source.via]
                layout = noise_layout(dropout, layer, shape)
                rho = self.correlation(source.via, source.dropout)
                c2, v = float(np.mean(mean2)), float(np.mean(var))
                filters = filter_alignment(layer, layout) if layout is not None else None
                noise = None if filters is None else filters.norm2 * theory.weighted_noise_variance(
                    s2, np.sqrt(max(c2, 0.0)), v, rho, filters.alignment, filters.diagonal)
                gained = (self.noisy.variance(source.via) - self.clean.variance(source.via)).cpu().numpy()
                description = {"source_mean": np.sqrt(max(c2, 0.0)), "source_var": v, "rho": rho}
                if filters is not None:
                    description.update(weight_norm2=filters.norm2, d_cos2=filters.d_cos2, alignment=filters.alignment)
            predicted = None if noise is None or predicted is None else predicted + noise
            measured = measured + gained
        terms = {"noise_predicted": predicted, "noise_measured": measured, "noise_variance": s2 if len(sources) == 1
                 else np.nan, "sources": "; ".join(source.label() for source in sources)}
        return {**terms, **(description if len(sources) == 1 else {})}
