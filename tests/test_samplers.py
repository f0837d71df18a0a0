from __future__ import annotations

import importlib.util
import itertools
import json
import math
from pathlib import Path

import pytest

from promptweights.errors import PromptweightsError, UnknownNameError
from promptweights.samplers import (
    SAMPLERS,
    SCHEDULE_TYPES,
    SamplerChoice,
    build_scheduler,
    model_sigmas,
    resolve,
    schedule_sigmas,
    set_timesteps,
)

DATA = json.loads(
    (Path(__file__).parent / "data" / "a1111" / "samplers.json").read_text(encoding="utf-8")
)
LABELS = {name: label for name, label, _ in DATA["schedule_types"]}

# SD1's noise schedule (no download): what its scheduler_config.json holds.
SD1_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
}


# ---- parity with the reference tables ----------------------------------------------------------


def test_sampler_and_schedule_tables_match_the_reference() -> None:
    assert list(SAMPLERS) == [s["name"] for s in DATA["samplers"]]
    assert list(SCHEDULE_TYPES) == [label for _, label, _ in DATA["schedule_types"]]


@pytest.mark.parametrize("row", DATA["samplers"], ids=lambda row: row["name"])
def test_sampler_defaults(row: dict[str, object]) -> None:
    choice = resolve(str(row["name"]))
    assert choice.sampler == row["name"]
    assert choice.schedule_type == "Automatic"
    assert choice.second_order is row["second_order"]
    default = row["default_schedule"]
    if default is not None:
        assert choice.schedule == LABELS[str(default)]
        # Naming the default explicitly still reports Automatic (§11.3).
        assert resolve(str(row["name"]), LABELS[str(default)]).schedule_type == "Automatic"
    for alias in row["aliases"]:  # type: ignore[attr-defined]
        assert resolve(alias).sampler == row["name"]
    if row["name"] in DATA["no_diffusers_equivalent"]:
        assert choice.scheduler_class is None
        assert choice.reason


@pytest.mark.parametrize(("text", "sampler", "schedule_type"), DATA["infotext_names"]["cases"])
def test_infotext_sampler_names(text: str, sampler: str, schedule_type: str) -> None:
    choice = resolve(text, as_infotext=True, a1111_fallback=True)
    assert (choice.sampler, choice.schedule_type) == (sampler, schedule_type)
    assert (choice.fallback_from is not None) == (not text.startswith(sampler))


@pytest.mark.parametrize(("name", "label", "aliases"), DATA["schedule_types"])
def test_schedule_type_spellings(name: str, label: str, aliases: list[str]) -> None:
    for spelling in (name, label, *aliases):
        assert resolve("Euler", spelling).schedule_type == label
        assert resolve(f"Euler {spelling}").schedule_type == label


# ---- behaviour ---------------------------------------------------------------------------------


def test_legacy_suffix_beats_the_schedule_type() -> None:
    choice = resolve("DPM++ 2M SDE Karras", "Exponential")
    assert (choice.sampler, choice.schedule_type, choice.schedule) == (
        "DPM++ 2M SDE",
        "Karras",
        "Karras",
    )


def test_automatic_resolves_to_the_sampler_default() -> None:
    assert resolve("DPM++ 2M").schedule == "Karras"
    assert resolve("DPM++ 2M SDE").schedule == "Exponential"
    assert resolve("Euler").schedule == "Uniform"
    assert resolve("DDIM").schedule is None


def test_unknown_names_raise_with_the_known_ones() -> None:
    with pytest.raises(UnknownNameError) as info:
        resolve("Euler b")
    assert "DPM++ 2M" in str(info.value)
    assert info.value.known == SAMPLERS
    with pytest.raises(UnknownNameError, match="Karras"):
        resolve("Euler", "Karas")
    with pytest.raises(UnknownNameError):
        resolve("euler a", as_infotext=True)


def test_infotext_reader_cuts_suffixes_in_table_order() -> None:
    # §11.3's algorithm: "Uniform" comes before "SGM Uniform" in the table, so A1111 cuts it first
    # and "Euler SGM" is no sampler; the API-style reading takes the longest suffix.
    choice = resolve("Euler SGM Uniform", as_infotext=True, a1111_fallback=True)
    assert (choice.sampler, choice.fallback_from) == ("DPM++ 2M", "Euler SGM Uniform")
    assert resolve("Euler SGM Uniform").schedule_type == "SGM Uniform"


def test_a1111_fallback_is_explicit() -> None:
    choice = resolve("Euler b", "Karas", a1111_fallback=True)
    assert (choice.sampler, choice.schedule_type, choice.fallback_from) == (
        "DPM++ 2M",
        "Automatic",
        "Euler b",
    )


def test_api_style_names_are_accepted_by_default() -> None:
    assert resolve("euler a").sampler == "Euler a"
    assert resolve("k_dpmpp_2m karras").schedule == "Karras"


def test_diffusers_overrides() -> None:
    choice = resolve("DPM++ 2M SDE Heun")
    assert choice.scheduler_class == "DPMSolverMultistepScheduler"
    assert dict(choice.config) == {
        "algorithm_type": "sde-dpmsolver++",
        "solver_order": 2,
        "solver_type": "heun",
        "timestep_spacing": "linspace",
        "use_exponential_sigmas": True,
    }
    assert dict(resolve("Euler a").config) == {"timestep_spacing": "linspace"}


def test_no_silent_substitutes() -> None:
    euler_a_karras = resolve("Euler a Karras")
    assert euler_a_karras.scheduler_class is None
    assert "Karras" in str(euler_a_karras.reason)
    assert resolve("LMS", "Polyexponential").scheduler_class is None
    assert resolve("DPM++ 2M", "KL Optimal").scheduler_class is None
    ddim_karras = resolve("DDIM", "Karras")
    assert ddim_karras.schedule is None
    assert any("ignores" in note for note in ddim_karras.notes)


def test_choice_is_hashable_and_frozen() -> None:
    choice = resolve("Euler")
    assert isinstance(choice, SamplerChoice)
    assert hash(choice) == hash(resolve("Euler"))
    with pytest.raises(AttributeError):
        choice.sampler = "x"  # type: ignore[misc]


def test_build_scheduler_refuses_a_missing_class() -> None:
    with pytest.raises(PromptweightsError, match="Restart"):
        build_scheduler(resolve("Restart"), SD1_CONFIG)


# diffusers' KDPM2 schedulers pass a torch tensor to np.cumsum while being constructed; NumPy 2
# warns about torch's __array_wrap__ (diffusers' and torch's issue, not ours).
@pytest.mark.filterwarnings("ignore:__array_wrap__ must accept context:DeprecationWarning")
def test_every_combination_builds_or_explains() -> None:
    pytest.importorskip("diffusers")
    has_torchsde = importlib.util.find_spec("torchsde") is not None  # DPMSolverSDEScheduler
    for sampler in SAMPLERS:
        for schedule in SCHEDULE_TYPES:
            choice = resolve(sampler, schedule)
            if choice.scheduler_class is None:
                assert choice.reason, (sampler, schedule)
                continue
            if choice.scheduler_class == "DPMSolverSDEScheduler" and not has_torchsde:
                continue
            scheduler = build_scheduler(choice, SD1_CONFIG)
            assert type(scheduler).__name__ == choice.scheduler_class
            for key, value in choice.config:
                assert scheduler.config[key] == value, (sampler, schedule, key)


# ---- sigma schedules against the reference formulas (§11.2) on SD1's σ range --------------------
# The expected values are computed here from the formulas, never by promptweights.samplers.


def _sd1_range() -> tuple[float, float, list[float]]:
    torch = pytest.importorskip("torch")
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1 - betas, dim=0)
    sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
    return float(sigmas[0]), float(sigmas[-1]), [float(s) for s in sigmas]


def _karras(n: int, lo: float, hi: float, rho: float = 7.0) -> list[float]:
    return [
        (hi ** (1 / rho) + i / (n - 1) * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
        for i in range(n)
    ] + [0.0]


def _exponential(n: int, lo: float, hi: float) -> list[float]:
    return [
        math.exp(math.log(hi) + i / (n - 1) * (math.log(lo) - math.log(hi))) for i in range(n)
    ] + [0.0]


def _polyexponential(n: int, lo: float, hi: float, rho: float = 1.0) -> list[float]:
    ramp = [1 - i / (n - 1) for i in range(n)]
    return [math.exp(r**rho * (math.log(hi) - math.log(lo)) + math.log(lo)) for r in ramp] + [0.0]


def _uniform(n: int, sigmas: list[float]) -> list[float]:
    out = []
    for i in range(n):
        t = 999 * (1 - i / (n - 1))
        low = math.floor(t)
        high = min(low + 1, 999)
        w = t - low
        out.append(math.exp((1 - w) * math.log(sigmas[low]) + w * math.log(sigmas[high])))
    return [*out, 0.0]


def test_sd1_sigma_range_matches_the_reference() -> None:
    lo, hi, _ = _sd1_range()
    expected = DATA["sd1_sigma_range"]
    assert lo == pytest.approx(expected["sigma_min"], abs=1e-4)
    assert hi == pytest.approx(expected["sigma_max"], abs=1e-4)


def _scheduler_sigmas(sampler: str, schedule: str | None, steps: int) -> list[float]:
    pytest.importorskip("diffusers")
    choice = resolve(sampler, schedule)
    scheduler = build_scheduler(choice, SD1_CONFIG)
    set_timesteps(scheduler, choice, steps)
    return [float(s) for s in scheduler.sigmas]


@pytest.mark.parametrize("steps", [2, 10, 30])
@pytest.mark.parametrize(
    ("sampler", "schedule"),
    [("DPM++ 2M", None), ("Euler", "Karras"), ("LMS", "Karras"), ("DPM++ 2M SDE", "Karras")],
)
def test_karras_sigmas(sampler: str, schedule: str | None, steps: int) -> None:
    lo, hi, _ = _sd1_range()
    got = _scheduler_sigmas(sampler, schedule, steps)
    assert got == pytest.approx(_karras(steps, lo, hi), rel=2e-5, abs=1e-6)


@pytest.mark.parametrize("steps", [2, 10, 30])
@pytest.mark.parametrize(
    ("sampler", "schedule"),
    [("DPM++ 2M SDE", None), ("Euler", "Exponential"), ("LMS", "Exponential")],
)
def test_exponential_sigmas(sampler: str, schedule: str | None, steps: int) -> None:
    lo, hi, _ = _sd1_range()
    got = _scheduler_sigmas(sampler, schedule, steps)
    assert got == pytest.approx(_exponential(steps, lo, hi), rel=2e-5, abs=1e-6)


@pytest.mark.parametrize("steps", [2, 10, 30])
def test_polyexponential_sigmas(steps: int) -> None:
    lo, hi, _ = _sd1_range()
    assert resolve("Euler", "Polyexponential").explicit_sigmas
    got = _scheduler_sigmas("Euler", "Polyexponential", steps)
    assert got == pytest.approx(_polyexponential(steps, lo, hi), rel=2e-5, abs=1e-6)


@pytest.mark.parametrize("steps", [2, 10, 30])
def test_uniform_sigmas(steps: int) -> None:
    _, _, sigmas = _sd1_range()
    expected = _uniform(steps, sigmas)
    assert _scheduler_sigmas("Euler", None, steps) == pytest.approx(expected, rel=2e-5, abs=1e-6)
    # Other k-diffusion schedulers interpolate linearly: close, as the choice's note says.
    assert _scheduler_sigmas("Euler a", None, steps) == pytest.approx(expected, rel=1e-3)


def test_pipeline_sampler_settings_do_not_leak() -> None:
    # SDXL's scheduler config says "leading"; a pipeline's current DPM-Solver may use Lu lambdas.
    lo, hi, _ = _sd1_range()
    pytest.importorskip("diffusers")
    leaky = {
        **SD1_CONFIG,
        "timestep_spacing": "leading",
        "steps_offset": 1,
        "use_lu_lambdas": True,
        "solver_order": 3,
        "_class_name": "DPMSolverMultistepScheduler",
    }
    for sampler in ("Euler", "DPM++ 2M"):
        choice = resolve(sampler, "Karras")
        scheduler = build_scheduler(choice, leaky)
        scheduler.set_timesteps(10)
        got = [float(s) for s in scheduler.sigmas]
        assert got == pytest.approx(_karras(10, lo, hi), rel=2e-5, abs=1e-6), sampler
    assert build_scheduler(resolve("DPM++ 2M"), leaky).config.solver_order == 2


def test_schedule_sigmas_shape_and_errors() -> None:
    _, _, sigmas = _sd1_range()
    for schedule in ("uniform", "Karras", "exponential", "polyexponential", "SGM Uniform"):
        out = schedule_sigmas(schedule, 7, sigmas)
        assert len(out) == 8
        assert out[-1] == 0.0
        assert all(a > b for a, b in itertools.pairwise(out))
    with pytest.raises(UnknownNameError):
        schedule_sigmas("kl_optimal", 7, sigmas)
    with pytest.raises(ValueError, match="steps"):
        schedule_sigmas("karras", 0, sigmas)


def test_model_sigmas_matches_the_diffusers_training_sigmas() -> None:
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.EulerDiscreteScheduler.from_config(SD1_CONFIG)
    expected = [float(s) for s in scheduler.sigmas[:-1].flip(0)]
    assert model_sigmas(scheduler.alphas_cumprod) == pytest.approx(expected, rel=1e-5)
