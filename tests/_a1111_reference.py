"""An independent re-implementation of A1111's chunking and emphasis, written from the reference.

Written from ``a1111-behaviour.md`` §7 (chunking, BREAK, commas), §9.1 (emphasis modes, batch
coupling) and §9.2 (textual inversion), without looking at ``promptweights``. Tests compare the
library against it; it never imports the code under test.
"""

from __future__ import annotations

from typing import Any

Spans = list[tuple[str, float]]


def _embedding_at(
    tokens: list[int], i: int, names: dict[tuple[int, ...], list[int]]
) -> tuple[int, ...] | None:
    """The ids of the longest textual-inversion name starting at ``tokens[i]`` (§9.2), if any."""
    for name_ids in sorted(names, key=len, reverse=True):
        if tuple(tokens[i : i + len(name_ids)]) == name_ids:
            return name_ids
    return None


def reference_chunks(
    tokenizer: Any,
    spans: Spans,
    backtrack: int = 20,
    embeddings: dict[str, list[int]] | None = None,
) -> tuple[list[list[int]], list[list[float]]]:
    """A1111's chunker as §7 describes it (steps 1-3), for CLIP-style tokenizers.

    ``embeddings`` maps a textual-inversion name to the ids of its vectors.
    """
    comma = tokenizer.convert_tokens_to_ids(",</w>")
    bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    names = {
        tuple(tokenizer([name], add_special_tokens=False)["input_ids"][0]): vectors
        for name, vectors in (embeddings or {}).items()
    }
    out_ids: list[list[int]] = []
    out_w: list[list[float]] = []
    tok: list[int] = []
    mul: list[float] = []
    last_comma = -1

    def close() -> None:
        nonlocal tok, mul, last_comma
        ids = [bos, *tok, eos] + [pad] * (75 - len(tok))
        out_ids.append(ids)
        out_w.append([1.0, *mul, 1.0] + [1.0] * (75 - len(tok)))
        tok, mul, last_comma = [], [], -1

    for text, weight in spans:
        if text == "BREAK" and weight == -1:
            close()
            continue
        tokens = tokenizer([text], add_special_tokens=False)["input_ids"][0]
        i = 0
        while i < len(tokens):
            t = tokens[i]
            if t == comma:
                last_comma = len(tok)
            elif backtrack and len(tok) == 75 and last_comma != -1 and 75 - last_comma <= backtrack:
                keep_t, keep_m = tok[last_comma + 1 :], mul[last_comma + 1 :]
                tok, mul = tok[: last_comma + 1], mul[: last_comma + 1]
                close()
                tok, mul = keep_t, keep_m
            if len(tok) == 75:
                close()
            match = _embedding_at(tokens, i, names)
            if match is None:
                tok.append(t)
                mul.append(weight)
                i += 1
                continue
            vectors = names[match]
            if len(tok) + len(vectors) > 75:
                close()
            tok += vectors
            mul += [weight] * len(vectors)
            i += len(match)
    if tok or not out_ids:
        close()
    return out_ids, out_w


def reference_encode(
    model: Any,
    tokenizer: Any,
    texts: list[Spans],
    *,
    normalize: bool = True,
    embeddings: dict[str, list[int]] | None = None,
) -> Any:
    """A1111's ``forward`` for a batch of texts encoded together: one chunk index at a time (§7),
    ``Original`` (``normalize=True``) or ``No norm`` emphasis (§9.1). Returns ``(B, 77·k, C)``."""
    import torch

    chunked = [reference_chunks(tokenizer, spans, embeddings=embeddings) for spans in texts]
    count = max(len(ids) for ids, _ in chunked)
    empty_ids = [tokenizer.bos_token_id] + [tokenizer.eos_token_id] + [tokenizer.pad_token_id] * 75
    outputs = []
    for i in range(count):
        ids = [c[0][i] if i < len(c[0]) else empty_ids for c in chunked]
        mults = [c[1][i] if i < len(c[1]) else [1.0] * 77 for c in chunked]
        with torch.no_grad():
            z = model(input_ids=torch.tensor(ids)).last_hidden_state
        m = torch.tensor(mults, dtype=torch.float32)
        original_mean = z.mean()
        z = z * m.reshape((*m.shape, 1)).expand(z.shape)
        if normalize:
            new_mean = z.mean()
            z = z * (original_mean / new_mean)
        outputs.append(z)
    return torch.cat(outputs, dim=1)
