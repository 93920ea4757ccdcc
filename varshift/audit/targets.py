"""The TARGET of ``varshift-audit``, made into a model and the shape of its input.

* ``NAME[:key=value,...]``, NAME one of varshift's models: built by :func:`varshift.models.build_model`
  for a dataset (``dataset=``; else the one of ``--data``; else cifar10 for the paper's four networks and
  fashion_mnist for small_cnn and mlp, as varshift-train uses them), with the keys ``position``, ``kind``, ``rate``,
  ``channelwise`` for its dropout (default: position none, Bernoulli 0.5) and the family's size parameters.
* ``path/to/file.py:callable[:key=value,...]``: ``callable(**kwargs)`` from a Python file (its folder joins the
  import path, so that the file's own imports of its neighbours work).
* ``module:callable[:key=value,...]``: ``callable(**kwargs)`` from a module that Python imports from the current
  folder or the environment, e.g. ``mymodel:build`` or ``torchvision.models:densenet121:drop_rate=0.2``
  (torchvision builds with ``weights=None``, no download).
  Input shape: the model's ``input_shape`` attribute, else 3x224x224.

Values are Python literals (``0.2``, ``True``, ``(32, 64)``, ``'x'``); a bare word is a string.

A TARGET that names nothing loadable is a :class:`TargetError`; the user's code failing while it is imported or
built (an exception in the module, the factory, a wrong ``input_shape`` attribute) is a :class:`UserCodeError`
naming the stage. Torch and the models are imported when a target is loaded, not with this module.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from varshift.vocabulary import MODEL_NAMES

PAPER_NETWORKS = MODEL_NAMES[:4]
FORMS = (f"TARGET is a varshift model name ({', '.join(MODEL_NAMES)})[:key=value,...], "
         "path/to/file.py:callable[:key=value,...] or module:callable[:key=value,...] (a module in the current "
         "folder or installed), e.g. torchvision.models:densenet121:drop_rate=0.2")


class TargetError(ValueError):
    """A TARGET that cannot be made into a model; the message names the wrong part and what is allowed."""


class UserCodeError(Exception):
    """The user's code raised ``error`` at ``stage`` (importing the module, calling the factory, ...); one line."""

    def __init__(self, stage: str, error: BaseException, hint: str = ""):
        text = " ".join(str(error).split())
        super().__init__(f"{stage} failed: {type(error).__name__}" + (f": {text}" if text else "")
                         + (f"; {hint}" if hint else ""))
        self.stage, self.error = stage, error


@dataclass(frozen=True)
class Target:
    model: object  # a torch.nn.Module
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


def varshift_target(name: str, kwargs: dict, dataset: str | None) -> Target:
    from varshift.data.info import dataset_info
    from varshift.models import build_model, family_parameters
    from varshift.models.registry import DEFAULT_DROPOUT
    from varshift.models.slots import SPEC_KEYS

    dataset = kwargs.pop("dataset", dataset or ("cifar10" if name in PAPER_NETWORKS else "fashion_mnist"))
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


def import_file(path: Path):
    """The module of the Python file ``path``, imported under its own name with its folder on the import path."""
    if not path.is_file():
        raise TargetError(f"file {str(path)!r} does not exist; {FORMS}")
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        del sys.modules[path.stem]
        raise UserCodeError(f"importing {path}", error) from error
    return module


def import_module(name: str):
    """Module ``name``, found as ``python -m`` finds it: in the current folder first, then installed."""
    here = os.getcwd()
    if here not in sys.path:
        sys.path.insert(0, here)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name is None or not (name == error.name or name.startswith(f"{error.name}.")):
            raise UserCodeError(f"importing module {name}", error) from error  # a module that it imports is missing
        raise TargetError(f"module {name!r} cannot be imported ({error}), neither from the current folder "
                          f"{here} nor from the environment; {FORMS}") from None
    except Exception as error:
        raise UserCodeError(f"importing module {name}", error) from error


def shape_of(value, where: str) -> tuple[int, ...]:
    """``value`` as an input shape without the batch dimension; TargetError naming ``where`` otherwise."""
    try:
        shape = tuple(value)
    except TypeError:
        shape = ()
    if not shape or not all(isinstance(side, int) and not isinstance(side, bool) and side > 0 for side in shape):
        raise TargetError(f"{where} = {value!r} is not an input shape (whole numbers > 0 without the batch, e.g. "
                          "(3, 224, 224)); set --input-shape")
    return shape


def callable_target(source: str, attribute: str, kwargs: dict, input_shape: tuple[int, ...] | None) -> Target:
    from torch import nn

    from varshift.audit.auditor import DEFAULT_INPUT_SHAPE

    module = import_file(Path(source)) if source.endswith(".py") else import_module(source)
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise TargetError(f"{source} has no callable {attribute!r}; {FORMS}")
    call = f"{source}:{attribute}({', '.join(f'{key}={value!r}' for key, value in kwargs.items())})"
    try:
        model = factory(**kwargs)
    except Exception as error:
        raise UserCodeError(f"building the model {call}", error) from error
    if not isinstance(model, nn.Module):
        raise TargetError(f"{call} returned a {type(model).__name__}, not a torch.nn.Module")
    if input_shape is None:
        input_shape = shape_of(getattr(model, "input_shape", DEFAULT_INPUT_SHAPE), "the model's input_shape")
    return Target(model, input_shape)


def split_target(text: str) -> list[str]:
    """``[source, callable, kwargs]`` (or fewer): a file path's own colons (``C:``) are not separators."""
    if ".py:" in text:
        source, rest = text.split(".py:", 1)
        return [f"{source}.py", *rest.split(":", 1)]
    return text.split(":", 2)


def load_target(text: str, *, input_shape: tuple[int, ...] | None = None, dataset: str | None = None) -> Target:
    """The model TARGET names and its input shape (``input_shape`` when given); ``dataset``: the dataset a
    varshift model is built for when TARGET names none. TargetError for anything that is not a TARGET,
    UserCodeError when the user's code fails."""
    parts = split_target(text)
    if parts[0] in MODEL_NAMES:
        target = varshift_target(parts[0], parse_kwargs(text.split(":", 1)[1] if len(parts) > 1 else ""), dataset)
        return target if input_shape is None else Target(target.model, input_shape)
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise TargetError(f"{text!r} is neither a varshift model name nor source:callable; {FORMS}")
    return callable_target(parts[0], parts[1], parse_kwargs(parts[2] if len(parts) > 2 else ""), input_shape)
