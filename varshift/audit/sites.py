"""The dropout-like sites of a model: the modules and functional calls whose output carries training noise.

A site is a module (``nn.Dropout*``, ``nn.AlphaDropout``, varshift's dropout layers, torchvision's
``StochasticDepth``, a timm-style ``DropPath``) or a call of a functional dropout (``F.dropout``,
``torch.dropout``, ...) in a module's own ``forward``, named ``owner:F.dropout#k`` (the ``k``-th dropout
call of one forward of ``owner``; the model itself is ``(model)``). :class:`SiteTracer` sees both while
the model runs, with forward hooks and a ``TorchFunctionMode``, so it needs no graph tracing and works
on any model, torch.fx-traceable or not.

The noise variance ``Var[m]`` of each site, what :mod:`varshift.theory` needs:

* Bernoulli dropout (``nn.Dropout*``, ``F.dropout*``, ``torch.dropout``) of drop rate ``p``: ``p / (1 - p)``;
* varshift's layers: their own ``noise_variance()``;
* ``StochasticDepth(p, mode)`` and ``DropPath(drop_prob)`` (with ``scale_by_keep``, and varshift's): a per-sample
  Bernoulli mask scaled by ``1 / (1 - p)``, so ``p / (1 - p)`` too; StochasticDepth's ``"batch"`` mode draws one mask
  for the whole batch, so BN sees ``(1 + s2) v`` and no ``c^2`` term;
* varshift's DropBlock: its own, from the height and width of its output (known once the model has run);
* alpha dropout (and ``DropPath`` without ``scale_by_keep``) is not a mean-1 multiplicative noise:
  ``None``, varshift's theory has no closed form for it, and the audit reports its measured shift only.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torchvision.ops import StochasticDepth

from varshift import theory
from varshift.dropout import DropBlock, DropPath, MultiplicativeNoise

BERNOULLI_FUNCTIONS = {F.dropout: "F.dropout", F.dropout1d: "F.dropout1d", F.dropout2d: "F.dropout2d",
                       F.dropout3d: "F.dropout3d", torch.dropout: "torch.dropout",
                       torch.feature_dropout: "torch.feature_dropout"}
ALPHA_FUNCTIONS = {F.alpha_dropout: "F.alpha_dropout", F.feature_alpha_dropout: "F.feature_alpha_dropout",
                   torch.alpha_dropout: "torch.alpha_dropout",
                   torch.feature_alpha_dropout: "torch.feature_alpha_dropout"}
FUNCTIONAL_DROPOUTS = {**BERNOULLI_FUNCTIONS, **ALPHA_FUNCTIONS}
MODEL_OWNER = "(model)"


@dataclass(frozen=True)
class DropoutSite:
    """One dropout-like module or functional dropout call site, and its noise."""

    name: str  # qualified module name, or owner:function#k for a functional call
    layer: str  # the module class or the function, e.g. Dropout, StochasticDepth(row), F.dropout
    rate: float | None  # drop rate (beta for Uout)
    noise_variance: float | None  # Var[m]; None where varshift's theory has no closed form
    sharing: str = "unit"  # one noise value per: unit, channel (per sample), sample, batch; or block (DropBlock)

    @property
    def shared_over_batch(self) -> bool:
        return self.sharing == "batch"


def bernoulli_noise_variance(p: float) -> float:
    """``p / (1 - p)``, infinite at ``p = 1`` (everything dropped)."""
    return math.inf if p >= 1.0 else theory.noise_variance("bernoulli", p)


def module_site(name: str, module: nn.Module) -> DropoutSite | None:
    """The site of ``module`` if it is dropout-like, else None."""
    layer = type(module).__name__
    if isinstance(module, DropBlock):
        return DropoutSite(name, layer, module.rate, None if module.rate else 0.0, "block")
    if isinstance(module, MultiplicativeNoise):
        sharing = "sample" if isinstance(module, DropPath) else "channel" if module.channelwise else "unit"
        return DropoutSite(name, layer, module.rate, module.noise_variance(), sharing)
    if isinstance(module, (nn.AlphaDropout, nn.FeatureAlphaDropout)):
        return DropoutSite(name, layer, module.p, None)
    if isinstance(module, nn.modules.dropout._DropoutNd):
        sharing = "unit" if isinstance(module, nn.Dropout) else "channel"
        return DropoutSite(name, layer, module.p, bernoulli_noise_variance(module.p), sharing)
    if isinstance(module, StochasticDepth):
        return DropoutSite(name, f"{layer}({module.mode})", module.p, bernoulli_noise_variance(module.p),
                           "batch" if module.mode == "batch" else "sample")
    if layer == "DropPath" and hasattr(module, "drop_prob"):
        p = float(module.drop_prob)
        scaled = getattr(module, "scale_by_keep", True)
        return DropoutSite(name, layer, p, bernoulli_noise_variance(p) if scaled else None, "sample")
    return None


def with_output(site: DropoutSite, module: nn.Module | None, output) -> DropoutSite:
    """``site`` with what its output's shape decides: DropBlock's noise variance."""
    if isinstance(module, DropBlock) and module.rate and isinstance(output, Tensor):
        return dataclasses.replace(site, noise_variance=module.noise_variance(output.shape))
    return site


def functional_site(owner: str, index: int, func, args: tuple, kwargs: dict) -> DropoutSite:
    """The site of the ``index``-th call of a functional dropout ``func(*args, **kwargs)`` in ``owner``."""
    label = FUNCTIONAL_DROPOUTS[func]
    p = float(kwargs.get("p", args[1] if len(args) > 1 else 0.5))
    noise_variance = bernoulli_noise_variance(p) if func in BERNOULLI_FUNCTIONS else None
    sharing = "unit" if func in (F.dropout, torch.dropout, F.alpha_dropout, torch.alpha_dropout) else "channel"
    return DropoutSite(f"{owner}:{label}#{index}", label, p, noise_variance, sharing)


@dataclass
class _Frame:
    name: str
    is_site: bool
    dropout_calls: int = 0


class SiteTracer(TorchFunctionMode):
    """While active, calls ``on_output(site, output)`` for every output of a site of ``model`` and lets the
    model go on with what it returns (the output itself, or a replacement of the same shape).

    ``sites`` lists the sites in the order the forward passes first reach them. A functional dropout
    called inside a dropout module is that module's own work and is not a site of its own.
    """

    def __init__(self, model: nn.Module, on_output: Callable[[DropoutSite, Tensor], Tensor]):
        super().__init__()
        self.model = model
        self.on_output = on_output
        self.sites: dict[str, DropoutSite] = {}
        self._stack: list[_Frame] = []
        self._handles = []

    def __enter__(self):
        for name, module in self.model.named_modules():
            site = module_site(name, module)
            self._handles.append(module.register_forward_pre_hook(self._enter_module(name, site)))
            self._handles.append(module.register_forward_hook(self._leave_module(site), always_call=True))
        return super().__enter__()

    def __exit__(self, *exc_info):
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        return super().__exit__(*exc_info)

    def _enter_module(self, name: str, site: DropoutSite | None):
        def push(module, args):
            self._stack.append(_Frame(name or MODEL_OWNER, site is not None))

        return push

    def _leave_module(self, site: DropoutSite | None):
        def pop(module, args, output):
            self._stack.pop()
            return None if site is None else self._seen(with_output(site, module, output), output)

        return pop

    def _seen(self, site: DropoutSite, output):
        self.sites.setdefault(site.name, site)
        return self.on_output(site, output)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        if func not in FUNCTIONAL_DROPOUTS or not self._stack or self._stack[-1].is_site:
            return result
        frame = self._stack[-1]
        site = functional_site(frame.name, frame.dropout_calls, func, args, kwargs)
        frame.dropout_calls += 1
        return self._seen(site, result)
