"""A failed ``encode`` leaves the pipeline exactly as it was (issue 8, "State").

Each case captures the whole pipeline before and after a failing call and compares: every
component's ``state_dict`` (values, ``torch.equal``), every parameter's ``requires_grad`` and
every module's ``training`` flag, the global torch RNG, every module's class (no peft-wrapped
layers left), registered hooks on every module, peft adapters and their per-layer weights, the
scheduler (object, config, timesteps, step index), the tokenizers (length, added vocabulary) and
the outputs of the text encoder and the UNet on fixed inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from _tiny_pipelines import tiny_sd1
from safetensors.torch import load_file, save_file
from test_diffusers import write_lora
from torch import Tensor

from promptweights import Limits
from promptweights.diffusers import encode
from promptweights.errors import (
    InvalidWeightError,
    LimitExceededError,
    NetworkFileError,
    PromptweightsError,
    UnknownNameError,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("state-loras")
    ink = write_lora(folder, "ink")
    write_lora(folder, "paper", text_encoder=False)
    weights = load_file(str(ink))
    key = next(k for k in weights if k.startswith("unet.") and k.endswith("lora_A.weight"))
    weights[key] = torch.randn(2, weights[key].shape[1] + 1)
    save_file(weights, str(folder / "wide.safetensors"))
    (folder / "broken.safetensors").write_bytes(ink.read_bytes()[:200])
    (folder / "pickled.ckpt").write_bytes(b"\x80\x04not loaded")
    return folder


def capture(pipe: Any) -> dict[str, Any]:
    """Everything a failed encode could have changed, as comparable values."""
    state: dict[str, Any] = {"global RNG": torch.get_rng_state()}
    for name, component in pipe.components.items():
        if not isinstance(component, torch.nn.Module):
            continue
        state[f"{name} weights"] = {
            k: v.detach().clone() for k, v in component.state_dict(keep_vars=True).items()
        }
        modules = list(component.named_modules())
        state[f"{name} requires_grad"] = [
            (k, p.requires_grad) for k, p in component.named_parameters()
        ]
        state[f"{name} training"] = [(n, m.training) for n, m in modules]
        state[f"{name} classes"] = [(n, type(m)) for n, m in modules]
        state[f"{name} module objects"] = [(n, id(m)) for n, m in modules]
        state[f"{name} hooks"] = [
            (n, attr, list(getattr(m, attr).items()))
            for n, m in modules
            for attr in _HOOK_DICTS
            if getattr(m, attr, None)
        ] + [(n, "forward", vars(m)["forward"]) for n, m in modules if "forward" in vars(m)]
        state[f"{name} peft layers"] = [
            (n, dict(m.scaling), list(m.active_adapters), bool(m.disable_adapters))
            for n, m in modules
            if isinstance(getattr(m, "scaling", None), dict)
        ]
        state[f"{name} peft config"] = sorted(getattr(component, "peft_config", None) or {})
        state[f"{name} peft loaded"] = getattr(component, "_hf_peft_config_loaded", None)
    scheduler = pipe.scheduler
    state["scheduler"] = (
        id(scheduler),
        dict(scheduler.config),
        getattr(scheduler, "num_inference_steps", None),
        getattr(scheduler, "step_index", None),
        getattr(scheduler, "begin_index", None),
    )
    state["timesteps"] = scheduler.timesteps.clone()
    state["tokenizer"] = (len(pipe.tokenizer), dict(pipe.tokenizer.get_added_vocab()))
    try:
        state["adapters"] = pipe.get_list_adapters()
    except (ValueError, AttributeError):
        state["adapters"] = None
    with torch.no_grad():
        ids = torch.tensor([[1, 3, 4, 5, 2] + [2] * 72])
        state["text output"] = pipe.text_encoder(ids).last_hidden_state
        sample = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
        state["unet output"] = pipe.unet(sample, 10, encoder_hidden_states=state["text output"])[0]
    return state


def assert_same_state(before: dict[str, Any], after: dict[str, Any]) -> None:
    assert before.keys() == after.keys()
    for key, old in before.items():
        new = after[key]
        if isinstance(old, Tensor):
            assert torch.equal(old, new), key
        elif key.endswith(" weights"):
            assert old.keys() == new.keys(), key
            for name, tensor in old.items():
                assert torch.equal(tensor, new[name]), f"{key}: {name}"
        else:
            assert old == new, key


@pytest.fixture
def pipe() -> Any:
    pipe = tiny_sd1()
    pipe.scheduler.set_timesteps(5)
    return pipe


def _raise_in_text_encoder(monkeypatch: pytest.MonkeyPatch, pipe: Any) -> list[str]:
    """Make the text encoder fail; record which adapters were active when it was called."""
    seen: list[str] = []

    def broken(*args: Any, **kwargs: Any) -> Any:
        seen.append(",".join(sorted(pipe.get_list_adapters().get("text_encoder", []))))
        raise RuntimeError("text encoder failed")

    # On the class: pytest would leave a bound method behind in the instance's __dict__.
    monkeypatch.setattr(type(pipe.text_encoder), "forward", broken)
    return seen


FAILURES: list[tuple[str, str, dict[str, Any], type[BaseException]]] = [
    ("unknown LoRA", "a cat <lora:nope:1>", {}, UnknownNameError),
    ("LoRA of the wrong shape", "a cat <lora:wide:1>", {}, NetworkFileError),
    ("corrupt LoRA", "a cat <lora:broken:1>", {}, NetworkFileError),
    ("pickled LoRA", "a cat <lora:evil:1>", {"loras": "pickled.ckpt"}, NetworkFileError),
    ("infinite weight", f"(a:{'9' * 400}) cat <lora:ink:1>", {}, InvalidWeightError),
    ("NaN weight", f"((a:{'9' * 400}):0) cat <lora:ink:1>", {}, InvalidWeightError),
    ("editing without steps", "a [cat:dog:0.5] <lora:ink:1>", {}, ValueError),
    ("NaN LoRA multiplier", "a cat <lora:ink:nan>", {}, InvalidWeightError),
    ("infinite te= multiplier", "a cat <lora:ink:1:te=inf>", {}, InvalidWeightError),
    ("huge LoRA multiplier", "a cat <lora:ink:1e308>", {}, InvalidWeightError),
    ("weight past the bound", "a (cat:1" + "0" * 30 + ") <lora:ink:1>", {}, InvalidWeightError),
    # The limits on rows and output tokens (checked before the LoRA is loaded: see below).
    ("rows after the LoRA", "a " * 100 + "<lora:ink:1>", {"rows": 1}, LimitExceededError),
    (
        "output tokens after the LoRA",
        " BREAK ".join(["a"] * 40) + " <lora:ink:1>",
        {"output_tokens": 77 * 10},
        LimitExceededError,
    ),
]


@pytest.mark.parametrize(
    ("prompt", "extra", "error"),
    [pytest.param(p, e, err, id=i) for i, p, e, err in FAILURES],
)
def test_failed_encode_changes_nothing(
    pipe: Any, lora_dir: Path, prompt: str, extra: dict[str, Any], error: type[BaseException]
) -> None:
    options: dict[str, Any] = {"lora_dir": lora_dir}
    if "loras" in extra:
        options["loras"] = {"evil": lora_dir / extra["loras"]}
    limits = {k: v for k, v in extra.items() if k in ("rows", "output_tokens")}
    if limits:
        options["limits"] = Limits(**limits)
    before = capture(pipe)
    with pytest.raises(error):
        encode(pipe, prompt, **options)
    assert_same_state(before, capture(pipe))


@pytest.mark.parametrize(
    ("prompt", "limits"),
    [
        ("a " * 100 + "<lora:ink:1>", {"rows": 1}),
        (" BREAK ".join(["a"] * 40) + " <lora:ink:1>", {"output_tokens": 77 * 10}),
        # One row of text, but the LoRA clears the empty-window cache that padding needs.
        ("a cat <lora:ink:1>", {"rows": 3}),
    ],
)
def test_limits_fire_before_any_lora_is_loaded(
    pipe: Any, lora_dir: Path, prompt: str, limits: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    encode(pipe, "a cat", "a " * 100)  # the empty window is cached now
    loads: list[str] = []
    original = type(pipe).load_lora_weights

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        loads.append(str(kwargs.get("adapter_name")))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(pipe), "load_lora_weights", counting)
    with pytest.raises(LimitExceededError):
        encode(pipe, prompt, "a " * 100, lora_dir=lora_dir, limits=Limits(**limits))
    assert loads == []


def test_failure_after_the_lora_was_applied_changes_nothing(
    pipe: Any, lora_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = capture(pipe)
    with monkeypatch.context() as patch:
        seen = _raise_in_text_encoder(patch, pipe)
        with pytest.raises(RuntimeError, match="text encoder failed"):
            encode(pipe, "a cat <lora:ink:0.5>", lora_dir=lora_dir)
    assert seen == ["pw_ink"]  # the failure really came with the LoRA loaded
    assert_same_state(before, capture(pipe))


def test_failure_keeps_the_users_own_lora_and_its_weight(
    pipe: Any, lora_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipe.load_lora_weights(str(lora_dir / "paper.safetensors"), adapter_name="mine")
    pipe.set_adapters(["mine"], adapter_weights=[0.7])
    before = capture(pipe)
    with monkeypatch.context() as patch:
        seen = _raise_in_text_encoder(patch, pipe)
        with pytest.raises(RuntimeError, match="text encoder failed"):
            encode(pipe, "a cat <lora:ink:0.5>", lora_dir=lora_dir)
    assert seen == ["pw_ink"]
    assert_same_state(before, capture(pipe))
    assert pipe.get_active_adapters() == ["mine"]


def test_failure_keeps_the_loras_of_the_previous_prompt_at_their_weights(
    pipe: Any, lora_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    encode(pipe, "a cat <lora:ink:0.5:0.25>", lora_dir=lora_dir)
    before = capture(pipe)
    with monkeypatch.context() as patch:
        _raise_in_text_encoder(patch, pipe)
        with pytest.raises(RuntimeError, match="text encoder failed"):
            encode(pipe, "a cat <lora:ink:1> <lora:paper:1>", lora_dir=lora_dir)
    assert_same_state(before, capture(pipe))


def test_diffusers_failing_on_the_second_lora_changes_nothing(
    pipe: Any, lora_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = capture(pipe)
    load: Callable[..., None] = pipe.load_lora_weights
    calls: list[str] = []

    def flaky(state: Any, adapter_name: str) -> None:
        calls.append(adapter_name)
        load(state, adapter_name=adapter_name)
        if len(calls) == 2:
            raise RuntimeError("disk on fire")

    with monkeypatch.context() as patch:
        patch.setattr(pipe, "load_lora_weights", flaky)
        with pytest.raises(NetworkFileError, match=r"LoRA 'paper' \(.*paper\.safetensors'\)"):
            encode(pipe, "a cat <lora:ink:1> <lora:paper:1>", lora_dir=lora_dir)
    assert calls == ["pw_ink", "pw_paper"]
    assert_same_state(before, capture(pipe))


def test_a_failure_inside_attach_removes_the_hooks(pipe: Any) -> None:
    cond = encode(pipe, "a cat AND a dog:0.5")
    before = capture(pipe)
    hooked: list[bool] = []

    def fail_inside() -> None:
        with cond.attach(pipe):
            hooked.append(bool(pipe.unet._forward_pre_hooks and pipe.unet._forward_hooks))
            raise RuntimeError("inside")

    with pytest.raises(RuntimeError, match="inside"):
        fail_inside()
    assert hooked == [True]
    assert_same_state(before, capture(pipe))
    # A failure in the denoiser call itself (no guidance for AND) removes them too.
    with pytest.raises(PromptweightsError, match="guidance"), cond.attach(pipe):
        pipe(
            **cond.pipeline_kwargs(),
            num_inference_steps=2,
            guidance_scale=1.0,
            height=16,
            width=16,
            output_type="pt",
        )
    after = capture(pipe)
    for key in ("unet hooks", "unet classes", "text_encoder hooks", "unet output"):
        assert_same_state({key: before[key]}, {key: after[key]})
