"""The diffusers adapter: an A1111 prompt in, the keyword arguments of a diffusers pipeline out.

:func:`encode` reads an A1111 prompt (weights, ``BREAK``, prompt editing ``[a:b:when]``,
alternation ``[a|b]``, ``AND``, ``<lora:…>`` tags, textual-inversion names) and returns a
:class:`Conditioning` whose :meth:`~Conditioning.pipeline_kwargs` go straight into the pipeline::

    cond = promptweights.diffusers.encode(pipe, "a (red:1.2) [cat:dog:0.5]", "blurry", steps=20)
    image = pipe(**cond.pipeline_kwargs(), num_inference_steps=20).images[0]

Families: SD 1.x/2.x, SDXL (base and refiner), SD3/3.5 (with or without T5) and Flux.1, text to
image and image to image. What A1111 does and where it is done here:

* **Order of operations** (a1111-behaviour.md §1): comments and extra-network tags are removed
  first, then the positive prompt is split at ``AND``, then every part and the negative prompt are
  expanded into their schedules, then weighted and chunked by :func:`promptweights.builder.build`.
  Every text of every schedule is encoded up front in one batched pass per text encoder; nothing is
  encoded while sampling.
* **Prompt editing and alternation at run time** (§4.4–4.5): the conditioning at denoiser call ``k``
  (0-based) is the first schedule entry with ``k <= end``. :meth:`~Conditioning.pipeline_kwargs`
  adds a ``callback_on_step_end`` that, at the end of loop iteration ``i``, swaps in the
  conditioning of call ``i + 1``. diffusers runs one denoiser call per loop iteration, also for
  second-order schedulers (whose timestep list is doubled), so ``i`` counts model calls exactly as
  A1111's ``k`` does; for those schedulers (``scheduler.order == 2``) the schedule length is
  ``2 · steps`` as in A1111. img2img keeps the full-length schedule and starts at ``k = 0``.
* **AND** (§6): ``denoised = u + Σ wᵢ · cfg · (cᵢ − u)``. A pipeline can only run one positive per
  image, so this needs the denoiser call itself: :meth:`Conditioning.attach` is a context manager
  that registers a forward pre-hook and a forward hook on ``pipe.unet`` (or ``pipe.transformer``)
  and removes them on exit. The pre-hook turns the ``[uncond, cond]`` batch into
  ``[uncond, cond₁ … condⱼ]``; the forward hook returns ``[u, u + Σ wᵢ (cᵢ − u)]``, which the
  pipeline's own guidance formula turns into A1111's. No pipeline attribute is replaced and the
  module is exactly as before after the ``with`` block. The hook counts denoiser calls itself, so
  editing inside AND parts switches at the same calls.
* **Chunks and padding** (§6.3, §7, §9): positive and negative always have the same length.
  Positive conds of different lengths (AND parts, images of a batch) are stacked by repeating the
  last token vector, as A1111 stacks them; cond and uncond are then padded with encoded empty-prompt
  chunks (A1111's "Pad conds": a pipeline runs both in one batch). SDXL's pooled vector comes from
  chunk 0 of the syntax-stripped text; an SDXL negative that is empty for every image is all
  zeros when the pipeline's ``force_zeros_for_empty_prompt`` is set (diffusers' and A1111's rule).
* **LoRA** (§8): tags are always removed from the text. When ``lora_dir=`` or ``loras=`` is given,
  the tags of the first prompt are loaded from ``.safetensors`` files only (never pickles) with
  diffusers' ``load_lora_weights`` as adapters named ``pw_<name>`` and activated with
  ``set_adapters`` at the tag's text-encoder and UNet multipliers; the active adapter set then is
  exactly the tagged one. Unknown names raise :class:`~promptweights.errors.UnknownNameError`
  listing the names available. Before anything is loaded every file is read and checked: tensors
  floating point and finite, keys read as diffusers reads them (kohya ``lora_unet_*`` too), every
  targeted module present, down/up shapes matching its in/out features (conv kernels) and each
  other's rank; a bad file raises :class:`~promptweights.errors.NetworkFileError` naming the file,
  the key, and the expected and found shapes. A failure after loading puts the pipeline back
  exactly as it was (modules, hooks, adapters and their weights).
* **Textual inversion** (§9.2): embeddings loaded with :func:`load_textual_inversion` (A1111
  ``.safetensors`` files, checked before the pipeline is touched) or with diffusers' own
  ``load_textual_inversion`` are matched by name in the text, inside weighted spans too
  (``(emb:1.2)`` scales all its vectors), and never split across chunks.

Every row is encoded with its own forward pass by default (``batch_rows=True`` batches them): on
CPU a batched matmul may round differently from the pipelines' one-text calls, and a plain prompt
must give exactly what ``pipe.encode_prompt`` gives. All rows are still encoded before sampling.

Clip skip follows the pipelines' own ``clip_skip`` argument (``None`` or 0: the family default;
A1111's "Clip skip N" is ``clip_skip=N - 1``). Nothing here changes the pipeline unless LoRA tags
are loaded; a failed call leaves it as it was.
"""

from __future__ import annotations

import copy
import importlib
import re
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import promptweights
from promptweights.builder import build
from promptweights.encoders import TextEncoder
from promptweights.errors import (
    ArgumentTypeError,
    InvalidArgumentError,
    LimitExceededError,
    NetworkFileError,
    PromptweightsError,
    UnknownNameError,
    UnsupportedPipelineError,
)
from promptweights.limits import DEFAULT_LIMITS, Limits
from promptweights.strategies import Normalization, Strategy, get_normalization, get_strategy
from promptweights.tokens import check_weights
from promptweights.tree import ExtraNetwork

__all__ = [
    "FAMILIES",
    "UNSUPPORTED_SETTINGS",
    "Conditioning",
    "Rerun",
    "encode",
    "family_of",
    "from_infotext",
    "load_textual_inversion",
    "plan_rerun",
]

#: Pipeline families this adapter knows, by the name :func:`family_of` returns.
FAMILIES = ("sd", "sdxl", "sdxl-refiner", "sd3", "flux")

# The schedule length used to find out whether a prompt edits at all when no steps are given.
_PROBE_STEPS = 1000
_ADAPTER_PREFIX = "pw_"


# --- family detection ---------------------------------------------------------------------------


def family_of(pipe: Any) -> str:
    """Return the family of a diffusers pipeline: one of :data:`FAMILIES`.

    Args:
        pipe: a diffusers pipeline.

    Returns:
        ``"sd"`` (SD 1.x/2.x), ``"sdxl"``, ``"sdxl-refiner"`` (OpenCLIP-G only), ``"sd3"`` or
        ``"flux"``.

    Raises:
        UnsupportedPipelineError: for any other pipeline.
    """
    components = getattr(pipe, "components", {})
    name = type(pipe).__name__
    if "transformer" in components and "text_encoder_3" in components:
        return "sd3"
    if "transformer" in components and name.startswith("Flux"):
        return "flux"
    if "unet" in components and "text_encoder_2" in components:
        return "sdxl" if components.get("text_encoder") is not None else "sdxl-refiner"
    if "unet" in components and components.get("text_encoder") is not None:
        return "sd"
    raise UnsupportedPipelineError(
        f"promptweights.diffusers does not know {name}; it supports SD 1.x/2.x, SDXL (base and "
        "refiner), SD3/3.5 and Flux.1 pipelines"
    )


class _RowEncoder(TextEncoder):
    """A :class:`TextEncoder` that runs its rows one forward pass each.

    On CPU a batched matmul can round differently from diffusers' one-text calls in the last bit;
    one pass per row keeps a plain prompt bit-identical to the pipeline's own ``encode_prompt``.
    Rows are still planned, de-duplicated and cached by the builder, and all of them are encoded
    before sampling starts.
    """

    def encode(
        self, ids: Tensor, attention_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Encode each row on its own and stack the results (see :meth:`TextEncoder.encode`)."""
        rows = [
            TextEncoder.encode(
                self, ids[i : i + 1], None if attention_mask is None else attention_mask[i : i + 1]
            )
            for i in range(ids.shape[0])
        ]
        z = torch.cat([r[0] for r in rows])
        pooled = [r[1] for r in rows]
        return z, None if pooled[0] is None else torch.cat(pooled)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class _Slot:
    """One text encoder of a family and which prompt (1, 2 or 3) it reads."""

    encoder: TextEncoder
    prompt: int


def _slots(
    pipe: Any,
    family: str,
    clip_skip: int | None,
    max_sequence_length: int | None,
    batch_rows: bool,
) -> list[_Slot]:
    enc = TextEncoder if batch_rows else _RowEncoder
    skip = 1 + (clip_skip or 0)
    if family == "sd":
        return [_Slot(enc.clip(pipe.text_encoder, pipe.tokenizer, clip_skip=skip), 1)]
    if family == "sdxl":
        return [
            _Slot(enc.sdxl(pipe.text_encoder, pipe.tokenizer, clip_skip=skip), 1),
            _Slot(
                enc.sdxl(pipe.text_encoder_2, pipe.tokenizer_2, clip_skip=skip, pooled=True),
                2,
            ),
        ]
    if family == "sdxl-refiner":
        return [
            _Slot(
                enc.sdxl(pipe.text_encoder_2, pipe.tokenizer_2, clip_skip=skip, pooled=True),
                2,
            )
        ]
    if family == "sd3":
        slots = [
            _Slot(enc.sdxl(pipe.text_encoder, pipe.tokenizer, clip_skip=skip, pooled=True), 1),
            _Slot(
                enc.sdxl(pipe.text_encoder_2, pipe.tokenizer_2, clip_skip=skip, pooled=True),
                2,
            ),
        ]
        if pipe.text_encoder_3 is not None:
            length = max_sequence_length or 256
            slots.append(_Slot(enc.t5(pipe.text_encoder_3, pipe.tokenizer_3, max_length=length), 3))
        return slots
    # flux: CLIP-L gives only the pooled vector; T5 (prompt_2) the sequence.
    length = max_sequence_length or 512
    return [
        _Slot(enc.clip(pipe.text_encoder, pipe.tokenizer, pooled=True), 1),
        _Slot(enc.t5(pipe.text_encoder_2, pipe.tokenizer_2, max_length=length), 2),
    ]


# --- the language side: comments, networks, AND, schedules -------------------------------------


@dataclass(frozen=True, slots=True)
class _Encoded:
    """One group's output on one text encoder."""

    embeds: Tensor
    pooled: Tensor | None


@dataclass(slots=True)
class _Part:
    """One AND part of one image: its weight and its schedule, one text per prompt slot."""

    weight: float
    ends: list[int]
    texts: list[tuple[str, ...]]  # [variant][slot prompt index 0..2]


def _schedule(text: str, steps: int | None, options: Mapping[str, Any]) -> list[tuple[int, str]]:
    limits: Limits = options.get("limits", DEFAULT_LIMITS)
    if steps is None:
        try:
            # One entry is all a prompt without editing has; more is all we need to know.
            probe = promptweights.schedules(
                text, _PROBE_STEPS, max_variants=1, max_chars=max(len(text), 1)
            )
        except LimitExceededError:
            excerpt = text if len(text) <= 60 else text[:57] + "..."
            raise InvalidArgumentError(
                f"the prompt {excerpt!r} uses prompt editing or alternation: pass steps= (the "
                "pipeline's num_inference_steps) so that the switching steps are known"
            ) from None
        return [(0, probe[0][1])]
    return promptweights.schedules(
        text,
        steps,
        hires_steps=options.get("hires_steps"),
        old_timelines=bool(options.get("old_timelines", False)),
        max_variants=limits.variants,
        max_chars=limits.schedule_chars,
    )


def _merge(schedules: Sequence[list[tuple[int, str]]]) -> tuple[list[int], list[tuple[str, ...]]]:
    """Join the schedules of the texts one image feeds to different encoders (prompt, prompt_2)."""
    ends = sorted({end for schedule in schedules for end, _ in schedule})
    texts = [tuple(_lookup_text(schedule, end) for schedule in schedules) for end in ends]
    return ends, texts


def _lookup_text(schedule: list[tuple[int, str]], step: int) -> str:
    for end, text in schedule:
        if step <= end:
            return text
    return schedule[-1][1]


def _index_at(ends: Sequence[int], k: int) -> int:
    """A1111's run-time lookup (§4.5): the first entry whose end is at or after call ``k``."""
    for index, end in enumerate(ends):
        if k <= end:
            return index
    return len(ends) - 1


def _clean(text: str) -> tuple[str, list[ExtraNetwork]]:
    text = promptweights.strip_comments(text)
    return promptweights.extra_networks(text)


def _as_list(value: str | Sequence[str] | None, batch: int, what: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value] * batch
    values = list(value)
    if len(values) != batch:
        raise InvalidArgumentError(f"{what} has {len(values)} entries for {batch} prompts")
    return values


def _check_lengths(texts: Mapping[str, list[str] | None], limit: int) -> None:
    for name, values in texts.items():
        for i, text in enumerate(values or ()):
            if not isinstance(text, str):
                raise ArgumentTypeError(f"{name} must be str, not {type(text).__name__}")
            if len(text) > limit:
                which = name if len(values or ()) == 1 else f"{name}[{i}]"
                raise LimitExceededError(
                    f"{which} has {len(text)} characters; the limit is {limit} (prompt_chars)"
                )


def _validate(text: str) -> None:
    """Run the span parser early so that a bad weight fails before the pipeline is touched."""
    check_weights(promptweights.weighted_spans(text))


# --- LoRA -----------------------------------------------------------------------------------------


def _available_loras(
    lora_dir: str | Path | None, loras: Mapping[str, str | Path] | None
) -> dict[str, Path]:
    available: dict[str, Path] = {}
    if lora_dir is not None:
        root = Path(lora_dir)
        if not root.is_dir():
            raise NetworkFileError(f"lora_dir {str(root)!r} is not a directory")
        for path in sorted(root.rglob("*.safetensors")):
            available.setdefault(path.stem, path)
    for name, given in (loras or {}).items():
        available[name] = Path(given)
    return available


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
) -> _LoraPlan | None:
    if lora_dir is None and loras is None:
        return None
    tags = [n for n in networks if n.kind in ("lora", "lyco")]
    available = _available_loras(lora_dir, loras)
    loaded = _loaded_adapters(pipe)
    plan = _LoraPlan([], {})
    for tag in tags:
        if tag.name not in available:
            raise UnknownNameError("LoRA", tag.name, sorted(available))
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
            state = _read_tensors(label, path)
            _check_lora(pipe, label, state)
            plan.state_dicts[adapter] = state
            plan.labels[adapter] = label
        plan.adapters.append((adapter, tag.te_weight, tag.unet_weight))
    if not plan.adapters and not any(a.startswith(_ADAPTER_PREFIX) for a in loaded):
        return None
    return plan


def _read_tensors(label: str, path: Path) -> dict[str, Tensor]:
    """Read a ``.safetensors`` file whose tensors must all be floating point and finite."""
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
    return state


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


def _shape(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(n) for n in shape) + ("," if len(shape) == 1 else "") + ")"


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
    lora = sorted(part for part in parts if part not in ("alpha", "diff", "diff_b"))
    if not lora:
        return
    if down is None:
        raise NetworkFileError(
            f"{label}: key {parts[lora[0]][0]} targets {where}, a {what}, which a LoRA cannot adapt"
        )
    extras = ("lora_B.bias", "lora_magnitude_vector", "lora_magnitude_vector.weight")
    unknown = [part for part in lora if part not in (down, up, *extras)]
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
    if "lora_B.bias" in parts and tuple(parts["lora_B.bias"][1].shape) != (fan_out,):
        raise _shape_error(label, *parts["lora_B.bias"], where, what, _shape((fan_out,)))
    for part in extras[1:]:
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


# How _Snapshot copies a container attribute (saved items only: restored in place, in order).
_COPIES: dict[type, Callable[[Any], Any]] = {dict: dict, OrderedDict: dict, list: list, set: set}


class _Snapshot:
    """The Python-level state of some objects, restorable in place after a failed change.

    For every given object, and every submodule of a given module, it keeps the attributes and a
    copy of each dict, list and set attribute (a module's ``_modules``, ``_parameters``, hook
    dicts, peft's ``scaling``…), plus which tensor each parameter holds. :meth:`restore` puts all of
    it back into the same objects: modules wrapped or added by peft, registered hooks, changed
    adapter weights and resized embedding matrices are undone; tensor values written in place are
    not (LoRA and textual-inversion loading write none of the caller's). ``deep`` objects (a
    tokenizer, whose Rust backend changes in place) are deep-copied instead.
    """

    def __init__(self, objects: Sequence[Any], deep: Sequence[Any] = ()) -> None:
        self._saved: list[tuple[Any, dict[str, Any], dict[str, Any]]] = []
        self._params: list[tuple[torch.nn.Parameter, Tensor]] = []
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
                        (p, p.data) for p in member._parameters.values() if p is not None
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
        for param, data in self._params:
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
        for adapter, state in plan.state_dicts.items():
            _load_lora(pipe, adapter, state, plan.labels.get(adapter, adapter))
        listed: dict[str, list[str]] = pipe.get_list_adapters()
        names: list[str] = []
        weights: list[dict[str, float]] = []
        tagged = {adapter for adapter, _, _ in plan.adapters}
        ours = sorted(
            {n for parts in listed.values() for n in parts if n.startswith(_ADAPTER_PREFIX)}
        )
        for adapter in ours:
            te, unet = 0.0, 0.0
            if adapter in tagged:
                te, unet = next((t, u) for a, t, u in plan.adapters if a == adapter)
            names.append(adapter)
            weights.append(
                {
                    component: (te if component.startswith("text_encoder") else unet)
                    for component, adapters in listed.items()
                    if adapter in adapters
                }
            )
        if names:
            pipe.set_adapters(names, adapter_weights=weights)
    except BaseException:
        snapshot.restore()
        raise
    return snapshot.restore


# --- textual inversion ----------------------------------------------------------------------------

# The most vectors one embedding may have: it is never split, so it must fit in a 75-token chunk.
_MAX_TI_VECTORS = 75


def load_textual_inversion(pipe: Any, path: str | Path, token: str | None = None) -> str:
    """Load a textual-inversion embedding from a ``.safetensors`` file into ``pipe``.

    Reads A1111's format (one ``emb_params`` tensor; SDXL files hold ``clip_l`` and ``clip_g``),
    and diffusers' one-tensor files. Everything is checked before the pipeline is touched: the
    suffix (pickles are never loaded), that safetensors can read the file, floating-point and finite
    values, one ``(vectors, width)`` tensor (or one ``(width,)`` vector) per text encoder with the
    encoder's embedding width, 1 to 75 vectors (the same number in ``clip_l`` and ``clip_g``), and a
    token the tokenizers do not have yet. The vectors are then registered with diffusers'
    ``load_textual_inversion`` (SDXL: both tokenizer/text-encoder pairs; the refiner: ``clip_g``
    only), so :func:`encode` finds the name in prompts, inside weighted spans too
    (``(name:1.2)`` scales all its vectors). On any failure the tokenizers and embedding matrices
    are exactly as before.

    Args:
        pipe: an SD 1.x/2.x or SDXL (base or refiner) pipeline.
        path: the ``.safetensors`` file.
        token: the name to use in prompts; by default the file name without ``.safetensors``, as
            A1111 names embeddings.

    Returns:
        The token.

    Raises:
        NetworkFileError: a file that is missing, not ``.safetensors``, unreadable, of another
            model (wrong width, SDXL pair for SD or the reverse), with bad values, or a token that
            is already taken; the message names the file and the offending tensor.
        UnsupportedPipelineError: SD3 and Flux (their T5 encoder has no embeddings to add).
    """
    family = family_of(pipe)
    path = Path(path)
    name = path.stem if token is None else token
    label = f"textual inversion {name!r} ({str(path)!r})"
    if family not in ("sd", "sdxl", "sdxl-refiner") or not hasattr(pipe, "load_textual_inversion"):
        raise UnsupportedPipelineError(
            f"textual inversion needs an SD 1.x/2.x or SDXL pipeline, not {type(pipe).__name__}"
        )
    if path.suffix != ".safetensors":
        raise NetworkFileError(
            f"{label}: only .safetensors files are loaded (pickled embeddings can run code)"
        )
    if not path.is_file():
        raise NetworkFileError(f"{label}: no file at {str(path)!r}")
    if not name.strip():
        raise NetworkFileError(f"{label}: the token is empty")
    state = _read_tensors(label, path)
    vectors = _ti_vectors(label, family, state)
    targets = _ti_targets(pipe, family)
    for component, encoder, tokenizer, part in targets:
        key, tensor = vectors[part]
        width = encoder.get_input_embeddings().embedding_dim
        if tensor.shape[-1] != width:
            raise NetworkFileError(
                f"{label}: tensor {key!r} has shape {_shape(state[key].shape)} but {component} "
                f"takes vectors of width {width}: expected {_shape((tensor.shape[0], width))}"
            )
        taken = [name] + [f"{name}_{i}" for i in range(1, max(tensor.shape[0], 2))]
        vocab = tokenizer.get_vocab()
        clash = next((t for t in taken if t in vocab), None)
        if clash is not None:
            raise NetworkFileError(
                f"{label}: the tokenizer of {component} already has the token {clash!r} (an "
                "embedding of that name is loaded, or it is in the vocabulary); pass another token="
            )
    configs = [e.config for _, e, _, _ in targets if getattr(e, "config", None) is not None]
    snapshot = _Snapshot(
        [e for _, e, _, _ in targets] + configs, deep=[t for _, _, t, _ in targets]
    )
    try:
        # Resizing the embedding matrix draws the new rows at random: keep the caller's RNG.
        with torch.random.fork_rng(devices=[]):
            for _, encoder, tokenizer, part in targets:
                pipe.load_textual_inversion(
                    {name: vectors[part][1]}, token=name, tokenizer=tokenizer, text_encoder=encoder
                )
    except BaseException as exc:
        snapshot.restore()
        if isinstance(exc, Exception) and not isinstance(exc, PromptweightsError):
            raise NetworkFileError(f"{label}: diffusers could not register it ({exc})") from exc
        raise
    return name


def _ti_targets(pipe: Any, family: str) -> list[tuple[str, Any, Any, str]]:
    """(component, text encoder, tokenizer, part of the file) for each encoder of the family."""
    if family == "sd":
        return [("text_encoder", pipe.text_encoder, pipe.tokenizer, "")]
    second = ("text_encoder_2", pipe.text_encoder_2, pipe.tokenizer_2, "clip_g")
    if family == "sdxl-refiner":
        return [second]
    return [("text_encoder", pipe.text_encoder, pipe.tokenizer, "clip_l"), second]


def _ti_vectors(
    label: str, family: str, state: Mapping[str, Tensor]
) -> dict[str, tuple[str, Tensor]]:
    """The file's vectors as ``(vectors, width)`` tensors: ``""`` (SD) or ``clip_l``/``clip_g``."""
    keys = sorted(state)
    if keys == ["clip_g", "clip_l"]:
        parts = {key: (key, state[key]) for key in keys}
        if family == "sd":
            raise NetworkFileError(
                f"{label} is an SDXL embedding ('clip_l' and 'clip_g'); an SD 1.x/2.x pipeline "
                "needs one tensor"
            )
    elif len(keys) == 1:
        parts = {"": (keys[0], state[keys[0]])}
        if family != "sd":
            raise NetworkFileError(
                f"{label} holds one tensor {keys[0]!r} (an SD 1.x/2.x embedding); an SDXL "
                "pipeline needs 'clip_l' and 'clip_g'"
            )
    else:
        raise NetworkFileError(
            f"{label} holds the tensors {keys}; an embedding is one tensor (A1111's "
            "'emb_params') or SDXL's 'clip_l' and 'clip_g'"
        )
    out: dict[str, tuple[str, Tensor]] = {}
    for part, (key, tensor) in parts.items():
        vectors = tensor.unsqueeze(0) if tensor.ndim == 1 else tensor
        if vectors.ndim != 2:
            raise NetworkFileError(
                f"{label}: tensor {key!r} has shape {_shape(tensor.shape)}; expected "
                "(vectors, width)"
            )
        if not 1 <= vectors.shape[0] <= _MAX_TI_VECTORS:
            raise NetworkFileError(
                f"{label}: tensor {key!r} has {vectors.shape[0]} vectors; an embedding has 1 to "
                f"{_MAX_TI_VECTORS} (one 75-token chunk)"
            )
        out[part] = (key, vectors)
    counts = {vectors.shape[0] for _, vectors in out.values()}
    if len(counts) > 1:
        raise NetworkFileError(
            f"{label}: 'clip_l' has {out['clip_l'][1].shape[0]} vectors but 'clip_g' has "
            f"{out['clip_g'][1].shape[0]}; they must match"
        )
    return out


# --- the conditioning ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Timeline:
    """Every encoded variant, and what the pipeline gets at each denoiser call."""

    family: str
    batch: int
    parts: list[list[_Part]]  # [image][part]
    part_embeds: list[list[Tensor]]  # [image][part] (V, L, D)
    part_pooled: list[list[Tensor | None]]
    negative: list[_Part]  # [image], weight unused
    negative_embeds: list[Tensor]
    negative_pooled: list[Tensor | None]
    has_negative: bool = True
    swappable: tuple[str, ...] = ()  # the pipeline's _callback_tensor_inputs

    @property
    def edits(self) -> bool:
        variants = [p for image in self.parts for p in image] + self.negative
        return any(len(p.ends) > 1 for p in variants)

    @property
    def composable(self) -> bool:
        return any(len(image) > 1 or image[0].weight != 1.0 for image in self.parts)

    @property
    def parts_per_image(self) -> int:
        return max(len(image) for image in self.parts)

    def positive_at(self, k: int, part: int = 0) -> tuple[Tensor, Tensor | None, Tensor]:
        """Positive embeds, pooled (or None) and weights ``(B,)`` of AND part ``part`` at call k."""
        embeds, pooled, weights = [], [], []
        for image in range(self.batch):
            if part < len(self.parts[image]):
                p = self.parts[image][part]
                index = _index_at(p.ends, k)
                embeds.append(self.part_embeds[image][part][index])
                pooled.append(self.part_pooled[image][part])
                pooled[-1] = None if pooled[-1] is None else pooled[-1][index]
                weights.append(p.weight)
            else:  # fewer AND parts than another image: a weight-0 copy of its first part
                p = self.parts[image][0]
                index = _index_at(p.ends, k)
                embeds.append(self.part_embeds[image][0][index])
                first = self.part_pooled[image][0]
                pooled.append(None if first is None else first[index])
                weights.append(0.0)
        stacked_pooled = None if pooled[0] is None else torch.stack(pooled)  # type: ignore[arg-type]
        return torch.stack(embeds), stacked_pooled, torch.tensor(weights)

    def negative_at(self, k: int) -> tuple[Tensor, Tensor | None]:
        """Negative embeds and pooled (or None) at call ``k``."""
        embeds, pooled = [], []
        for image in range(self.batch):
            index = _index_at(self.negative[image].ends, k)
            embeds.append(self.negative_embeds[image][index])
            p = self.negative_pooled[image]
            pooled.append(None if p is None else p[index])
        stacked_pooled = None if pooled[0] is None else torch.stack(pooled)  # type: ignore[arg-type]
        return torch.stack(embeds), stacked_pooled

    def key_at(self, k: int) -> tuple[int, ...]:
        """The variant indices in use at call ``k`` (equal keys: equal conditioning)."""
        keys = [_index_at(p.ends, k) for image in self.parts for p in image]
        keys += [_index_at(p.ends, k) for p in self.negative]
        return tuple(keys)


def _repeat(tensor: Tensor, times: int, like: Tensor) -> Tensor:
    return tensor.to(device=like.device, dtype=like.dtype).repeat_interleave(times, dim=0)


@dataclass(eq=False)
class Conditioning:
    """Weighted conditioning for one pipeline call, and how to hand it to the pipeline.

    Attributes:
        prompt_embeds: ``(B, L, D)`` at the first denoiser call (AND part 1 for AND prompts).
        negative_prompt_embeds: ``(B, L, D)``, same length; ``None`` for Flux without a negative.
        pooled_prompt_embeds: ``(B, P)`` for SDXL, SD3 and Flux, else ``None``.
        negative_pooled_prompt_embeds: likewise.
        family: the pipeline family (see :func:`family_of`).
        steps: the schedule length used (``steps``, or ``hires_steps`` for a hires pass; doubled
            for second-order schedulers), or ``None`` when no ``steps`` were given.
        networks: every extra-network tag found in the prompts, in order.
    """

    prompt_embeds: Tensor
    negative_prompt_embeds: Tensor | None
    pooled_prompt_embeds: Tensor | None
    negative_pooled_prompt_embeds: Tensor | None
    family: str
    steps: int | None
    networks: tuple[ExtraNetwork, ...]
    _timeline: _Timeline = field(repr=False)
    _attached: int = field(default=0, repr=False)

    @property
    def edits(self) -> bool:
        """Whether the conditioning changes during sampling (prompt editing or alternation)."""
        return self._timeline.edits

    @property
    def composable(self) -> bool:
        """Whether the prompt uses ``AND`` (or an AND weight) and so needs :meth:`attach`."""
        return self._timeline.composable

    def at_call(self, k: int) -> dict[str, Tensor | None]:
        """The conditioning the denoiser gets at call ``k`` (0-based), without AND parts ≥ 2.

        Args:
            k: the denoiser call.

        Returns:
            ``prompt_embeds``, ``negative_prompt_embeds`` and the pooled vectors at that call.
        """
        positive, pooled, _ = self._timeline.positive_at(k)
        negative, negative_pooled = self._timeline.negative_at(k)
        return {
            "prompt_embeds": positive,
            "negative_prompt_embeds": negative if self._timeline.has_negative else None,
            "pooled_prompt_embeds": pooled,
            "negative_pooled_prompt_embeds": negative_pooled
            if self._timeline.has_negative
            else None,
        }

    def pipeline_kwargs(
        self,
        callback_on_step_end: Callable[..., dict[str, Any]] | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """The keyword arguments for ``pipe(**kwargs, ...)``.

        Holds the embeddings (only those the family takes) and, when the prompt edits,
        ``callback_on_step_end`` with ``callback_on_step_end_tensor_inputs``.

        Args:
            callback_on_step_end: your own step callback, if any; it runs after the one that
                swaps the conditioning and sees its result.
            callback_on_step_end_tensor_inputs: the tensors your callback needs (diffusers'
                default ``["latents"]`` when you pass a callback).

        Returns:
            The keyword arguments.

        Raises:
            PromptweightsError: for an AND prompt outside ``with cond.attach(pipe):``.
        """
        if self.composable and not self._attached:
            raise PromptweightsError(
                "this prompt uses AND: run the pipeline inside `with cond.attach(pipe):` so that "
                "the parts are combined in the denoiser as A1111 does"
            )
        kwargs: dict[str, Any] = {"prompt_embeds": self.prompt_embeds}
        if self.negative_prompt_embeds is not None:
            kwargs["negative_prompt_embeds"] = self.negative_prompt_embeds
        if self.pooled_prompt_embeds is not None:
            kwargs["pooled_prompt_embeds"] = self.pooled_prompt_embeds
        if self.negative_pooled_prompt_embeds is not None:
            kwargs["negative_pooled_prompt_embeds"] = self.negative_pooled_prompt_embeds
        inputs: list[str] = []
        if callback_on_step_end is not None:
            inputs = list(callback_on_step_end_tensor_inputs or ["latents"])
        if self.edits and not self.composable:
            callback = _StepCallback(self._timeline, callback_on_step_end)
            kwargs["callback_on_step_end"] = callback
            extra = [name for name in inputs if name not in callback.tensor_inputs]
            kwargs["callback_on_step_end_tensor_inputs"] = callback.tensor_inputs + extra
        elif callback_on_step_end is not None:
            kwargs["callback_on_step_end"] = callback_on_step_end
            kwargs["callback_on_step_end_tensor_inputs"] = inputs
        return kwargs

    @contextmanager
    def attach(self, pipe: Any) -> Iterator[Conditioning]:
        """Combine AND parts in ``pipe``'s denoiser for the duration of a ``with`` block.

        Registers a forward pre-hook and a forward hook on ``pipe.unet`` (or ``pipe.transformer``)
        and removes both on exit, whatever happens; for prompts without AND it does nothing.
        Needs classifier-free guidance (``guidance_scale > 1``).

        Args:
            pipe: the pipeline this conditioning was encoded for.

        Yields:
            This conditioning (``pipeline_kwargs()`` works inside the block).

        Raises:
            UnsupportedPipelineError: AND on Flux (no batched guidance to hook into).
        """
        if not self.composable:
            self._attached += 1
            try:
                yield self
            finally:
                self._attached -= 1
            return
        if self.family == "flux":
            raise UnsupportedPipelineError(
                "AND needs batched classifier-free guidance; Flux has none"
            )
        denoiser = getattr(pipe, "unet", None) or pipe.transformer
        hook = _AndHook(self._timeline, self.family)
        handles = [
            denoiser.register_forward_pre_hook(hook.before, with_kwargs=True),
            denoiser.register_forward_hook(hook.after, with_kwargs=True),
        ]
        self._attached += 1
        try:
            yield self
        finally:
            self._attached -= 1
            for handle in handles:
                handle.remove()


class _StepCallback:
    """``callback_on_step_end``: after loop iteration ``i``, the conditioning of call ``i + 1``."""

    def __init__(
        self, timeline: _Timeline, then: Callable[..., dict[str, Any]] | None = None
    ) -> None:
        self.timeline = timeline
        self.then = then
        self.tensor_inputs = {
            "sd": ["prompt_embeds"],
            "sdxl": ["prompt_embeds", "add_text_embeds"],
            "sdxl-refiner": ["prompt_embeds", "add_text_embeds"],
            "sd3": ["prompt_embeds", "pooled_prompt_embeds"],
            "flux": ["prompt_embeds"],
        }[timeline.family]
        if timeline.swappable:
            self.tensor_inputs = [n for n in self.tensor_inputs if n in timeline.swappable]

    def __call__(self, pipe: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        out = self.swap(pipe, i, kwargs)
        if self.then is not None:
            out.update(self.then(pipe, i, t, {**kwargs, **out}))
        return out

    def swap(self, pipe: Any, i: int, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The tensors to replace after loop iteration ``i`` (empty when nothing changes)."""
        timeline = self.timeline
        k = i + 1
        if timeline.key_at(k) == timeline.key_at(i):
            return {}
        positive, pooled, _ = timeline.positive_at(k)
        negative, negative_pooled = timeline.negative_at(k)
        guided = timeline.family != "flux" and bool(getattr(pipe, "do_classifier_free_guidance", 0))
        out: dict[str, Any] = {}
        pairs: list[tuple[str, Tensor, Tensor | None]] = [("prompt_embeds", positive, negative)]
        pooled_name = (
            "add_text_embeds" if timeline.family.startswith("sdxl") else "pooled_prompt_embeds"
        )
        if pooled is not None and timeline.family != "flux":
            pairs.append((pooled_name, pooled, negative_pooled))
        for name, pos, neg in pairs:
            current = kwargs.get(name)
            if current is None:  # the pipeline does not let this tensor be swapped
                continue
            halves = 2 if guided else 1
            per_image = current.shape[0] // (halves * timeline.batch)
            new = _repeat(pos, per_image, current)
            if guided:
                assert neg is not None
                new = torch.cat([_repeat(neg, per_image, current), new])
            out[name] = new
        return out


class _AndHook:
    """Forward hooks that run every AND part and combine them as A1111's CFG denoiser does."""

    def __init__(self, timeline: _Timeline, family: str) -> None:
        self.timeline = timeline
        self.family = family
        self.calls = 0
        self.pending: tuple[int, Tensor] | None = None

    def before(
        self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        timeline = self.timeline
        args, kwargs = list(args), dict(kwargs)  # type: ignore[assignment]
        sample_key = "sample" if "sample" in kwargs else "hidden_states"
        sample = args[0] if args else kwargs[sample_key]
        total = sample.shape[0]
        k = self.calls
        self.calls += 1
        if total % (2 * timeline.batch):
            raise PromptweightsError(
                "AND needs classifier-free guidance (guidance_scale > 1): the denoiser got "
                f"{total} rows for {timeline.batch} prompts"
            )
        half = total // 2
        per_image = half // timeline.batch
        parts = timeline.parts_per_image
        negative, negative_pooled = timeline.negative_at(k)
        conds, pooleds, weights = [], [], []
        for j in range(parts):
            c, p, w = timeline.positive_at(k, j)
            conds.append(c)
            pooleds.append(p)
            weights.append(w.repeat_interleave(per_image))

        def expand(tensor: Any) -> Any:
            if isinstance(tensor, Tensor) and tensor.ndim > 0 and tensor.shape[0] == total:
                return torch.cat([tensor[:half]] + [tensor[half:]] * parts)
            return tensor

        hidden = kwargs["encoder_hidden_states"]
        kwargs["encoder_hidden_states"] = torch.cat(
            [_repeat(negative, per_image, hidden)] + [_repeat(c, per_image, hidden) for c in conds]
        )
        if args:
            args = [expand(args[0]), *(expand(a) for a in args[1:])]  # type: ignore[assignment]
        for key in list(kwargs):
            if key == "encoder_hidden_states":
                continue
            if key == "added_cond_kwargs" and kwargs[key] is not None:
                added = {name: expand(value) for name, value in kwargs[key].items()}
                if negative_pooled is not None and "text_embeds" in added:
                    like = kwargs[key]["text_embeds"]
                    added["text_embeds"] = torch.cat(
                        [_repeat(negative_pooled, per_image, like)]
                        + [_repeat(p, per_image, like) for p in pooleds if p is not None]
                    )
                kwargs[key] = added
            elif key == "pooled_projections" and negative_pooled is not None:
                like = kwargs[key]
                kwargs[key] = torch.cat(
                    [_repeat(negative_pooled, per_image, like)]
                    + [_repeat(p, per_image, like) for p in pooleds if p is not None]
                )
            else:
                kwargs[key] = expand(kwargs[key])
        self.pending = (half, torch.stack(weights))
        return tuple(args), kwargs

    def after(self, module: Any, args: Any, kwargs: Any, output: Any) -> Any:
        assert self.pending is not None
        half, weights = self.pending
        self.pending = None
        out = output[0] if isinstance(output, tuple) else output.sample
        uncond = out[:half]
        conds = out[half:].reshape(-1, *uncond.shape)
        w = weights.to(device=out.device, dtype=out.dtype).reshape(
            *weights.shape, *([1] * (uncond.ndim - 1))
        )
        combined = uncond + (w * (conds - uncond)).sum(dim=0)
        result = torch.cat([uncond, combined])
        if isinstance(output, tuple):
            return (result, *output[1:])
        return type(output)(sample=result)


# --- encode -------------------------------------------------------------------------------------


def encode(
    pipe: Any,
    prompt: str | Sequence[str],
    negative_prompt: str | Sequence[str] | None = "",
    *,
    strategy: str | Strategy = "a1111",
    clip_skip: int | None = None,
    steps: int | None = None,
    **options: Any,
) -> Conditioning:
    """Encode an A1111 prompt for a diffusers pipeline.

    Args:
        pipe: an SD 1.x/2.x, SDXL (base or refiner), SD3/3.5 or Flux.1 pipeline (text to image
            or image to image).
        prompt: the prompt, or one per image.
        negative_prompt: the negative prompt (never split at AND), one for all or one per image.
        strategy: a weighting strategy name from ``promptweights.strategies.STRATEGIES`` or a
            callable.
        clip_skip: the pipeline's ``clip_skip`` (A1111's "Clip skip N" is ``N - 1``).
        steps: the pipeline's ``num_inference_steps``; needed when the prompt edits or alternates.
        **options: ``prompt_2``, ``negative_prompt_2`` (SDXL, SD3, Flux's T5), ``prompt_3``,
            ``negative_prompt_3`` (SD3's T5); ``normalization`` (token normalisation name);
            ``comma_backtrack`` (20); ``second_order`` (default: ``scheduler.order == 2``);
            ``hires_steps`` and ``old_timelines`` (A1111's schedule options);
            ``max_sequence_length`` (T5 window: SD3 256, Flux 512); ``lora_dir`` (a folder of
            ``.safetensors`` LoRAs, named by file stem) and ``loras`` (name → path);
            ``batch_rows`` (``False``: one forward pass per encoded row, bit-identical to the
            pipeline's one-text calls; ``True``: one pass for all rows of an encoder, faster on a
            GPU, may differ in the last bit); ``limits`` (a :class:`~promptweights.Limits`:
            prompt length, schedule entries, AND parts, encoder rows).

    Returns:
        The :class:`Conditioning`; pass ``cond.pipeline_kwargs()`` to the pipeline, inside
        ``with cond.attach(pipe):`` when the prompt uses AND.

    Raises:
        UnknownNameError: an unknown strategy, normalisation or LoRA name.
        NetworkFileError: a LoRA file that is missing, not ``.safetensors``, unreadable, or whose
            tensors do not fit the pipeline (the message names the file and key).
        UnsupportedPipelineError: a pipeline family this adapter does not know.
        LimitExceededError: a prompt, schedule, AND split or row count past ``limits``.
        ValueError: editing without ``steps``, batch sizes that do not match, unknown options.
    """
    known = {
        "prompt_2",
        "negative_prompt_2",
        "prompt_3",
        "negative_prompt_3",
        "normalization",
        "comma_backtrack",
        "second_order",
        "hires_steps",
        "old_timelines",
        "max_sequence_length",
        "lora_dir",
        "loras",
        "batch_rows",
        "limits",
    }
    unknown = sorted(set(options) - known)
    if unknown:
        raise InvalidArgumentError(f"unknown options {unknown}; known: {sorted(known)}")
    family = family_of(pipe)
    # Unknown names fail here, before anything is loaded.
    get_strategy(strategy)
    get_normalization(options.get("normalization", "none"))

    limits = options.get("limits", DEFAULT_LIMITS)
    if not isinstance(limits, Limits):
        raise ArgumentTypeError(
            f"limits must be a promptweights.Limits, not {type(limits).__name__}"
        )
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    if not prompts:
        raise InvalidArgumentError("no prompt given")
    batch = len(prompts)
    negatives = _as_list(negative_prompt if negative_prompt is not None else "", batch, "negative")
    assert negatives is not None
    extra_prompts = [
        _as_list(options.get("prompt_2"), batch, "prompt_2"),
        _as_list(options.get("prompt_3"), batch, "prompt_3"),
    ]
    extra_negatives = [
        _as_list(options.get("negative_prompt_2"), batch, "negative_prompt_2"),
        _as_list(options.get("negative_prompt_3"), batch, "negative_prompt_3"),
    ]
    schedule_steps = steps
    if steps is not None:
        second_order = options.get("second_order")
        if second_order is None:
            second_order = getattr(getattr(pipe, "scheduler", None), "order", 1) == 2
        schedule_steps = steps * (2 if second_order else 1)
        if options.get("hires_steps") is not None:
            # A second-order sampler doubles the hires pass's schedule too (§4.4).
            options = {
                **options,
                "hires_steps": options["hires_steps"] * (2 if second_order else 1),
            }

    # 1. Text only: comments, networks, AND, schedules, weight check. Nothing touched yet.
    _check_lengths(
        {
            "prompt": prompts,
            "negative_prompt": negatives,
            "prompt_2": extra_prompts[0],
            "prompt_3": extra_prompts[1],
            "negative_prompt_2": extra_negatives[0],
            "negative_prompt_3": extra_negatives[1],
        },
        limits.prompt_chars,
    )
    networks: list[ExtraNetwork] = []
    parts: list[list[_Part]] = []
    negative_parts: list[_Part] = []
    for image in range(batch):
        main, found = _clean(prompts[image])
        networks += found
        others: list[list[tuple[str, float]] | None] = []
        for extra in extra_prompts:
            if extra is None:
                others.append(None)
            else:
                text, found = _clean(extra[image])
                networks += found
                others.append(promptweights.split_and(text, max_parts=limits.and_parts))
        main_parts = promptweights.split_and(main, max_parts=limits.and_parts)
        image_parts = []
        for j, (text, weight) in enumerate(main_parts):
            texts = [text]
            for other in others:
                if other is None:
                    texts.append(text)
                elif len(other) == len(main_parts):
                    texts.append(other[j][0])
                elif len(other) == 1:
                    texts.append(other[0][0])
                else:
                    raise InvalidArgumentError(
                        "prompt_2/prompt_3 must have one AND part or as many as prompt"
                    )
            ends, variants = _merge([_schedule(t, schedule_steps, options) for t in texts])
            image_parts.append(_Part(weight, ends, variants))
        parts.append(image_parts)
        negative_texts = [_clean(negatives[image])[0]]
        for extra_neg in extra_negatives:
            negative_texts.append(
                negative_texts[0] if extra_neg is None else _clean(extra_neg[image])[0]
            )
        ends, variants = _merge([_schedule(t, schedule_steps, options) for t in negative_texts])
        negative_parts.append(_Part(1.0, ends, variants))
    for part in [p for image_parts in parts for p in image_parts] + negative_parts:
        for variant in part.texts:
            for text in set(variant):
                _validate(text)
    first_networks = list(_clean(prompts[0])[1])
    lora_plan = _plan_loras(pipe, first_networks, options.get("lora_dir"), options.get("loras"))
    slots = _slots(
        pipe,
        family,
        clip_skip,
        options.get("max_sequence_length"),
        bool(options.get("batch_rows", False)),
    )

    # 2. LoRA (undone on failure), then one batched pass per text encoder.
    undo = _apply_loras(pipe, lora_plan) if lora_plan is not None else None
    try:
        timeline = _encode_all(
            pipe,
            family,
            slots,
            parts,
            negative_parts,
            strategy=strategy,
            normalization=options.get("normalization", "none"),
            comma_backtrack=int(options.get("comma_backtrack", 20)),
            t5_length=int(options.get("max_sequence_length") or 256),
            max_rows=limits.rows,
        )
    except BaseException:
        if undo is not None:
            undo()
        raise
    positive, pooled, _ = timeline.positive_at(0)
    negative, negative_pooled = timeline.negative_at(0)
    return Conditioning(
        prompt_embeds=positive,
        negative_prompt_embeds=negative if timeline.has_negative else None,
        pooled_prompt_embeds=pooled,
        negative_pooled_prompt_embeds=negative_pooled if timeline.has_negative else None,
        family=family,
        steps=_schedule_length(schedule_steps, options),
        networks=tuple(networks),
        _timeline=timeline,
    )


def _schedule_length(steps: int | None, options: Mapping[str, Any]) -> int | None:
    hires = options.get("hires_steps")
    if steps is None or hires is None or options.get("old_timelines"):
        return steps
    return int(hires)


def _encode_all(
    pipe: Any,
    family: str,
    slots: list[_Slot],
    parts: list[list[_Part]],
    negatives: list[_Part],
    *,
    strategy: str | Strategy,
    normalization: str | Normalization,
    comma_backtrack: int,
    t5_length: int,
    max_rows: int,
) -> _Timeline:
    all_parts = [p for image in parts for p in image] + negatives
    positives = len(all_parts) - len(negatives)
    device = _execution_device(pipe)
    encoded: list[list[tuple[Tensor, Tensor | None]]] = []  # [slot][group] (embeds, pooled)
    empties: list[Tensor] = []
    for slot in slots:
        groups: list[list[str]] = [[v[slot.prompt - 1] for v in p.texts] for p in all_parts]
        groups.append([""])  # the empty prompt's window, for padding
        result = build(
            slot.encoder,
            groups,
            strategy=strategy,
            normalization=normalization,
            comma_backtrack=comma_backtrack,
            equal_length=False,
            max_rows=max_rows,
        )
        cached = slot.encoder.cached_empty()
        empty = cached[0] if cached is not None else result.groups[-1].embeds[0]
        # Text encoders may sit on different devices (offload, multi-GPU): gather first.
        encoded.append(
            [
                (g.embeds.to(device), None if g.pooled is None else g.pooled.to(device))
                for g in result.groups[:-1]
            ]
        )
        empties.append(empty.to(device))
    _pad_like_a1111(slots, encoded, empties, positives)
    with torch.no_grad():
        assembled = [_assemble(pipe, family, encoded, g, t5_length) for g in range(len(all_parts))]
        assembled = [
            (e.to(device).clone(), None if p is None else p.to(device).clone())
            for e, p in assembled
        ]
    n_pos = len(all_parts) - len(negatives)
    has_negative = True
    negative_embeds = [e for e, _ in assembled[n_pos:]]
    negative_pooled = [p for _, p in assembled[n_pos:]]
    empty_negative = all(all(not t for t in v) for n in negatives for v in n.texts)
    if empty_negative and family in ("sdxl", "sdxl-refiner") and _force_zeros(pipe):
        negative_embeds = [torch.zeros_like(e) for e in negative_embeds]
        negative_pooled = [None if p is None else torch.zeros_like(p) for p in negative_pooled]
    if empty_negative and family == "flux":
        has_negative = False  # as diffusers: no negative, no true CFG
    part_embeds: list[list[Tensor]] = []
    part_pooled: list[list[Tensor | None]] = []
    index = 0
    for image in parts:
        part_embeds.append([assembled[index + j][0] for j in range(len(image))])
        part_pooled.append([assembled[index + j][1] for j in range(len(image))])
        index += len(image)
    return _Timeline(
        family,
        len(parts),
        parts,
        part_embeds,
        part_pooled,
        negatives,
        negative_embeds,
        negative_pooled,
        has_negative,
        tuple(getattr(pipe, "_callback_tensor_inputs", ())),
    )


def _force_zeros(pipe: Any) -> bool:
    config = getattr(pipe, "config", {})
    return bool(config.get("force_zeros_for_empty_prompt", True))


def _execution_device(pipe: Any) -> torch.device:
    device = getattr(pipe, "_execution_device", None)
    return torch.device(device) if device is not None else torch.device("cpu")


def _pad_like_a1111(
    slots: list[_Slot],
    encoded: list[list[tuple[Tensor, Tensor | None]]],
    empties: list[Tensor],
    positives: int,
) -> None:
    """Give every chunked group the same length, in place, the way A1111 stacks conds (§6.3).

    Positive conds (every AND part of every image) are stacked by repeating the last token vector
    of the shorter ones; cond and uncond of different lengths are then padded with encoded empty
    chunks (A1111's "Pad conds", which a pipeline's single batch needs). CLIP towers whose
    outputs are concatenated (SDXL, SD3; ``prompt_2``) get the same length too.
    """
    chunked = [i for i, slot in enumerate(slots) if slot.encoder.window.chunked]
    if not chunked:
        return
    target = max(e.shape[1] for i in chunked for e, _ in encoded[i])
    for i in chunked:
        window = empties[i].shape[0]
        longest = max(e.shape[1] for e, _ in encoded[i][:positives])
        for g, (embeds, pooled) in enumerate(encoded[i]):
            if g < positives and embeds.shape[1] < longest:
                last = embeds[:, -1:].expand(-1, longest - embeds.shape[1], -1)
                embeds = torch.cat([embeds, last], dim=1)
            missing = (target - embeds.shape[1]) // window
            if missing:
                pad = empties[i].to(embeds.dtype).repeat(missing, 1)
                embeds = torch.cat([embeds, pad.expand(embeds.shape[0], -1, -1)], dim=1)
            encoded[i][g] = (embeds, pooled)


def _assemble(
    pipe: Any,
    family: str,
    encoded: list[list[tuple[Tensor, Tensor | None]]],
    g: int,
    t5_length: int,
) -> tuple[Tensor, Tensor | None]:
    """One group's ``(V, L, D)`` embeds and ``(V, P)`` pooled, laid out as the family needs."""
    groups = [_Encoded(*slot[g]) for slot in encoded]
    if family == "sd":
        return groups[0].embeds, None
    if family == "sdxl":
        return torch.cat([groups[0].embeds, groups[1].embeds], dim=-1), groups[1].pooled
    if family == "sdxl-refiner":
        return groups[0].embeds, groups[0].pooled
    if family == "flux":
        return groups[1].embeds, groups[0].pooled
    # SD3: [CLIP-L | CLIP-G] padded (or cut, as diffusers' F.pad does) to T5's width, then T5.
    clip = torch.cat([groups[0].embeds, groups[1].embeds], dim=-1)
    assert groups[0].pooled is not None
    assert groups[1].pooled is not None
    pooled = torch.cat([groups[0].pooled, groups[1].pooled], dim=-1)
    if len(groups) == 3:
        t5 = groups[2].embeds
    else:
        length = t5_length
        width = pipe.transformer.config.joint_attention_dim
        t5 = torch.zeros(clip.shape[0], length, width, dtype=clip.dtype, device=clip.device)
    clip = torch.nn.functional.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
    return torch.cat([clip, t5], dim=-2), pooled


# --- re-running an A1111 infotext ---------------------------------------------------------------

#: Settings an infotext may hold that :func:`from_infotext` cannot reproduce in diffusers.
UNSUPPORTED_SETTINGS = (
    "Hires upscale",
    "Hires resize-1",
    "Hires steps",
    "Hires upscaler",
    "Variation seed",
    "Seed resize from-1",
    "Face restoration",
    "Tiling",
    "ENSD",
    "Eta",
    "Eta DDIM",
    "Token merging ratio",
    "NGMS",
    "Hypernet",
    "Pad conds",
    "Pad conds v0",
    "Downcast alphas_cumprod",
    "Refiner",
)


@dataclass(frozen=True)
class Rerun:
    """What :func:`plan_rerun` reads from an infotext, before any model is touched.

    Attributes:
        params: the parsed parameters.
        sampler: the resolved sampler (diffusers scheduler class and config).
        steps: sampling steps (A1111's default 20 when missing).
        strategy: the weighting strategy (``Emphasis`` mode or ``Prompt weighting``).
        clip_skip: diffusers' ``clip_skip`` (A1111's "Clip skip N" is ``N - 1``; None for 1).
        unsupported: settings present in the text that diffusers cannot reproduce.
    """

    params: Any
    sampler: Any
    steps: int
    strategy: str
    clip_skip: int | None
    unsupported: tuple[str, ...]


def _is_image_path(text: str) -> bool:
    if "\n" in text or Path(text).suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
        return False
    try:
        return Path(text).is_file()
    except OSError:  # e.g. a one-line infotext too long to be a file name
        return False


def plan_rerun(source: Any, *, a1111_fallback: bool = False) -> Rerun:
    """Read an infotext and resolve what re-running it needs.

    Args:
        source: a :class:`~promptweights.infotext.GenerationParameters`, infotext as a ``str``,
            or an image (path, bytes or binary file) holding one.
        a1111_fallback: read an unknown sampler as DPM++ 2M, as A1111 silently does.

    Returns:
        The plan.

    Raises:
        InfotextError: unreadable text or image.
        UnknownNameError: an unknown sampler (without the fallback) or strategy.
        UnsupportedPipelineError: a sampler diffusers has no scheduler for (with the reason).
    """
    from promptweights import infotext

    if isinstance(source, infotext.GenerationParameters):
        params = source
    elif isinstance(source, str) and not _is_image_path(source):
        params = infotext.parse(source)
    else:
        params = infotext.read_image(source)
    choice = params.sampler_choice(a1111_fallback=a1111_fallback)
    if choice.scheduler_class is None:
        raise UnsupportedPipelineError(
            f"no diffusers scheduler for {choice.sampler}: {choice.reason}"
        )
    strategy = params.strategy
    get_strategy(strategy)  # unknown names fail here, before any model work
    written = params.written
    unsupported = tuple(key for key in UNSUPPORTED_SETTINGS if key in written)
    if params.settings.get("RNG", "GPU") not in ("GPU", "CPU"):
        unsupported += (f"RNG: {params.settings['RNG']}",)
    clip_skip = params.clip_skip - 1 if params.clip_skip > 1 else None
    return Rerun(params, choice, params.steps or 20, strategy, clip_skip, unsupported)


def from_infotext(
    pipe: Any, source: Any, *, a1111_fallback: bool = False, **options: Any
) -> dict[str, Any]:
    """Configure ``pipe``'s scheduler for an A1111 infotext and return the call's arguments.

    The prompt and negative are encoded with :func:`encode` (the ``Emphasis`` mode picks the
    strategy, ``Clip skip`` the layer, ``Old prompt editing timelines`` the timeline), the sampler
    and schedule type pick and configure the diffusers scheduler (explicit ``sigmas`` where the
    schedule is not a diffusers option), and steps, CFG scale, size and seed (a CPU
    ``torch.Generator``) become the call's arguments. The same infotext on the same device and
    model gives the same image. Settings diffusers cannot reproduce (hires fix, variation seeds,
    ENSD…) are listed by :func:`plan_rerun`; A1111's own noise generator differs from torch's, so
    an A1111 seed gives a different picture than in A1111.

    Args:
        pipe: a pipeline :func:`encode` supports.
        source: parameters, infotext, or an image holding one (PNG, JPEG, WebP).
        a1111_fallback: read an unknown sampler as DPM++ 2M, as A1111 does.
        **options: passed on to :func:`encode` (``lora_dir``, ``batch_rows``…).

    Returns:
        Keyword arguments for ``pipe(**kwargs)``. The pipeline's scheduler is replaced only once
        everything else succeeded.

    Raises:
        UnsupportedPipelineError: a sampler without a diffusers scheduler, or an AND prompt (use
            :func:`encode` and ``with cond.attach(pipe):``).
    """
    from promptweights.samplers import build_scheduler, model_sigmas, schedule_sigmas

    plan = plan_rerun(source, a1111_fallback=a1111_fallback)
    params, choice = plan.params, plan.sampler
    scheduler = build_scheduler(choice, pipe.scheduler.config)
    cond = encode(
        pipe,
        params.prompt,
        params.negative_prompt,
        strategy=plan.strategy,
        clip_skip=plan.clip_skip,
        steps=plan.steps,
        second_order=choice.second_order,
        old_timelines=params.settings.get("Old prompt editing timelines") == "True",
        **options,
    )
    if cond.composable:
        raise UnsupportedPipelineError(
            "the prompt uses AND: encode it with promptweights.diffusers.encode and run the "
            "pipeline inside `with cond.attach(pipe):`"
        )
    kwargs = cond.pipeline_kwargs()
    kwargs["num_inference_steps"] = plan.steps
    if params.cfg_scale is not None:
        kwargs["guidance_scale"] = params.cfg_scale
    if params.width and params.height:
        kwargs["width"], kwargs["height"] = params.width, params.height
    if params.seed is not None:
        kwargs["generator"] = torch.Generator("cpu").manual_seed(params.seed)
    if choice.explicit_sigmas and choice.schedule_name is not None:
        sigmas = model_sigmas(scheduler.alphas_cumprod)
        kwargs["sigmas"] = schedule_sigmas(choice.schedule_name, plan.steps, sigmas)
    pipe.scheduler = scheduler
    return kwargs
