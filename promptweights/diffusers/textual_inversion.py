"""Textual inversion: embedding files, checked before the pipeline is touched, then loaded."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from promptweights.errors import (
    NetworkFileError,
    PromptweightsError,
    UnsupportedPipelineError,
)

from ._common import _forget_empty_windows, _read_tensors, _shape, _Snapshot
from .families import Family, record_of

# The most vectors one embedding may have: it is never split, so it must fit in a 75-token chunk.
_MAX_TI_VECTORS = 75


def load_textual_inversion(pipe: Any, path: str | Path, token: str | None = None) -> str:
    """Load a textual-inversion embedding from a ``.safetensors`` file into ``pipe``.

    Reads A1111's format (one ``emb_params`` tensor; SDXL files hold ``clip_l`` and ``clip_g``), and
    diffusers' one-tensor files. Everything is checked before the pipeline is touched: the suffix
    (pickles are never loaded), that safetensors can read the file, floating-point and finite values
    (also in the text encoder's dtype), one ``(vectors, width)`` tensor (or one ``(width,)`` vector)
    per text encoder with the encoder's embedding width, 1 to 75 vectors (the same number in
    ``clip_l`` and ``clip_g``), and a token the tokenizers do not have yet, in either vocabulary
    form (``red`` or ``red</w>``: an ordinary word would otherwise be tokenised differently in every
    prompt). The vectors are then registered with diffusers' ``load_textual_inversion`` (SDXL: both
    tokenizer/text-encoder pairs; the refiner: ``clip_g`` only), so :func:`encode` finds the name in
    prompts, inside weighted spans too (``(name:1.2)`` scales all its vectors). On any failure the
    tokenizers and embedding matrices are exactly as before.

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
    family = record_of(pipe)
    path = Path(path)
    name = path.stem if token is None else token
    label = f"textual inversion {name!r} ({str(path)!r})"
    if not family.ti_towers or not hasattr(pipe, "load_textual_inversion"):
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
    targets = _ti_targets(pipe, family)
    dtypes = {e.get_input_embeddings().weight.dtype for _, e, _, _ in targets}
    state = _read_tensors(label, path, dtypes=dtypes)
    vectors = _ti_vectors(label, {part for _, _, _, part in targets}, state)
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
        clash = next((t for t in taken if _collides(t, vocab)), None)
        if clash is not None:
            raise NetworkFileError(
                f"{label}: the tokenizer of {component} already has the token {clash!r} (an "
                "embedding of that name is loaded, or it is in the vocabulary, where it would "
                "change every prompt that uses the word); pass another token="
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
        _forget_empty_windows(pipe)
        if isinstance(exc, Exception) and not isinstance(exc, PromptweightsError):
            raise NetworkFileError(f"{label}: diffusers could not register it ({exc})") from exc
        raise
    _forget_empty_windows(pipe)
    return name


def _collides(token: str, vocab: Mapping[str, int]) -> bool:
    """Whether ``token`` is a word of the vocabulary already: as written, or in the form CLIP's
    BPE stores a whole word (``red</w>``), also lower-cased as CLIP reads prompts."""
    forms = {token, token.lower()}
    return any(form in vocab or f"{form}</w>" in vocab for form in forms)


def _ti_targets(pipe: Any, family: Family) -> list[tuple[str, Any, Any, str]]:
    """(component, text encoder, tokenizer, part of the file) for each TI tower of the family."""
    return [
        (tower.component, getattr(pipe, tower.component), getattr(pipe, tower.tokenizer), part)
        for tower in family.ti_towers
        if (part := tower.ti_part) is not None
    ]


def _ti_vectors(
    label: str, wanted: set[str], state: Mapping[str, Tensor]
) -> dict[str, tuple[str, Tensor]]:
    """The file's vectors as ``(vectors, width)`` tensors: ``""`` (SD) or ``clip_l``/``clip_g``.

    ``wanted`` holds the parts the pipeline's towers take (``{""}`` for SD 1.x/2.x).
    """
    keys = sorted(state)
    if keys == ["clip_g", "clip_l"]:
        parts = {key: (key, state[key]) for key in keys}
        if "" in wanted:
            raise NetworkFileError(
                f"{label} is an SDXL embedding ('clip_l' and 'clip_g'); an SD 1.x/2.x pipeline "
                "needs one tensor"
            )
    elif len(keys) == 1:
        parts = {"": (keys[0], state[keys[0]])}
        if "" not in wanted:
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
