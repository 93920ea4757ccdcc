"""Which BN layers each dropout site feeds: those its output reaches before passing through another BN.

One eval-mode forward finds them all, with autograd as the tracer: every site's output ``out`` is
replaced by ``out + delta`` (``delta`` zeros that require grad, so the values do not change) and every
BN layer's output is detached. A BN layer's input then depends on a ``delta`` exactly when a path leads
from that site to this BN through no other BN, across concatenations, residual adds and functional code
alike; ``torch.autograd.grad(..., allow_unused=True)`` at the BN input tells which. The model's
parameters may require grad: only the ``delta`` tensors are asked about.

A feed is *direct* when the BN input holds the site's output verbatim in a run of its channels (the
dropout feeds the BN itself, or through a concatenation as in DenseNet): the paper's case (a). Any
other path (a weight layer, a residual add, an activation) is case (b)-like.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from varshift.audit.sites import DropoutSite, SiteTracer
from varshift.bn import batchnorm_layers, preserved_modes


@dataclass(frozen=True)
class Feed:
    """Dropout site ``site`` reaches the input of BN layer ``bn`` through no other BN layer."""

    site: str
    bn: str
    channels: tuple[int, int] | None  # BN input channels [start, stop) holding the site's output verbatim

    @property
    def direct(self) -> bool:
        return self.channels is not None


def channel_slice(container: Tensor, part: Tensor) -> tuple[int, int] | None:
    """``(start, stop)`` with ``container[:, start:stop]`` equal to ``part``, or None if there is none. An all-zero
    ``part`` (a site after a ReLU that is off on these inputs) matches nothing: zeros equal any other zeros, such as
    those a bias-free conv makes of them, so equality would not say that the site's output is there."""
    if not part.any() or (container.dim() < 2 or container.dim() != part.dim() or container.shape[0] != part.shape[0]
            or container.shape[2:] != part.shape[2:] or part.shape[1] > container.shape[1]):
        return None
    width = part.shape[1]
    matches_first = (container == part[:, :1]).transpose(0, 1).flatten(1).all(dim=1)
    for start in matches_first.nonzero().flatten().tolist():
        if start + width <= container.shape[1] and torch.equal(container[:, start:start + width], part):
            return start, start + width
    return None


class _FeedTracer:
    """The hooks of one traced forward: site outputs get their ``delta``, BN inputs are checked."""

    def __init__(self):
        self.deltas: list[tuple[str, Tensor, Tensor]] = []  # site name, delta, the site's output
        self.feeds: dict[tuple[str, str], Feed] = {}

    def perturb(self, site: DropoutSite, output):
        if not (isinstance(output, Tensor) and output.is_floating_point()):
            return output
        delta = torch.zeros_like(output, requires_grad=True)
        self.deltas.append((site.name, delta, output.detach().clone()))
        return output + delta

    def check_input(self, bn_name: str):
        def check(module, args):
            x = args[0]
            if not self.deltas or not x.requires_grad:
                return
            grads = torch.autograd.grad(x, [delta for _, delta, _ in self.deltas], grad_outputs=torch.ones_like(x),
                                        retain_graph=True, allow_unused=True)
            for (site, _, output), grad in zip(self.deltas, grads, strict=True):
                if grad is not None and (site, bn_name) not in self.feeds:
                    self.feeds[site, bn_name] = Feed(site, bn_name, channel_slice(x.detach(), output))

        return check


def detach_output(module, args, output):
    return output.detach()


def trace_feeds(model: nn.Module, x: Tensor) -> tuple[list[DropoutSite], list[Feed]]:
    """The sites of ``model`` in forward order and every (site, BN layer) feed, from one eval forward of ``x``.

    Only BN layers with running statistics are fed (one without normalises by the batch at test time
    too), but every BN layer ends a path. The model's modes are as before; nothing else is touched.
    """
    tracer = _FeedTracer()
    handles = []
    with preserved_modes(model), torch.enable_grad(), SiteTracer(model, tracer.perturb) as sites:
        model.eval()
        try:
            for name, bn in batchnorm_layers(model):
                if bn.track_running_stats:
                    handles.append(bn.register_forward_pre_hook(tracer.check_input(name)))
                handles.append(bn.register_forward_hook(detach_output))
            model(x)
        finally:
            for handle in handles:
                handle.remove()
    return list(sites.sites.values()), list(tracer.feeds.values())
