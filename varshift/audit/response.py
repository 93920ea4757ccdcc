"""How much variance a site's noise adds at each BN input it reaches through other layers: forward-mode AD.

Training multiplies a site's output ``f`` by a noise ``m`` with ``E[m] = 1``, ``Var[m] = s2``: the site adds
``(m - 1) f`` to its output. Where the layers between it and a BN are linear in that output (convs, linear layers, adds,
pooling, concatenations: the paper's case (b) and residual networks), the BN input gains ``J ((m - 1) f)``, ``J`` the
linear map of those layers, and its variance in training gains, per channel,

    E[(J ((m - 1) f))^2] = s2 E[(J (e f))^2]   with   e = (m - 1) / sqrt(s2),

exactly: Eq. 9 of the paper for any linear map, its weights and the correlation of its inputs taken as they are (for
one conv, ``s2 sum_i w_i^2 E[f_i^2]`` plus the noise's covariances between the filter's taps). A forward pass with
the tangent ``e f`` at the site (``torch.autograd.forward_ad``) gives ``J (e f)`` at every BN input; BN outputs carry no
tangent on, so only the paths that reach a BN before any other BN count. ``e`` has the sharing of the site's noise: one
value per sample (DropPath, StochasticDepth), per sample and channel (channel-wise dropout), per unit (random signs:
its mean square is 1 and two units are uncorrelated, as for independent noise), or DropBlock's own blocks. Random signs
make the per-unit response an unbiased estimate; the per-sample one is exact.

Where the path is not linear (an activation between), the same pass gives the first-order response: the prediction is
then an estimate. :func:`noise_responses` tells the two apart by pushing ``f + e f`` itself through the model too and
comparing the change at the BN input with ``J (e f)``. With ``through_bn`` the tangent goes on through the BN layers
(affine in eval mode) and every later layer: the first-order response of a BN input to the site by every path, what the
joint prediction of several sites on needs (a site's noise also reaches a BN through the blocks between).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.autograd.forward_ad as fwAD
from torch import Tensor, nn

from varshift.audit.sites import DropoutSite, SiteTracer
from varshift.bn import batchnorm_layers, preserved_modes

# a finite step's change at a BN input is the linear response when it differs from the tangent by less than this share
# of the tangent, beyond the float32 rounding (this share of the values) that dozens of layers accumulate
LINEARITY_RTOL = 1e-3
ROUNDING = 1e-5


@dataclass(frozen=True)
class Response:
    """Per channel of a BN input: ``E[(J (e f))^2]`` (over batch and positions; for a noise shared by the whole batch,
    the within-batch variance), and whether the path from the site is linear (the response is then exact)."""

    second_moment: np.ndarray
    linear: bool


def unit_noise(site: DropoutSite, module: nn.Module | None, output: Tensor, generator: torch.Generator) -> Tensor:
    """``e = (m - 1) / sqrt(s2)`` for one forward: unit mean square, the sharing of the site's noise."""
    shape = output.shape
    if site.sharing in ("sample", "batch"):
        return torch.ones(shape[:1] + (1,) * (len(shape) - 1), dtype=output.dtype, device=output.device)
    if site.sharing == "block":  # DropBlock's own blocks, drawn from its seed
        with torch.random.fork_rng(devices=[output.device] if output.device.type == "cuda" else []):
            torch.manual_seed(generator.initial_seed())
            m = module.sample(shape, output.dtype, output.device)
        return (m - 1.0) / np.sqrt(site.noise_variance)
    if site.sharing == "channel" and len(shape) > 2:
        shape = shape[:2] + (1,) * (len(shape) - 2)
    signs = torch.randint(0, 2, shape, generator=generator, device=output.device).to(output.dtype)
    return signs.mul_(2.0).sub_(1.0)


class _Perturbation:
    """What one forward does at ``site``: add the tangent ``e f`` (forward AD), or ``e f`` itself (a finite step)."""

    def __init__(self, site: DropoutSite, module: nn.Module | None, seed: int, finite: bool):
        self.site, self.module, self.seed, self.finite = site, module, seed, finite

    def on_output(self, site: DropoutSite, output: Tensor) -> Tensor:
        if site.name != self.site.name or not isinstance(output, Tensor) or not output.is_floating_point():
            return output
        generator = torch.Generator(output.device).manual_seed(self.seed)
        step = unit_noise(site, self.module, output, generator) * output
        return output + step if self.finite else fwAD.make_dual(output, step)


def _forward(model: nn.Module, perturbation: _Perturbation | None, x: Tensor, bn_outputs: dict[str, Tensor] | None,
             through_bn: bool = False) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """One eval forward of ``x`` with ``perturbation``: every BN's input (its tangent, for a forward-AD pass), and
    output. BN outputs carry no tangent on unless ``through_bn``; with ``bn_outputs``, each BN returns the given output
    instead of its own, so that a finite change reaches later BNs only through no BN, as the tangent does. Copies are
    kept: models add into BN outputs in place (``result += input``)."""
    inputs, outputs = {}, {}
    dual = perturbation is not None and not perturbation.finite

    def keep_input(name):
        def hook(module, args):
            if name not in inputs:
                value = fwAD.unpack_dual(args[0]).tangent if dual else args[0]
                inputs[name] = None if value is None else value.clone()
        return hook

    def output_of(name):
        def hook(module, args, output):
            outputs.setdefault(name, fwAD.unpack_dual(output).primal.clone())
            if bn_outputs is not None:
                return bn_outputs[name].clone()
            return None if through_bn else fwAD.unpack_dual(output).primal
        return hook

    handles = []
    try:
        for name, bn in batchnorm_layers(model):
            handles.append(bn.register_forward_pre_hook(keep_input(name)))
            handles.append(bn.register_forward_hook(output_of(name)))
        if perturbation is None:
            model(x)
        else:
            with SiteTracer(model, perturbation.on_output), fwAD.dual_level():
                model(x)
    finally:
        for handle in handles:
            handle.remove()
    return inputs, outputs


def _moment(tangent: Tensor, shared_over_batch: bool) -> Tensor:
    values = tangent.detach().to(torch.float64)
    dims = [0, *range(2, values.dim())]
    return torch.var(values, dim=dims, correction=0) if shared_over_batch else values.square().mean(dim=dims)


def _linear(change: Tensor, tangent: Tensor, base: Tensor) -> bool:
    """Whether a finite change equals the tangent: up to :data:`LINEARITY_RTOL` of the tangent, and to float32
    rounding (accumulated over a network's layers) of the values it changes."""
    change, tangent, base = change.to(torch.float64), tangent.to(torch.float64), base.to(torch.float64)
    allowed = LINEARITY_RTOL * tangent.abs().max() + ROUNDING * base.abs().max()
    return bool((change - tangent).abs().max() <= allowed)


@torch.no_grad()
def noise_responses(model: nn.Module, inputs: Iterable[Tensor], sites: Sequence[DropoutSite],
                    pairs: set[tuple[str, str]], seed: int = 0, through_bn: bool = False
                    ) -> dict[tuple[str, str], Response]:
    """``(site, bn) -> Response`` for every pair in ``pairs`` (sites with a closed-form noise), averaged over
    ``inputs``. The paths counted end at the first BN (a feed's paths), or with ``through_bn`` go on through the BN
    layers (affine in eval mode), for every way the site's noise reaches the BN input; only the former are checked
    for linearity. The model runs in eval mode; its modes are as before."""
    modules = dict(model.named_modules())
    by_site = {site.name: site for site in sites}
    wanted: dict[str, set[str]] = {}
    for site_name, bn in pairs:
        wanted.setdefault(site_name, set()).add(bn)
    inputs = list(inputs)
    responses = {}
    if not wanted:
        return responses
    with preserved_modes(model):
        model.eval()
        base_inputs, base_outputs = _forward(model, None, inputs[0], None) if not through_bn else ({}, {})
        for site_name, bns in wanted.items():
            site, module = by_site[site_name], modules.get(site_name)
            sums, linear = {}, {}
            for index, x in enumerate(inputs):
                perturbation = _Perturbation(site, module, seed + index, False)
                tangents = {bn: t for bn, t in _forward(model, perturbation, x, None, through_bn)[0].items()
                            if bn in bns and t is not None}
                if index == 0 and not through_bn:  # is each path linear? the same step, taken for real
                    moved, _ = _forward(model, _Perturbation(site, module, seed, True), x, base_outputs)
                    linear = {bn: _linear(moved[bn] - base_inputs[bn], t, base_inputs[bn])
                              for bn, t in tangents.items()}
                for bn, tangent in tangents.items():
                    moment = _moment(tangent, site.sharing == "batch")
                    sums[bn] = sums[bn] + moment if bn in sums else moment
            responses.update({(site_name, bn): Response((total / len(inputs)).cpu().numpy(), linear.get(bn, False))
                              for bn, total in sums.items()})
    return responses
