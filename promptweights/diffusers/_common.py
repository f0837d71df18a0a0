"""Helpers shared by the LoRA and textual-inversion loaders: safetensors reading, undo, and
forgetting the text encoders' cached empty windows after their weights change."""

from __future__ import annotations

import contextlib
import copy
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from promptweights.encoders import forget
from promptweights.errors import (
    NetworkFileError,
)

_TEXT_ENCODERS = ("text_encoder", "text_encoder_2", "text_encoder_3")


def _forget_empty_windows(pipe: Any) -> None:
    """Drop the cached empty windows of every text encoder of ``pipe`` (their weights changed).

    The cache notices new parameters, scales and in-place writes by itself
    (``promptweights.encoders``); loaders call this too, for writes it cannot see.
    """
    for name in _TEXT_ENCODERS:
        model = getattr(pipe, name, None)
        if model is not None:
            forget(model)


@contextlib.contextmanager
def _keep_rng() -> Iterator[None]:
    """Run a block without advancing the global torch RNG (CPU, and CUDA where it is set up)."""
    initialized: Any = torch.cuda.is_initialized
    cuda = list(range(torch.cuda.device_count())) if initialized() else []
    with torch.random.fork_rng(devices=cuda):
        yield


def _read_tensors(label: str, path: Path, dtypes: Iterable[torch.dtype] = ()) -> dict[str, Tensor]:
    """Read a ``.safetensors`` file whose tensors must all be floating point and finite, in their
    own dtype and in each of ``dtypes`` (the model's: a float64 value past float32's range is
    infinite once loaded into a float32 model)."""
    dtypes = [d for d in dtypes if d.is_floating_point and torch.finfo(d).bits > 8]
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except Exception as exc:  # corrupt, truncated, or not safetensors despite its name
        raise NetworkFileError(f"{label} is not a readable .safetensors file: {exc}") from exc
    if not state:
        raise NetworkFileError(f"{label} holds no tensors")
    for key, tensor in state.items():
        if key.endswith(".alpha") and tensor.numel() == 1 and tensor.dtype != torch.bool:
            tensor = tensor.double()  # kohya's scaling alpha: a number, integer in some files
        if not torch.is_floating_point(tensor):
            raise NetworkFileError(
                f"{label}: tensor {key!r} is {tensor.dtype}; weights must be floating point"
            )
        values = tensor if tensor.element_size() > 1 else tensor.float()  # float8: no isfinite
        if not bool(torch.isfinite(values).all()):
            raise NetworkFileError(f"{label}: tensor {key!r} holds NaN or infinite values")
        for dtype in dtypes:
            if dtype != values.dtype and not bool(torch.isfinite(values.to(dtype)).all()):
                raise NetworkFileError(
                    f"{label}: tensor {key!r} holds values past the range of "
                    f"{str(dtype).removeprefix('torch.')}, the model's dtype"
                )
    return state


def _shape(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(n) for n in shape) + ("," if len(shape) == 1 else "") + ")"


# How _Snapshot copies a container attribute (saved items only: restored in place, in order).
_COPIES: dict[type, Callable[[Any], Any]] = {dict: dict, OrderedDict: dict, list: list, set: set}


class _Snapshot:
    """The Python-level state of some objects, restorable in place after a failed change.

    For every given object, and every submodule of a given module, it keeps the attributes and a
    copy of each dict, list and set attribute (a module's ``_modules``, ``_parameters``, hook
    dicts, peft's ``scaling``, ``training``…), plus which tensor each parameter holds and whether it
    requires grad. :meth:`restore` puts all of
    it back into the same objects: modules wrapped or added by peft, registered hooks, changed
    adapter weights and resized embedding matrices are undone; tensor values written in place are
    not (LoRA and textual-inversion loading write none of the caller's). ``deep`` objects (a
    tokenizer, whose Rust backend changes in place) are deep-copied instead.
    """

    def __init__(self, objects: Sequence[Any], deep: Sequence[Any] = ()) -> None:
        self._saved: list[tuple[Any, dict[str, Any], dict[str, Any]]] = []
        self._params: list[tuple[torch.nn.Parameter, Tensor, bool]] = []
        self._deep = [(obj, copy.deepcopy(vars(obj))) for obj in deep]
        seen: set[int] = set()
        for obj in objects:
            members = list(obj.modules()) if isinstance(obj, torch.nn.Module) else [obj]
            for member in members:
                state = getattr(member, "__dict__", None)
                if state is None or id(member) in seen:
                    continue
                seen.add(id(member))
                attrs = dict(state)
                contents = {
                    name: _COPIES[type(value)](value)
                    for name, value in attrs.items()
                    if type(value) in _COPIES
                }
                self._saved.append((member, attrs, contents))
                if isinstance(member, torch.nn.Module):
                    self._params += [
                        (p, p.data, p.requires_grad)
                        for p in member._parameters.values()
                        if p is not None
                    ]

    @classmethod
    def of_pipeline(cls, pipe: Any) -> _Snapshot:
        """The pipeline object, its module components (all submodules) and their configs."""
        objects: list[Any] = [pipe]
        for component in getattr(pipe, "components", {}).values():
            if isinstance(component, torch.nn.Module):
                objects.append(component)
                config = getattr(component, "config", None)
                if config is not None and not isinstance(config, Mapping):
                    objects.append(config)
        return cls(objects)

    def restore(self) -> None:
        """Put every saved attribute, container and parameter tensor back."""
        for member, attrs, contents in self._saved:
            for name, saved in contents.items():
                container = attrs[name]
                if _same_contents(container, saved):
                    continue
                if isinstance(container, list):
                    container[:] = saved
                else:
                    container.clear()
                    container.update(saved)
            state = member.__dict__
            if state.keys() != attrs.keys() or any(state[k] is not v for k, v in attrs.items()):
                state.clear()
                state.update(attrs)
        for param, data, requires_grad in self._params:
            if param.requires_grad != requires_grad:
                param.requires_grad_(requires_grad)  # peft freezes the layers it adapts
            current = param.data
            if (
                current.data_ptr() != data.data_ptr()
                or current.shape != data.shape
                or current.dtype != data.dtype
                or current.device != data.device
            ):
                param.data = data
        for obj, saved in self._deep:
            vars(obj).clear()
            vars(obj).update(saved)


def _same_contents(container: Any, saved: Any) -> bool:
    if len(container) != len(saved):
        return False
    if isinstance(container, dict):
        return all(k in container and container[k] is v for k, v in saved.items())
    if isinstance(container, list):
        return all(a is b for a, b in zip(container, saved, strict=True))
    return bool(container == saved)
