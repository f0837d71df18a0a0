"""Textual inversion (``promptweights.diffusers.textual_inversion``) does not hijack words: a token
that is a word of the vocabulary, in either form (``red``/``red</w>``), is refused.

Hostile embedding files are in ``test_network_files.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import promptweights as pw

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


@pytest.mark.parametrize("token", ["red", "Red", "cat", "a"])
def test_textual_inversion_refuses_a_word_of_the_vocabulary(tmp_path: Path, token: str) -> None:
    import torch
    from _tiny_pipelines import tiny_sd1
    from safetensors.torch import save_file

    from promptweights.diffusers import load_textual_inversion

    pipe = tiny_sd1()
    assert "red</w>" in pipe.tokenizer.get_vocab()
    assert "red" not in pipe.tokenizer.get_vocab()  # only the word-final form is stored
    before = pipe.tokenizer("a red cat").input_ids
    width = pipe.text_encoder.get_input_embeddings().embedding_dim
    save_file({"emb_params": torch.ones(1, width)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(pw.NetworkFileError, match="already has the token"):
        load_textual_inversion(pipe, tmp_path / "x.safetensors", token=token)
    assert pipe.tokenizer("a red cat").input_ids == before
    assert load_textual_inversion(pipe, tmp_path / "x.safetensors", token="reddish-emb")


def test_real_clip_words_collide_in_either_form() -> None:
    from _tiny_models import SHARED_TOKENIZER

    if not (SHARED_TOKENIZER / "vocab.json").is_file():
        pytest.skip("../shared/clip-tokenizer is absent (a user's clone)")
    from promptweights.diffusers.textual_inversion import _collides

    vocab = json.loads((SHARED_TOKENIZER / "vocab.json").read_text(encoding="utf-8"))
    for word in ("red", "masterpiece", "blurry", "hands", "Hands"):
        assert _collides(word, vocab), word
    assert not _collides("my-embedding-xyzzy", vocab)
