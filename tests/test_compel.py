"""dialect="compel": parity with compel 2.5.1's parser, transcribed from its own tests, a
differential test against the installed compel, and strict errors with positions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

import promptweights as pw
from promptweights import _compel
from promptweights.testing import prompts

DATA = json.loads((Path(__file__).parent / "data" / "compel" / "parser.json").read_text("utf-8"))
PARSED = [case for case in DATA["cases"] if "raises" not in case[1]]
RAISES = [case for case in DATA["cases"] if "raises" in case[1]]


def _fragments(items: Any) -> list[Any]:
    out: list[Any] = []
    for item in items:
        if isinstance(item, _compel.FlatSwap):
            swap: dict[str, Any] = {
                "swap": [_fragments(item.original), _fragments(item.replacement)]
            }
            if item.options:
                swap["options"] = dict(item.options)
            out.append(swap)
        else:
            out.append([item[0], item[1]])
    return out


def _as_json(text: str) -> dict[str, Any]:
    flat = _compel.flatten(pw.parse(text, dialect="compel").parts[0].children)
    parts: list[dict[str, Any]] = []
    for part in flat.parts:
        if part.blend is None:
            parts.append({"prompt": _fragments(part.prompts[0]), "weight": part.weight})
        else:
            weights, normalize = part.blend
            parts.append(
                {
                    "blend": [_fragments(p) for p in part.prompts],
                    "weights": list(weights),
                    "normalize": normalize,
                    "weight": part.weight,
                }
            )
    out: dict[str, Any] = {"parts": parts}
    if flat.loras:
        out["loras"] = [list(lora) for lora in flat.loras]
    return out


def _close(got: Any, expected: Any) -> bool:
    if isinstance(expected, float | int) and not isinstance(expected, bool):
        return isinstance(got, float | int) and abs(got - expected) <= 1e-12
    if isinstance(expected, list):
        return (
            isinstance(got, list)
            and len(got) == len(expected)
            and all(_close(g, e) for g, e in zip(got, expected, strict=True))
        )
    if isinstance(expected, dict):
        return (
            isinstance(got, dict)
            and got.keys() == expected.keys()
            and all(_close(got[k], expected[k]) for k in expected)
        )
    return bool(got == expected)


@pytest.mark.parametrize(("prompt", "expected", "where"), PARSED, ids=repr)
def test_flattened_fragments_equal_compel(prompt: str, expected: dict, where: str) -> None:
    got = _as_json(prompt)
    assert _close(got, expected), (where, got)


@pytest.mark.parametrize(("prompt", "expected", "where"), PARSED, ids=repr)
def test_weighted_spans_are_compels_fragments(prompt: str, expected: dict, where: str) -> None:
    # A single prompt's spans are its fragments; a swap gives its original's.
    if len(expected["parts"]) != 1 or "prompt" not in expected["parts"][0]:
        return
    fragments: list[list[Any]] = []
    for item in expected["parts"][0]["prompt"]:
        fragments += item["swap"][0] if isinstance(item, dict) else [item]
    got = [list(span) for span in pw.weighted_spans(prompt, dialect="compel")]
    assert _close(got, fragments)


@pytest.mark.parametrize(("prompt", "expected", "where"), RAISES, ids=repr)
def test_where_compel_raises_strict_mode_raises(prompt: str, expected: dict, where: str) -> None:
    assert pw.parse(prompt, dialect="compel").diagnostics
    with pytest.raises(pw.PromptSyntaxError):
        pw.parse(prompt, dialect="compel", strict=True)


@pytest.mark.parametrize(
    ("prompt", "kind", "pos"),
    [
        ("a (b c", "unclosed", 2),
        ("a b) c", "stray-closer", 3),
        ('a "b c', "unclosed-quote", 2),
        ("x (a = b)1.2", "bad-group", 2),
        ('x "a = b"', "bad-quote", 2),
        ('("a", "b").blend(1)', "bad-weights", 0),
        ('("a", "b").and(1, 2, 3)', "bad-weights", 0),
        ('("a", "b").blend() c', "bad-blend", 0),
        ('("a", "b").and() c', "ignored-text", 16),
        ("a (b).blend()", "misplaced-operator", 5),
        ('("a", "b.swap(c)").blend()', "swap-in-blend", 0),
    ],
)
def test_strict_errors_point_at_the_problem(prompt: str, kind: str, pos: int) -> None:
    diagnostics = pw.parse(prompt, dialect="compel").diagnostics
    assert (diagnostics[0].kind, diagnostics[0].pos) == (kind, pos)
    with pytest.raises(pw.PromptSyntaxError) as raised:
        pw.parse(prompt, dialect="compel", strict=True)
    assert raised.value.pos == pos


def test_the_tree_keeps_every_construct() -> None:
    tree = pw.parse('a (b)1.3 c++ "d".swap(e, t_start=0.5) withLora(x, 0.8)', dialect="compel")
    children = tree.parts[0].children
    kinds = [type(node).__name__ for node in children if not isinstance(node, pw.Text)]
    assert kinds == ["Attention", "Attention", "Swap", "Lora"]
    swap = next(node for node in children if isinstance(node, pw.Swap))
    assert swap.options == (("t_start", "0.5"),)
    assert pw.render(tree) == 'a (b)1.3 c++ "d".swap(e, t_start=0.5) withLora(x, 0.8)'
    blend = pw.parse('("a", b).blend(0.3, 0.7, no_normalize)', dialect="compel").parts[0]
    node = blend.children[0]
    assert isinstance(node, pw.Blend)
    assert (node.weights, node.normalize) == ((0.3, 0.7), False)


def test_loras_are_collected() -> None:
    flat = _compel.flatten(
        pw.parse("withLora(x-y, 0.5) a useLora(z)", dialect="compel").parts[0].children
    )
    assert flat.loras == (("x-y", 0.5), ("z", 1.0))


# compel is no dependency: without it only the differential test below is skipped (a module-level
# importorskip skipped the parity cases and strict-error tests above too).
try:
    import compel.prompt_parser as compel_parser
except ImportError:  # pragma: no cover - depends on the environment
    compel_parser = None


def _oracle(text: str) -> Any:
    """compel's own flattened conjunction, in the shape of :func:`_as_json`."""
    conjunction = compel_parser.PromptParser().parse_conjunction(text)

    def fragments(prompt: Any) -> list[Any]:
        out: list[Any] = []
        for f in prompt.children:
            if isinstance(f, compel_parser.CrossAttentionControlSubstitute):
                options = {k: v for k, v in f.options.items() if _compel.SWAP_DEFAULTS.get(k) != v}
                swap: dict[str, Any] = {
                    "swap": [
                        [[x.text, x.weight] for x in f.original],
                        [[x.text, x.weight] for x in f.edited],
                    ]
                }
                if options:
                    swap["options"] = options
                out.append(swap)
            else:
                out.append([f.text, f.weight])
        return out

    parts: list[dict[str, Any]] = []
    for prompt, weight in zip(conjunction.prompts, conjunction.weights, strict=True):
        if isinstance(prompt, compel_parser.Blend):
            parts.append(
                {
                    "blend": [fragments(p) for p in prompt.prompts],
                    "weights": [float(w) for w in prompt.weights],
                    "normalize": prompt.normalize_weights,
                    "weight": float(weight),
                }
            )
        else:
            parts.append({"prompt": fragments(prompt), "weight": float(weight)})
    out: dict[str, Any] = {"parts": parts}
    if conjunction.lora_weights:
        out["loras"] = [[lora.model, float(lora.weight)] for lora in conjunction.lora_weights]
    return out


def _without_default_options(tree: dict[str, Any]) -> dict[str, Any]:
    for part in tree["parts"]:
        for prompt in part.get("blend", [part.get("prompt", [])]):
            for item in prompt:
                if isinstance(item, dict) and "options" in item:
                    item["options"] = {
                        k: v
                        for k, v in item["options"].items()
                        if _compel.SWAP_DEFAULTS.get(k) != v
                    }
                    if not item["options"]:
                        del item["options"]
    return tree


@pytest.mark.skipif(compel_parser is None, reason="compel is not installed")
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prompts(dialect="compel"))
def test_differential_against_the_installed_compel(text: str) -> None:
    # The oracle is compel's own parser (pyparsing, slow: few examples).
    assert _close(_without_default_options(_as_json(text)), _oracle(text))
