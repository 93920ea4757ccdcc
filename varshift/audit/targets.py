"""The TARGET of ``varshift-audit``, made into a model and the shape of its input.

* ``NAME[:key=value,...]``, NAME one of varshift's models: built by :func:`varshift.models.build_model`
  for a dataset (``dataset=``; cifar10 for the paper's four networks, fashion_mnist for small_cnn and
  mlp, as varshift-train uses them), with the keys ``position``, ``kind``, ``rate``, ``channelwise`` for its
  dropout (default: position none, Bernoulli 0.5) and the family's size parameters.
* ``module:callable[:key=value,...]``: ``callable(**kwargs)`` from an importable module, e.g.
  ``torchvision.models:densenet121:drop_rate=0.2`` (torchvision builds with ``weights=None``, no download).
  Input shape: the model's ``input_shape`` attribute, else 3x224x224.

Values are Python literals (``0.2``, ``True``, ``(32, 64)``, ``'x'``); a bare word is a string.
"""

from __future__ import annotations

import ast
import importlib
from dataclasses import dataclass

from torch import nn

from varshift.audit.auditor import DEFAULT_INPUT_SHAPE
from varshift.data.info import dataset_info
from varshift.models import MODEL_NAMES, build_model, family_parameters
from varshift.models.registry import DEFAULT_DROPOUT
from varshift.models.slots import SPEC_KEYS

PAPER_NETWORKS = MODEL_NAMES[:4]
FORMS = (f"TARGET is a varshift model name ({', '.join(MODEL_NAMES)})[:key=value,...] or "
         "module:callable[:key=value,...], e.g. torchvision.models:densenet121:drop_rate=0.2")


class TargetError(ValueError):
    """A TARGET that cannot be made into a model; the message names the wrong part and what is allowed."""


@dataclass(frozen=True)
class Target:
    model: nn.Module
    input_shape: tuple[int, ...]


def parse_kwargs(text: str) -> dict:
    """``"a=1,b=(2, 3),c=word"`` -> ``{"a": 1, "b": (2, 3), "c": "word"}``."""
    if not text.strip():
        return {}
    allowed = "use key=value pairs separated by commas, values Python literals or bare words"
    try:
        call = ast.parse(f"f({text})", mode="eval").body
    except SyntaxError:
        raise TargetError(f"keyword arguments {text!r} cannot be read; {allowed}") from None
    if not isinstance(call, ast.Call) or call.args or any(keyword.arg is None for keyword in call.keywords):
        raise TargetError(f"keyword arguments {text!r} cannot be read; {allowed}")
    return {keyword.arg: _value(keyword.value, text, allowed) for keyword in call.keywords}


def _value(node: ast.expr, text: str, allowed: str):
    if isinstance(node, ast.Name):
        return node.id
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise TargetError(f"value {ast.unparse(node)!r} in {text!r} is not a literal; {allowed}") from None


def varshift_target(name: str, kwargs: dict) -> Target:
    dataset = kwargs.pop("dataset", "cifar10" if name in PAPER_NETWORKS else "fashion_mnist")
    dropout = {**DEFAULT_DROPOUT, **{key: kwargs.pop(key) for key in SPEC_KEYS if key in kwargs}}
    position = kwargs.pop("position", "none")
    try:
        info = dataset_info(dataset)
        if "image_size" in family_parameters(name):
            kwargs.setdefault("image_size", info.size)
        model = build_model(name, num_classes=info.num_classes, in_channels=info.channels, dropout=dropout,
                            position=position, **kwargs)
    except ValueError as error:
        raise TargetError(f"varshift model {name!r}: {error}") from None
    return Target(model, (info.channels, info.size, info.size))


def callable_target(module_name: str, attribute: str, kwargs: dict) -> Target:
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise TargetError(f"module {module_name!r} cannot be imported ({error}); {FORMS}") from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise TargetError(f"module {module_name!r} has no callable {attribute!r}; {FORMS}")
    try:
        model = factory(**kwargs)
    except (TypeError, ValueError) as error:
        raise TargetError(f"{module_name}:{attribute}(**{kwargs}) failed: {error}") from None
    if not isinstance(model, nn.Module):
        raise TargetError(f"{module_name}:{attribute}(**{kwargs}) returned a {type(model).__name__}, "
                          "not a torch.nn.Module")
    return Target(model, tuple(getattr(model, "input_shape", DEFAULT_INPUT_SHAPE)))


def load_target(text: str) -> Target:
    """The model TARGET names and its input shape; TargetError for anything that is not a TARGET."""
    parts = text.split(":", 2)
    if parts[0] in MODEL_NAMES:
        return varshift_target(parts[0], parse_kwargs(text.split(":", 1)[1] if len(parts) > 1 else ""))
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise TargetError(f"{text!r} is neither a varshift model name nor module:callable; {FORMS}")
    return callable_target(parts[0], parts[1], parse_kwargs(parts[2] if len(parts) > 2 else ""))
