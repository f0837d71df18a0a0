"""LoRA: ``<lora:…>`` tags resolved to ``.safetensors`` files, checked, loaded, and undone."""

from __future__ import annotations

import bisect
import difflib
import importlib
import math
import os
import re
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from promptweights.errors import (
    InvalidArgumentError,
    InvalidWeightError,
    LimitExceededError,
    NetworkFileError,
    UnknownNameError,
    UnsupportedPipelineError,
    warn_or_raise,
)
from promptweights.limits import MAX_MULTIPLIER
from promptweights.lora_schedules import (
    LoraWeights,
    WeightSchedule,
    _resolve,
    lora_weights,
    weights_per_call,
)
from promptweights.tree import ExtraNetwork

from ._common import _forget_empty_windows, _keep_rng, _read_tensors, _shape, _Snapshot

_ADAPTER_PREFIX = "pw_"
_LORA_KINDS = ("lora", "lyco")


@dataclass(frozen=True, slots=True)
class _Scan:
    """One scan of a LoRA folder: the files by name, the names of symlinks that lead out of it,
    and the modification time of every folder in it (what says whether the scan is stale)."""

    found: dict[str, Path]
    outside: frozenset[str]
    folders: tuple[tuple[str, int], ...]


# Per folder (resolved): the last scan. A scan is reused while no folder in the tree changed.
_SCANS: dict[Path, _Scan] = {}
_MAX_SCANS = 64


def _folder_times(folders: Sequence[str]) -> tuple[tuple[str, int], ...] | None:
    try:
        return tuple((f, os.stat(f, follow_symlinks=False).st_mtime_ns) for f in folders)
    except OSError:
        return None


def _scan_loras(root: Path) -> _Scan:
    """The ``.safetensors`` files under ``root`` by stem (the first in sorted order wins), cached
    per folder until a folder in the tree changes. Symlinked folders are not entered, and a
    symlinked file counts only when it resolves inside ``root``."""
    cached = _SCANS.get(root)
    if cached is not None and _folder_times([f for f, _ in cached.folders]) == cached.folders:
        return cached
    files: list[Path] = []
    outside: set[str] = set()
    folders: list[str] = []
    for folder, _, names in os.walk(root, followlinks=False):
        folders.append(folder)
        for name in names:
            if not name.endswith(".safetensors"):
                continue
            path = Path(folder, name)
            if path.is_symlink():
                target = path.resolve()
                if not target.is_relative_to(root):
                    outside.add(path.stem)
                    continue
            files.append(path)
    found: dict[str, Path] = {}
    for path in sorted(files):
        found.setdefault(path.stem, path)
    times = _folder_times(folders)
    scan = _Scan(found, frozenset(outside - set(found)), times or ())
    if times is not None:
        if len(_SCANS) >= _MAX_SCANS:
            _SCANS.pop(next(iter(_SCANS)))
        _SCANS[root] = scan
    return scan


def _available_loras(
    lora_dir: str | Path | None, loras: Mapping[str, str | Path] | None
) -> tuple[dict[str, Path], frozenset[str]]:
    """The LoRAs by name, and the names in ``lora_dir`` that are symlinks out of it."""
    available: dict[str, Path] = {}
    outside: frozenset[str] = frozenset()
    if lora_dir is not None:
        root = Path(lora_dir)
        if not root.is_dir():
            raise NetworkFileError(f"lora_dir {str(root)!r} is not a directory")
        scan = _scan_loras(root.resolve())
        available.update(scan.found)
        outside = scan.outside
    for name, given in (loras or {}).items():
        available[name] = Path(given)
    return available, outside


def _unknown_lora(name: str, available: Mapping[str, Path]) -> UnknownNameError:
    """The error for an unknown LoRA: up to five close names, not the whole folder."""
    close = difflib.get_close_matches(name, list(available), n=5)
    error = UnknownNameError("LoRA", name, close)
    hint = f"did you mean {', '.join(map(repr, close))}?" if close else "no name is close"
    error.args = (f"unknown LoRA {name!r}; {hint} ({len(available)} LoRAs known)",)
    return error


def _check_multipliers(tag: ExtraNetwork, source: str | None) -> None:
    for what, value in (("text-encoder", tag.te_weight), ("UNet", tag.unet_weight)):
        if not math.isfinite(value) or abs(value) > MAX_MULTIPLIER:
            raise InvalidWeightError(
                f"LoRA {tag.name!r}: {what} multiplier {value!r} is not a finite number within "
                f"±{MAX_MULTIPLIER:g} (promptweights.limits.MAX_MULTIPLIER)",
                source=source if source is not None and tag.pos >= 0 else None,
                pos=tag.pos if source is not None and tag.pos >= 0 else None,
            )


def _model_dtypes(pipe: Any) -> set[torch.dtype]:
    """The floating-point dtypes LoRA weights would be used in: those of the adaptable modules."""
    dtypes: set[torch.dtype] = set()
    for name in getattr(pipe, "_lora_loadable_modules", ()):
        module = getattr(pipe, name, None)
        if isinstance(module, torch.nn.Module):
            dtypes |= {p.dtype for p in module.parameters() if p.is_floating_point()}
    return dtypes


def _adapter_name(name: str) -> str:
    return _ADAPTER_PREFIX + re.sub(r"\W", "_", name)


@dataclass(slots=True)
class _LoraPlan:
    """Tagged LoRAs resolved to files, read and checked before the pipeline is touched."""

    adapters: list[tuple[str, float, float]]  # adapter name, te weight, unet weight
    state_dicts: dict[str, dict[str, Tensor]]
    labels: dict[str, str] = field(default_factory=dict)  # adapter name -> "LoRA 'x' ('path')"


def _plan_loras(
    pipe: Any,
    networks: Sequence[ExtraNetwork],
    lora_dir: str | Path | None,
    loras: Mapping[str, str | Path] | None,
    source: str | None = None,
) -> _LoraPlan | None:
    if lora_dir is None and loras is None:
        return None
    tags = [n for n in networks if n.kind in ("lora", "lyco")]
    for tag in tags:
        _check_multipliers(tag, source)
    available, outside = _available_loras(lora_dir, loras)
    loaded = _loaded_adapters(pipe)
    plan = _LoraPlan([], {})
    for tag in tags:
        if tag.name in outside:
            raise NetworkFileError(
                f"LoRA {tag.name!r} in lora_dir is a symlink to a file outside it; "
                "promptweights does not follow those"
            )
        if tag.name not in available:
            raise _unknown_lora(tag.name, available)
        path = available[tag.name]
        if path.suffix != ".safetensors":
            raise NetworkFileError(
                f"LoRA {tag.name!r} is {str(path)!r}: only .safetensors files are loaded "
                "(pickled checkpoints can run code)"
            )
        if not path.is_file():
            raise NetworkFileError(f"LoRA {tag.name!r}: no file at {str(path)!r}")
        if not hasattr(pipe, "load_lora_weights") or not hasattr(pipe, "lora_state_dict"):
            raise UnsupportedPipelineError(f"{type(pipe).__name__} cannot load LoRA weights")
        adapter = _adapter_name(tag.name)
        if adapter not in loaded and adapter not in plan.state_dicts:
            label = f"LoRA {tag.name!r} ({str(path)!r})"
            state = _read_tensors(label, path, dtypes=_model_dtypes(pipe))
            _check_lora(pipe, label, state)
            plan.state_dicts[adapter] = state
            plan.labels[adapter] = label
        plan.adapters.append((adapter, tag.te_weight, tag.unet_weight))
    if not plan.adapters and not any(a.startswith(_ADAPTER_PREFIX) for a in loaded):
        return None
    return plan


# A LoRA key as diffusers hands it to peft: module path, then the LoRA part.
_LORA_KEY = re.compile(
    r"^(?P<module>.+)\.(?P<part>lora_A|lora_B|lora_embedding_A|lora_embedding_B"
    r"|lora_magnitude_vector|alpha|diff|diff_b|lokr_\w+)(?:\.(?P<param>weight|bias))?$"
)


def _check_lora(pipe: Any, label: str, state: Mapping[str, Tensor]) -> None:
    """Check every LoRA tensor against the layer it targets in ``pipe``, before loading anything.

    The keys are read as diffusers' ``load_lora_weights`` reads them (the pipeline's own
    ``lora_state_dict``, which converts kohya ``lora_unet_*``/``lora_te_*`` files, then diffusers'
    conversion to peft names), so the module names are the ones peft would adapt.
    """
    loaders: Any = importlib.import_module("diffusers.loaders.lora_pipeline")

    options: dict[str, Any] = {"return_lora_metadata": True}
    if isinstance(pipe, loaders.StableDiffusionXLLoraLoaderMixin) and getattr(pipe, "unet", None):
        options["unet_config"] = pipe.unet.config  # as its load_lora_weights maps SGM blocks
    try:
        out = pipe.lora_state_dict(dict(state), **options)
    except Exception as exc:
        raise NetworkFileError(f"{label}: diffusers cannot read its keys ({exc})") from exc
    converted: Mapping[str, Tensor] = out[0] if isinstance(out, tuple) else out
    if not converted:
        raise NetworkFileError(f"{label} holds no LoRA weights")
    loadable = [
        name
        for name in getattr(pipe, "_lora_loadable_modules", ())
        if isinstance(getattr(pipe, name, None), torch.nn.Module)
    ]
    groups: dict[str, dict[str, Tensor]] = {}
    for key, tensor in converted.items():
        component, _, rest = key.partition(".")
        if component not in loadable or not rest:
            raise NetworkFileError(
                f"{label}: key {key!r} targets {component!r}, which {type(pipe).__name__} does "
                f"not load LoRA weights into (it has {', '.join(loadable)})"
            )
        groups.setdefault(component, {})[rest] = tensor
    # Errors name the file's own key; diffusers' conversions re-key the same tensor objects.
    origin = {id(tensor): key for key, tensor in state.items()}
    for component, weights in groups.items():
        model = getattr(pipe, component)
        peft = _peft_keys(label, component, model, weights)
        _check_lora_layers(label, component, model, peft, origin)


def _peft_keys(
    label: str, component: str, model: Any, weights: dict[str, Tensor]
) -> dict[str, Tensor]:
    """The keys of one component as diffusers passes them to peft."""
    convert: Any = importlib.import_module("diffusers.utils.state_dict_utils")
    if any(".lokr_" in key for key in weights):
        return weights
    try:
        if component.startswith("text_encoder"):
            weights = convert.convert_state_dict_to_peft(
                convert.convert_state_dict_to_diffusers(weights)
            )
            if not hasattr(model, "text_model"):
                weights = {k.removeprefix("text_model."): v for k, v in weights.items()}
        elif "lora_A" not in next(iter(weights)):
            weights = convert.convert_unet_state_dict_to_peft(weights)
    except Exception as exc:
        raise NetworkFileError(
            f"{label}: diffusers cannot read its {component} keys ({exc})"
        ) from exc
    return dict(weights)


def _check_lora_layers(
    label: str,
    component: str,
    model: Any,
    weights: Mapping[str, Tensor],
    origin: Mapping[int, str],
) -> None:
    layers: dict[str, dict[str, tuple[str, Tensor]]] = {}
    for key, tensor in weights.items():
        name = f"{component}.{key}"
        original = origin.get(id(tensor), name)
        shown = repr(name) if original == name else f"{original!r} (diffusers: {name!r})"
        match = _LORA_KEY.match(key)
        if match is None:
            raise NetworkFileError(
                f"{label}: key {shown} is not a LoRA weight (lora_A/lora_B, lora_down/lora_up, "
                "alpha…)"
            )
        part = match["part"] + (f".{match['param']}" if match["param"] else "")
        layers.setdefault(match["module"], {})[part] = (shown, tensor)
    for path, parts in layers.items():
        where = f"{component}.{path}"
        try:
            target = model.get_submodule(path)
        except AttributeError:
            first = next(iter(parts.values()))[0]
            raise NetworkFileError(
                f"{label}: key {first} targets {where}, which this pipeline does not have"
            ) from None
        while isinstance(getattr(target, "base_layer", None), torch.nn.Module):
            target = target.base_layer  # already wrapped by peft for another LoRA
        _check_lora_layer(label, where, target, parts)


def _shape_error(
    label: str, key: str, tensor: Tensor, where: str, what: str, expected: str
) -> NetworkFileError:
    return NetworkFileError(
        f"{label}: key {key} has shape {_shape(tensor.shape)} but {where} ({what}) needs {expected}"
    )


def _lora_target(layer: Any) -> tuple[str, int, int, tuple[int, ...], int, str | None, str]:
    """What a layer is, its fan-in, fan-out, kernel and groups, and its down and up part names."""
    if isinstance(layer, torch.nn.Linear):
        n_in, n_out = layer.in_features, layer.out_features
        return f"Linear {n_in}→{n_out}", n_in, n_out, (), 1, "lora_A.weight", "lora_B.weight"
    if isinstance(layer, torch.nn.modules.conv._ConvNd):
        n_in, n_out, kernel = layer.in_channels, layer.out_channels, tuple(layer.kernel_size)
        what = f"{type(layer).__name__} {n_in}→{n_out}, kernel {'×'.join(map(str, kernel))}"
        return what, n_in, n_out, kernel, layer.groups, "lora_A.weight", "lora_B.weight"
    if isinstance(layer, torch.nn.Embedding):
        n_in, n_out = layer.num_embeddings, layer.embedding_dim
        what = f"Embedding {n_in}×{n_out}"
        return what, n_in, n_out, (), 1, "lora_embedding_A", "lora_embedding_B"
    return type(layer).__name__, 0, 0, (), 1, None, ""


def _check_lora_layer(
    label: str, where: str, layer: Any, parts: Mapping[str, tuple[str, Tensor]]
) -> None:
    """The shapes of one target layer's LoRA tensors; the rank ``r`` is the down weight's."""
    if any(part.startswith("lokr_") for part in parts):
        return  # LoKr factors: the layer exists; diffusers checks their product
    what, fan_in, fan_out, kernel, groups, down, up = _lora_target(layer)
    _check_full_parts(label, where, layer, what, parts)
    lora = sorted(part for part in parts if part not in ("alpha", "diff", "diff_b"))
    if not lora:
        return
    if down is None:
        raise NetworkFileError(
            f"{label}: key {parts[lora[0]][0]} targets {where}, a {what}, which a LoRA cannot adapt"
        )
    unknown = [part for part in lora if part not in (down, up, *_LORA_EXTRAS)]
    if unknown:
        raise NetworkFileError(
            f"{label}: key {parts[unknown[0]][0]} is not a LoRA weight for {where} ({what})"
        )
    if down not in parts or up not in parts:
        have, missing = (down, up) if down in parts else (up, down)
        key = parts[have][0] if have in parts else parts[lora[0]][0]
        raise NetworkFileError(f"{label}: key {key} has no matching {missing!r} for {where}")
    down_key, a = parts[down]
    rank = int(a.shape[0]) if a.ndim else 0
    if rank < 1 or tuple(a.shape) != (rank, fan_in, *kernel):
        expected = _shape((rank, fan_in, *kernel)) if rank else f"(r, {fan_in}, …) with r ≥ 1"
        raise _shape_error(label, down_key, a, where, what, expected)
    up_key, b = parts[up]
    up_shape = (fan_out, rank // groups, *(1,) * len(kernel))
    if tuple(b.shape) != up_shape:
        raise _shape_error(
            label, up_key, b, where, what, f"{_shape(up_shape)} (rank {rank}, from its down weight)"
        )
    _check_lora_extras(label, where, what, parts, fan_out)


#: The tensors a LoRA may hold beside its down and up weights, all of ``fan_out`` values.
_LORA_EXTRAS = ("lora_B.bias", "lora_magnitude_vector", "lora_magnitude_vector.weight")


def _check_full_parts(
    label: str, where: str, layer: Any, what: str, parts: Mapping[str, tuple[str, Tensor]]
) -> None:
    """``alpha`` is one number; ``diff``/``diff_b`` (full weight changes) fit the layer's own."""
    for part, (key, tensor) in parts.items():
        if part == "alpha" and tensor.numel() != 1:
            raise _shape_error(label, key, tensor, where, what, "one number")
        if part in ("diff", "diff_b"):
            own = getattr(layer, "weight" if part == "diff" else "bias", None)
            if not isinstance(own, Tensor):
                raise NetworkFileError(
                    f"{label}: key {key} changes a {'bias' if part == 'diff_b' else 'weight'} "
                    f"of {where} ({what}), which has none"
                )
            if tensor.shape != own.shape:
                raise _shape_error(label, key, tensor, where, what, _shape(own.shape))


def _check_lora_extras(
    label: str, where: str, what: str, parts: Mapping[str, tuple[str, Tensor]], fan_out: int
) -> None:
    if "lora_B.bias" in parts and tuple(parts["lora_B.bias"][1].shape) != (fan_out,):
        raise _shape_error(label, *parts["lora_B.bias"], where, what, _shape((fan_out,)))
    for part in _LORA_EXTRAS[1:]:
        if part in parts and parts[part][1].numel() != fan_out:
            raise _shape_error(label, *parts[part], where, what, f"{fan_out} values")


def _loaded_adapters(pipe: Any) -> set[str]:
    get_list_adapters = getattr(pipe, "get_list_adapters", None)
    if get_list_adapters is None:
        return set()
    try:
        listed: dict[str, list[str]] = get_list_adapters()
    except (ValueError, AttributeError):  # no PEFT layers at all
        return set()
    return {name for names in listed.values() for name in names}


def _load_lora(pipe: Any, adapter: str, state: dict[str, Tensor], label: str) -> None:
    try:
        with warnings.catch_warnings():
            # peft warns about every second adapter in a model and lists the other adapters' keys
            # as "missing": noise for the multi-adapter use diffusers documents.
            warnings.filterwarnings("ignore", message="Already found a `peft_config`")
            warnings.filterwarnings("ignore", message="Loading adapter weights from state_dict")
            pipe.load_lora_weights(dict(state), adapter_name=adapter)
    except Exception as exc:
        raise NetworkFileError(f"{label}: diffusers could not load it ({exc})") from exc


def _set_weights(pipe: Any, weights: Mapping[str, tuple[float, float]]) -> None:
    """Activate this package's adapters at ``weights`` (adapter name -> text-encoder and UNet
    weight; those not named at 0) with ``pipe.set_adapters``, one weight per component."""
    listed: dict[str, list[str]] = pipe.get_list_adapters()
    ours = sorted({n for parts in listed.values() for n in parts if n.startswith(_ADAPTER_PREFIX)})
    values: list[dict[str, float]] = []
    for adapter in ours:
        te, unet = weights.get(adapter, (0.0, 0.0))
        values.append(
            {
                component: (te if component.startswith("text_encoder") else unet)
                for component, adapters in listed.items()
                if adapter in adapters
            }
        )
    if ours:
        pipe.set_adapters(ours, adapter_weights=values)


def _apply_loras(pipe: Any, plan: _LoraPlan) -> Callable[[], None]:
    """Load and activate the planned adapters; return a function that undoes it.

    The undo puts the pipeline back exactly as it was before (modules, adapters and their weights,
    the caller's own active adapters), whether the failure comes from diffusers while loading or
    from a later step of :func:`encode`.
    """
    if not hasattr(pipe, "load_lora_weights"):
        raise UnsupportedPipelineError(f"{type(pipe).__name__} cannot load LoRA weights")
    snapshot = _Snapshot.of_pipeline(pipe)
    try:
        # peft draws the new layers' initial weights at random: keep the caller's RNG.
        with _keep_rng():
            for adapter, state in plan.state_dicts.items():
                _load_lora(pipe, adapter, state, plan.labels.get(adapter, adapter))
        weights: dict[str, tuple[float, float]] = {}
        for adapter, te, unet in plan.adapters:
            weights.setdefault(adapter, (te, unet))  # the first tag of a name wins
        _set_weights(pipe, weights)
    except BaseException:
        snapshot.restore()
        _forget_empty_windows(pipe)
        raise
    _forget_empty_windows(pipe)

    def undo() -> None:
        snapshot.restore()
        _forget_empty_windows(pipe)

    return undo


# --- weight schedules at run time (loractl's <lora:name:0@0,1@0.5>) -------------------------------


@dataclass(slots=True)
class _LoraRun:
    """The weight of every scheduled adapter at every model call of one pass.

    ``te`` and ``unet`` hold, per call, one weight per adapter (in ``adapters`` order); calls past
    the last keep its weights. The text-encoder weights come in runs of equal values: ``te_sets``
    are the distinct sets (the conditioning is encoded once under each), ``te_ends`` the last call
    of each run and ``te_keys`` the set it uses.
    """

    adapters: tuple[str, ...]
    te: list[tuple[float, ...]]
    unet: list[tuple[float, ...]]
    te_sets: list[tuple[float, ...]] = field(default_factory=list)
    te_ends: list[int] = field(default_factory=list)
    te_keys: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        for call, weights in enumerate(self.te):
            if weights not in self.te_sets:
                self.te_sets.append(weights)
            key = self.te_sets.index(weights)
            if self.te_keys and self.te_keys[-1] == key:
                self.te_ends[-1] = call
            else:
                self.te_keys.append(key)
                self.te_ends.append(call)

    @property
    def te_changes(self) -> bool:
        """Whether the text-encoder weights (so the conditioning) change during the pass."""
        return len(self.te_sets) > 1

    @property
    def unet_changes(self) -> bool:
        """Whether the UNet weights change during the pass."""
        return any(weights != self.unet[0] for weights in self.unet)

    def te_key(self, k: int) -> int:
        """Which of ``te_sets`` call ``k`` uses."""
        return self.te_keys[min(bisect.bisect_left(self.te_ends, k), len(self.te_ends) - 1)]

    def unet_at(self, k: int) -> tuple[float, ...]:
        """The UNet weights at call ``k``."""
        return self.unet[min(max(k, 0), len(self.unet) - 1)]

    def weights(
        self, k: int, te: tuple[float, ...] | None = None
    ) -> dict[str, tuple[float, float]]:
        """Adapter name -> (text-encoder, UNet) weight at call ``k`` (``te``: other TE weights)."""
        te_weights = self.te[min(max(k, 0), len(self.te) - 1)] if te is None else te
        return dict(zip(self.adapters, zip(te_weights, self.unet_at(k), strict=True), strict=True))

    def apply(self, pipe: Any, k: int) -> None:
        """Give ``pipe``'s adapters their weights at call ``k`` (``set_adapters``)."""
        _set_weights(pipe, self.weights(k))

    def te_runs(self, pipe: Any) -> Iterator[tuple[float, ...]]:
        """Set each distinct text-encoder weight set in turn, yielding it (encode under each);
        then leave the adapters at call 0's weights."""
        for te in self.te_sets:
            _set_weights(pipe, self.weights(0, te))
            _forget_empty_windows(pipe)
            yield te
        self.apply(pipe, 0)
        _forget_empty_windows(pipe)


def _check_schedule(tag: ExtraNetwork, what: str, schedule: WeightSchedule, source: str) -> None:
    for value in schedule.weights:
        if not math.isfinite(value) or abs(value) > MAX_MULTIPLIER:
            where = tag.pos >= 0 and bool(source)
            raise InvalidWeightError(
                f"LoRA {tag.name!r}: {what} weight {value!r} in {str(schedule)!r} is not a finite "
                f"number within ±{MAX_MULTIPLIER:g} (promptweights.limits.MAX_MULTIPLIER)",
                source=source if where else None,
                pos=tag.pos if where else None,
            )


def _lora_run(
    networks: Sequence[ExtraNetwork],
    *,
    steps: int | None,
    order: int,
    hires: bool,
    calls: int | None,
    strict: bool,
    source: str,
    max_sets: int,
) -> _LoraRun | None:
    """The run-time weights of the LoRA tags in ``networks`` (the first prompt's), or ``None``
    when none changes during the pass (``encode`` then only sets their fixed weights).

    ``steps``: the pass's sampler steps (loractl's fractions are of these); ``calls``: the model
    calls to cover (the pass's schedule length); ``order``: model calls per sampler step.
    A bad schedule entry warns (raises with its position when ``strict``); a schedule without
    ``steps``, a weight that is not finite or past ``MAX_MULTIPLIER``, or more distinct
    text-encoder weight sets than ``max_sets`` raise before anything is loaded.
    """
    tags = [n for n in networks if n.kind in _LORA_KINDS]
    resolved: list[LoraWeights] = []
    for tag in tags:
        weights, problems = _resolve(tag)
        if problems:
            if strict:
                lora_weights(tag, strict=True, source=source)
            warn_or_raise(
                f"LoRA tag {tag.source or tag.name}: {problems[0][1]}; that entry is left out",
                strict=False,
                stacklevel=4,
            )
        te, unet = (weights.hires_te, weights.hires_unet) if hires else (weights.te, weights.unet)
        _check_schedule(tag, "text-encoder", te, source)
        _check_schedule(tag, "UNet", unet, source)
        resolved.append(weights)
    changing = [t for t, w in zip(tags, resolved, strict=True) if _changes(w, hires)]
    # A hires pass's own fixed weights (hr=0.6) differ from the ones the tag was loaded at.
    moved = any(
        w.at(0, 3, hires=hires) != (t.te_weight, t.unet_weight)
        for t, w in zip(tags, resolved, strict=True)
    )
    if not changing and not moved:
        return None
    if changing and steps is None:
        raise InvalidArgumentError(
            f"the LoRA tag {changing[0].source or changing[0].name} changes its weight during "
            "sampling: pass steps= (the pipeline's num_inference_steps) so that its steps are "
            "known"
        )
    first: dict[str, int] = {}
    for index, tag in enumerate(tags):
        first.setdefault(_adapter_name(tag.name), index)  # the first tag of a name wins
    per_call = weights_per_call(
        [resolved[i] for i in first.values()],
        steps or 1,
        order=order,
        hires=hires,
        calls=calls if changing and calls else 1,
    )
    run = _LoraRun(tuple(first), [te for te, _ in per_call], [unet for _, unet in per_call])
    if len(run.te_sets) > max_sets:
        raise LimitExceededError(
            f"the LoRA text-encoder weights take {len(run.te_sets)} distinct values, each an "
            f"encoding of the prompts; the limit is {max_sets} (variants)"
        )
    return run


def _changes(weights: LoraWeights, hires: bool) -> bool:
    te, unet = (weights.hires_te, weights.hires_unet) if hires else (weights.te, weights.unet)
    return not (te.constant and unet.constant)
