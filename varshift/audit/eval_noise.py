"""Dropout that stays on in eval mode: two eval-mode forwards of one input that differ.

``F.dropout(x, p)`` defaults to ``training=True``, so a module that forgets to pass ``self.training``
drops units at test time too. The model runs twice in eval mode on the same input, each time from a
different RNG state (forked, so the caller's RNG goes on as before), and a forward hook on every module
records a fingerprint of its output in the order the modules finish. The first module whose output
differs is the innermost one whose own forward draws noise: its children finish before it with equal
outputs, the modules that consume its output finish after it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from varshift.audit.sites import MODEL_OWNER
from varshift.bn import model_device, preserved_modes

# Relative tolerance of two fingerprints of one output: far above the rounding of a reordered reduction
# on a GPU, far below the change dropping even one unit of a large tensor makes to its sum of squares.
FINGERPRINT_RTOL = 1e-5


@dataclass(frozen=True)
class EvalNoise:
    """The first module whose eval-mode output differs between two forwards of one input."""

    module: str  # qualified name, (model) for the model itself
    layer: str  # its class


def tensors_in(output) -> list[Tensor]:
    """The tensors in a module output: a tensor, or tuples, lists and dicts of them (nested)."""
    if isinstance(output, Tensor):
        return [output]
    if isinstance(output, Mapping):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        return [tensor for item in output for tensor in tensors_in(item)]
    return []


def fingerprint(output) -> list[float]:
    """Sum of absolute values and sum of squares of every tensor in ``output``."""
    values = []
    for tensor in tensors_in(output):
        if not tensor.is_complex():
            x = tensor.detach().to(torch.float64)
            values += [x.abs().sum().item(), x.square().sum().item()]
    return values


def _record_outputs(model: nn.Module, x: Tensor, seed: int) -> list[tuple[str, str, list[float]]]:
    record = []
    handles = [module.register_forward_hook(
        lambda module, args, output, name=name: record.append((name or MODEL_OWNER, type(module).__name__,
                                                               fingerprint(output))))
        for name, module in model.named_modules()]
    device = model_device(model)
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return record


def first_eval_divergence(model: nn.Module, x: Tensor) -> EvalNoise | None:
    """The module whose eval-mode output first differs between two forwards of ``x``, or None.

    The model's modes are as before.
    """
    with preserved_modes(model), torch.no_grad():
        model.eval()
        first, second = (_record_outputs(model, x, seed) for seed in (0, 1))
    for index in range(max(len(first), len(second))):
        one = first[index] if index < len(first) else None
        other = second[index] if index < len(second) else None
        if not _same_output(one, other):
            name, layer, _ = one or other
            return EvalNoise(name, layer)
    return None


def _same_output(one, other) -> bool:
    if one is None or other is None or one[0] != other[0] or len(one[2]) != len(other[2]):
        return False
    return all(math.isclose(a, b, rel_tol=FINGERPRINT_RTOL) for a, b in zip(one[2], other[2], strict=True))
