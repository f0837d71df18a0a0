"""A1111 sampler and schedule names, and the diffusers scheduler that matches each.

A1111 names a sampler (``Euler a``, ``DPM++ 2M``…) and, since v1.9, a schedule type (``Karras``,
``Exponential``…) separately; older infotexts fold the schedule into the name (``DPM++ 2M Karras``).
:func:`resolve` reads both as A1111 v1.10 does (a1111-behaviour.md §11) and says which diffusers
scheduler class and config reproduce the choice, as a class *name* and config overrides, so this
module needs no diffusers. Where diffusers has no faithful counterpart the class is None and the
reason says why: there is never a silent substitute. :func:`build_scheduler` (which imports
diffusers when called) turns a choice into a configured scheduler.

>>> c = resolve("DPM++ 2M Karras")
>>> c.sampler, c.schedule_type, c.schedule, c.scheduler_class
('DPM++ 2M', 'Automatic', 'Karras', 'DPMSolverMultistepScheduler')
>>> for key, value in c.config:
...     print(f"{key}={value!r}")
algorithm_type='dpmsolver++'
solver_order=2
timestep_spacing='linspace'
use_karras_sigmas=True
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .errors import ArgumentTypeError, InvalidArgumentError, UnknownNameError

__all__ = [
    "SAMPLERS",
    "SCHEDULE_TYPES",
    "SamplerChoice",
    "build_scheduler",
    "model_sigmas",
    "resolve",
    "schedule_sigmas",
    "set_timesteps",
]

#: Config value type: what a diffusers scheduler config override can be.
ConfigValue = bool | int | float | str


@dataclass(frozen=True, slots=True)
class _Schedule:
    name: str
    label: str
    aliases: tuple[str, ...] = ()


# Table order matters: A1111 tries the legacy suffixes in this order (§11.3).
_SCHEDULES: tuple[_Schedule, ...] = (
    _Schedule("automatic", "Automatic"),
    _Schedule("uniform", "Uniform"),
    _Schedule("karras", "Karras"),
    _Schedule("exponential", "Exponential"),
    _Schedule("polyexponential", "Polyexponential"),
    _Schedule("sgm_uniform", "SGM Uniform", ("SGMUniform",)),
    _Schedule("kl_optimal", "KL Optimal"),
    _Schedule("align_your_steps", "Align Your Steps"),
    _Schedule("simple", "Simple"),
    _Schedule("normal", "Normal"),
    _Schedule("ddim", "DDIM"),
    _Schedule("beta", "Beta"),
)
_SCHEDULE_BY_NAME = {s.name: s for s in _SCHEDULES}

#: Schedule type labels, in A1111's order.
SCHEDULE_TYPES: tuple[str, ...] = tuple(s.label for s in _SCHEDULES)

# Schedules a diffusers scheduler selects with one config flag.
_SCHEDULE_FLAGS = {
    "karras": "use_karras_sigmas",
    "exponential": "use_exponential_sigmas",
    "beta": "use_beta_sigmas",
}
# Schedules promptweights computes itself (see schedule_sigmas), for schedulers that accept
# explicit sigmas in set_timesteps.
_COMPUTED = ("uniform", "karras", "exponential", "polyexponential", "sgm_uniform")


_UNIFORM_NOTE = (
    "diffusers spaces steps + 1 timesteps and drops t = 0; A1111's Uniform schedule ends at t = 0"
)


@dataclass(frozen=True, slots=True)
class _Sampler:
    name: str
    aliases: tuple[str, ...]
    default_schedule: str | None  # internal name; None: the model's Uniform schedule
    second_order: bool = False
    own_schedule: bool = False  # A1111 ignores the schedule type (timestep samplers, DPM fast…)
    scheduler_class: str | None = None
    config: tuple[tuple[str, ConfigValue], ...] = ()
    flags: tuple[str, ...] = ()  # schedule names this class selects by a config flag
    explicit_sigmas: bool = False  # set_timesteps(sigmas=...) works
    linspace_uniform: bool = False  # timestep_spacing="linspace" gives A1111's Uniform grid
    reason: str | None = None  # why there is no class
    exact: bool = True  # same algorithm as A1111's (up to noise and float rounding)
    notes: tuple[str, ...] = ()
    spacing: str | None = "linspace"  # timestep_spacing to set; None: the class's own
    uniform_note: str = _UNIFORM_NOTE


_KARRAS_EXP_BETA = ("karras", "exponential", "beta")
_DISCARD_NOTE = (
    "A1111 computes steps+1 sigmas and drops the second-to-last ('discard penultimate sigma'); "
    "diffusers does not"
)
_BROWNIAN_NOTE = (
    "A1111 draws the SDE noise from a seeded Brownian tree; diffusers from its generator"
)
_NO_CLASS = "diffusers has no scheduler with this algorithm"
_ROUNDED_NOTE = (
    "diffusers rounds the UNet's timesteps to integers here; A1111 passes fractional ones "
    "(same σ schedule, slightly different time embedding)"
)

_SAMPLERS: tuple[_Sampler, ...] = (
    _Sampler(
        "DPM++ 2M",
        ("k_dpmpp_2m",),
        "karras",
        scheduler_class="DPMSolverMultistepScheduler",
        config=(("algorithm_type", "dpmsolver++"), ("solver_order", 2)),
        flags=_KARRAS_EXP_BETA,
        notes=(_ROUNDED_NOTE,),
    ),
    _Sampler(
        "DPM++ SDE",
        ("k_dpmpp_sde",),
        "karras",
        second_order=True,
        scheduler_class="DPMSolverSDEScheduler",
        flags=_KARRAS_EXP_BETA,
        linspace_uniform=True,
        notes=(_BROWNIAN_NOTE, "diffusers' DPMSolverSDEScheduler needs torchsde"),
    ),
    _Sampler(
        "DPM++ 2M SDE",
        ("k_dpmpp_2m_sde",),
        "exponential",
        scheduler_class="DPMSolverMultistepScheduler",
        config=(("algorithm_type", "sde-dpmsolver++"), ("solver_order", 2)),
        flags=_KARRAS_EXP_BETA,
        notes=(_BROWNIAN_NOTE, _ROUNDED_NOTE),
    ),
    _Sampler(
        "DPM++ 2M SDE Heun",
        ("k_dpmpp_2m_sde_heun",),
        "exponential",
        scheduler_class="DPMSolverMultistepScheduler",
        config=(
            ("algorithm_type", "sde-dpmsolver++"),
            ("solver_order", 2),
            ("solver_type", "heun"),
        ),
        flags=_KARRAS_EXP_BETA,
        notes=(_BROWNIAN_NOTE, _ROUNDED_NOTE),
    ),
    _Sampler(
        "DPM++ 2S a",
        ("k_dpmpp_2s_a",),
        "karras",
        second_order=True,
        reason="diffusers has no DPM-Solver++(2S) ancestral sampler (DPMSolverSinglestepScheduler "
        "is deterministic)",
    ),
    _Sampler(
        "DPM++ 3M SDE",
        ("k_dpmpp_3m_sde",),
        "exponential",
        scheduler_class="DPMSolverMultistepScheduler",
        config=(("algorithm_type", "sde-dpmsolver++"), ("solver_order", 3)),
        flags=_KARRAS_EXP_BETA,
        exact=False,
        notes=(
            "k-diffusion's 3M SDE update differs from diffusers' third-order SDE-DPM-Solver++",
            _DISCARD_NOTE,
            _BROWNIAN_NOTE,
            _ROUNDED_NOTE,
        ),
    ),
    _Sampler(
        "Euler a",
        ("k_euler_a", "k_euler_ancestral"),
        None,
        scheduler_class="EulerAncestralDiscreteScheduler",
        linspace_uniform=True,
    ),
    _Sampler(
        "Euler",
        ("k_euler",),
        None,
        scheduler_class="EulerDiscreteScheduler",
        flags=_KARRAS_EXP_BETA,
        explicit_sigmas=True,
        linspace_uniform=True,
    ),
    _Sampler(
        "LMS",
        ("k_lms",),
        None,
        scheduler_class="LMSDiscreteScheduler",
        flags=_KARRAS_EXP_BETA,
        linspace_uniform=True,
    ),
    _Sampler(
        "Heun",
        ("k_heun",),
        None,
        second_order=True,
        scheduler_class="HeunDiscreteScheduler",
        flags=_KARRAS_EXP_BETA,
        linspace_uniform=True,
    ),
    _Sampler(
        "DPM2",
        ("k_dpm_2",),
        "karras",
        second_order=True,
        scheduler_class="KDPM2DiscreteScheduler",
        flags=_KARRAS_EXP_BETA,
        linspace_uniform=True,
        exact=False,
        notes=(_DISCARD_NOTE, _ROUNDED_NOTE),
    ),
    _Sampler(
        "DPM2 a",
        ("k_dpm_2_a",),
        "karras",
        second_order=True,
        scheduler_class="KDPM2AncestralDiscreteScheduler",
        flags=_KARRAS_EXP_BETA,
        linspace_uniform=True,
        exact=False,
        notes=(_DISCARD_NOTE, _ROUNDED_NOTE),
    ),
    _Sampler(
        "DPM fast",
        ("k_dpm_fast",),
        None,
        own_schedule=True,
        reason=f"{_NO_CLASS} (DPM-Solver-fast with its own step sizes)",
    ),
    _Sampler(
        "DPM adaptive",
        ("k_dpm_ad",),
        None,
        own_schedule=True,
        reason=f"{_NO_CLASS} (adaptive step-size DPM-Solver)",
    ),
    _Sampler(
        "Restart",
        ("restart",),
        "karras",
        second_order=True,
        reason=f"{_NO_CLASS} (Restart sampling re-noises between intervals)",
    ),
    _Sampler(
        "DDIM",
        ("ddim",),
        None,
        own_schedule=True,
        scheduler_class="DDIMScheduler",
        config=(
            ("timestep_spacing", "leading"),
            ("steps_offset", 1),
            ("clip_sample", False),
            ("set_alpha_to_one", False),
        ),
        exact=False,
        notes=(
            "A1111's DDIM uses the timesteps range(0, 1000, 1000 // steps) + 1 (31 of them for 30 "
            "steps) and one model call fewer, ending at t = 1; not verified against "
            "DDIMScheduler's grid",
        ),
    ),
    _Sampler(
        "DDIM CFG++",
        ("ddim_cfgpp",),
        None,
        own_schedule=True,
        reason="diffusers has no CFG++ variant of DDIM (A1111 divides the CFG scale by 12.5 and "
        "renoises with the unconditional prediction)",
    ),
    _Sampler(
        "PLMS",
        ("plms",),
        None,
        own_schedule=True,
        scheduler_class="PNDMScheduler",
        config=(("skip_prk_steps", True), ("timestep_spacing", "leading"), ("steps_offset", 1)),
        exact=False,
        notes=("A1111's PLMS timestep grid is DDIM's; diffusers' PNDM grid differs slightly",),
    ),
    _Sampler(
        "UniPC",
        ("unipc",),
        None,
        own_schedule=True,
        scheduler_class="UniPCMultistepScheduler",
        config=(("solver_type", "bh1"), ("solver_order", 3)),
        exact=False,
        notes=("A1111 runs UniPC on DDIM's timestep grid with time_uniform skipping",),
    ),
    _Sampler(
        "LCM",
        ("k_lcm",),
        None,
        scheduler_class="LCMScheduler",
        exact=False,
        spacing=None,
        uniform_note="LCMScheduler uses its own timesteps",
        notes=(
            "diffusers' LCMScheduler picks timesteps from its 50-step training grid; A1111 runs "
            "LCM on the chosen k-diffusion schedule",
        ),
    ),
)
_SAMPLER_BY_NAME = {s.name: s for s in _SAMPLERS}

#: A1111 v1.10 sampler names, in its order (the first, DPM++ 2M, is its default).
SAMPLERS: tuple[str, ...] = tuple(s.name for s in _SAMPLERS)


@dataclass(frozen=True, slots=True)
class SamplerChoice:
    """An A1111 (sampler, schedule) and the diffusers scheduler that reproduces it.

    Attributes:
        sampler: A1111's sampler name (``"DPM++ 2M"``).
        schedule_type: the schedule type as A1111 writes it: ``"Automatic"`` when it is the
            sampler's default (``DPM++ 2M Karras`` → Automatic).
        schedule: the schedule actually used (``"Karras"``; ``"Uniform"`` is the model's own
            discrete schedule); None for samplers with their own timesteps, which A1111 runs
            whatever the schedule type says.
        second_order: the sampler makes two model calls per step, so A1111 builds prompt-editing
            schedules for ``2 * steps`` calls (§4.4).
        scheduler_class: the diffusers scheduler class name, or None (see ``reason``).
        config: config overrides for that class, as ``(key, value)`` pairs; ``dict(config)``.
        explicit_sigmas: the schedule is not a diffusers option: pass
            :func:`schedule_sigmas` to ``set_timesteps(sigmas=...)`` (:func:`set_timesteps` does).
        exact: the diffusers scheduler runs A1111's algorithm on A1111's σ schedule (up to the
            noise source and float rounding; ``notes`` lists smaller differences such as rounded
            timesteps); False means an approximation, described in ``notes``.
        reason: why ``scheduler_class`` is None.
        notes: known differences worth telling a user.
        fallback_from: the name A1111 did not know and replaced by DPM++ 2M (only with
            ``a1111_fallback=True``).

    >>> c = resolve("Heun", "Polyexponential")
    >>> c.second_order, c.scheduler_class, c.reason
    (True, None, 'HeunDiscreteScheduler cannot use the Polyexponential schedule')
    """

    sampler: str
    schedule_type: str
    schedule: str | None
    second_order: bool
    scheduler_class: str | None
    config: tuple[tuple[str, ConfigValue], ...] = ()
    explicit_sigmas: bool = False
    exact: bool = True
    reason: str | None = None
    notes: tuple[str, ...] = ()
    fallback_from: str | None = None

    def with_note(self, note: str) -> SamplerChoice:
        """Return a copy with one more note.

        >>> resolve("Euler").with_note("seen in an old infotext").notes
        ('seen in an old infotext',)
        """
        return replace(self, notes=(*self.notes, note))

    @property
    def schedule_name(self) -> str | None:
        """A1111's internal name of :attr:`schedule` (``"karras"``), as :func:`schedule_sigmas`
        takes it."""
        for schedule in _SCHEDULES:
            if schedule.label == self.schedule:
                return schedule.name
        return None


def _match_schedule(name: str, *, case_sensitive: bool) -> _Schedule | None:
    for schedule in _SCHEDULES:
        options = (schedule.label, schedule.name, *schedule.aliases)
        if name in options:
            return schedule
        if not case_sensitive and name.casefold() in (o.casefold() for o in options):
            return schedule
    return None


def _match_sampler(name: str, *, case_sensitive: bool) -> _Sampler | None:
    if name in _SAMPLER_BY_NAME:
        return _SAMPLER_BY_NAME[name]
    if case_sensitive:
        return None
    folded = name.casefold()
    for sampler in _SAMPLERS:
        if folded == sampler.name.casefold() or folded in sampler.aliases:
            return sampler
    return None


def _strip_suffixes_a1111(name: str, schedule: _Schedule) -> tuple[str, _Schedule]:
    # A1111 tries every schedule in table order, each option once, and keeps cutting (§11.3).
    for option_schedule in _SCHEDULES:
        for option in (option_schedule.label, option_schedule.name, *option_schedule.aliases):
            if name.endswith(" " + option):
                schedule = option_schedule
                name = name[: -len(option) - 1]
                break
    return name, schedule


def _strip_longest_suffix(name: str, schedule: _Schedule) -> tuple[str, _Schedule]:
    if _match_sampler(name, case_sensitive=False) is not None:
        return name, schedule
    folded = name.casefold()
    best: tuple[int, _Schedule] | None = None
    for option_schedule in _SCHEDULES:
        for option in (option_schedule.label, option_schedule.name, *option_schedule.aliases):
            if folded.endswith(" " + option.casefold()) and (best is None or len(option) > best[0]):
                best = (len(option), option_schedule)
    if best is None:
        return name, schedule
    return name[: -best[0] - 1], best[1]


def resolve(
    name: str,
    schedule_type: str | None = None,
    *,
    a1111_fallback: bool = False,
    as_infotext: bool = False,
) -> SamplerChoice:
    """Resolve an A1111 sampler name (and schedule type) to a :class:`SamplerChoice`.

    As A1111 v1.10 reads an infotext (§11.3): a legacy schedule suffix on the name (``Karras``,
    ``Exponential``, ``sgm_uniform``, ``SGMUniform``…) is cut off and wins over
    ``schedule_type``; ``Automatic`` means the sampler's default schedule, and a schedule equal
    to that default is reported as ``Automatic``. Unless ``as_infotext``, also accepted (as
    A1111's API does): the lower-case aliases (``k_euler_a``) and any letter case, and the
    longest schedule suffix wins (``Euler SGM Uniform`` is Euler with SGM Uniform).

    Args:
        name: the sampler, as in ``Sampler:`` (``"DPM++ 2M Karras"``, ``"Euler a"``).
        schedule_type: as in ``Schedule type:`` (label, internal name or alias); None or
            ``"Automatic"`` for the default.
        a1111_fallback: do what A1111 silently does with names it does not know: use DPM++ 2M
            (recorded in ``fallback_from``) and the Automatic schedule.
        as_infotext: read the name exactly as A1111's infotext reader does: exact names only,
            suffixes tried in A1111's table order (so ``Euler SGM Uniform`` loses ``Uniform``
            first and is not a known sampler).

    Returns:
        The choice, with the diffusers scheduler class and config (or None and a reason).

    Raises:
        UnknownNameError: for an unknown sampler or schedule type, listing the known ones
            (not with ``a1111_fallback``).

    >>> resolve("Euler a", "Karras").scheduler_class is None
    True
    >>> resolve("Euler a", "Karras").reason
    'EulerAncestralDiscreteScheduler cannot use the Karras schedule'
    >>> resolve("k_euler_a").sampler
    'Euler a'
    >>> resolve("k_euler_a", as_infotext=True, a1111_fallback=True).sampler
    'DPM++ 2M'
    """
    if not isinstance(name, str):
        raise ArgumentTypeError(f"sampler name must be a str, not {type(name).__name__}")
    schedule = _SCHEDULES[0]
    if schedule_type is not None:
        found = _match_schedule(schedule_type, case_sensitive=as_infotext)
        if found is None:
            if not a1111_fallback:
                raise UnknownNameError("schedule type", schedule_type, SCHEDULE_TYPES)
        else:
            schedule = found
    if as_infotext:
        remaining, schedule = _strip_suffixes_a1111(name, schedule)
    else:
        remaining, schedule = _strip_longest_suffix(name, schedule)
    sampler = _match_sampler(remaining, case_sensitive=as_infotext)
    fallback_from = None
    if sampler is None:
        if not a1111_fallback:
            raise UnknownNameError("sampler", name, SAMPLERS)
        sampler, schedule, fallback_from = _SAMPLERS[0], _SCHEDULES[0], name
    if sampler.default_schedule is not None and schedule.name == sampler.default_schedule:
        schedule = _SCHEDULES[0]
    return _choice(sampler, schedule, fallback_from)


def _choice(sampler: _Sampler, schedule: _Schedule, fallback_from: str | None) -> SamplerChoice:
    reported = schedule.label
    notes = list(sampler.notes)
    if sampler.own_schedule:
        if schedule.name != "automatic":
            notes.append(f"A1111 ignores the schedule type {schedule.label!r} for {sampler.name}")
        return SamplerChoice(
            sampler.name,
            reported,
            None,
            sampler.second_order,
            sampler.scheduler_class,
            sampler.config,
            exact=sampler.exact,
            reason=sampler.reason,
            notes=tuple(notes),
            fallback_from=fallback_from,
        )
    effective_name = schedule.name
    if effective_name == "automatic":
        effective_name = sampler.default_schedule or "uniform"
    effective = _SCHEDULE_BY_NAME[effective_name]
    base = SamplerChoice(
        sampler.name,
        reported,
        effective.label,
        sampler.second_order,
        None,
        exact=sampler.exact,
        reason=sampler.reason,
        notes=tuple(notes),
        fallback_from=fallback_from,
    )
    if sampler.scheduler_class is None:
        return base
    # k-diffusion takes σmin/σmax from the whole discrete schedule (t = 0…999): diffusers does
    # the same only with "linspace" spacing (SDXL's config says "leading").
    config = sampler.config
    if sampler.spacing is not None:
        config = (*config, ("timestep_spacing", sampler.spacing))
    if effective_name in sampler.flags:
        config = (*config, (_SCHEDULE_FLAGS[effective_name], True))
        notes_extra: tuple[str, ...] = ()
        exact = sampler.exact
        if effective_name == "beta":
            exact = False
            notes_extra = (
                "diffusers' beta sigmas (α = β = 0.6, linear in σ, needs scipy) follow A1111 "
                "v1.10.1; end points not verified",
            )
        return replace(
            base,
            scheduler_class=sampler.scheduler_class,
            config=config,
            exact=exact,
            notes=(*base.notes, *notes_extra),
        )
    if sampler.explicit_sigmas and effective_name in _COMPUTED:
        # Euler takes any sigmas: compute A1111's (Uniform included, which diffusers would
        # interpolate linearly instead of log-linearly).
        choice = replace(
            base, scheduler_class=sampler.scheduler_class, config=config, explicit_sigmas=True
        )
        if effective_name == "sgm_uniform":
            # The reference names this schedule but gives no formula; ours is SGM's convention.
            choice = replace(
                choice,
                exact=False,
                notes=(
                    *choice.notes,
                    "SGM Uniform computed as steps timesteps spaced evenly from t(σmax) towards "
                    "t(σmin) (steps + 1 points, last dropped); not verified against A1111",
                ),
            )
        return choice
    if effective_name == "uniform":
        if sampler.linspace_uniform:
            return replace(
                base,
                scheduler_class=sampler.scheduler_class,
                config=config,
                notes=(
                    *base.notes,
                    "diffusers interpolates σ between the model's timesteps linearly, A1111 "
                    "log-linearly (relative σ difference below 1e-3 on SD1)",
                ),
            )
        return replace(
            base,
            scheduler_class=sampler.scheduler_class,
            config=config,
            exact=False,
            notes=(*base.notes, sampler.uniform_note),
        )
    return replace(
        base,
        reason=f"{sampler.scheduler_class} cannot use the {effective.label} schedule",
    )


# --------------------------------------------------------------------------------------------------
# Sigma schedules (§11.2), in plain Python


def model_sigmas(alphas_cumprod: Sequence[float]) -> list[float]:
    """The model's discrete σ for each training timestep: ``sqrt((1 - ᾱ) / ᾱ)``, ascending.

    Args:
        alphas_cumprod: ``ᾱ_t`` for t = 0…T-1 (a diffusers scheduler's ``alphas_cumprod``).

    Returns:
        σ_t for t = 0…T-1.

    >>> [round(s, 4) for s in model_sigmas([0.99, 0.5])]
    [0.1005, 1.0]
    """
    return [math.sqrt((1.0 - float(a)) / float(a)) for a in alphas_cumprod]


def _sigma_at(sigmas: Sequence[float], t: float) -> float:
    """σ at a fractional timestep, interpolated in log σ (k-diffusion's ``t_to_sigma``)."""
    low = min(max(math.floor(t), 0), len(sigmas) - 1)
    high = min(low + 1, len(sigmas) - 1)
    w = t - low
    return math.exp((1 - w) * math.log(sigmas[low]) + w * math.log(sigmas[high]))


def _sigma_to_t(sigmas: Sequence[float], sigma: float) -> float:
    """Fractional timestep of σ (inverse of :func:`_sigma_at`)."""
    log_sigma = math.log(sigma)
    logs = [math.log(s) for s in sigmas]
    if log_sigma <= logs[0]:
        return 0.0
    if log_sigma >= logs[-1]:
        return float(len(sigmas) - 1)
    low = max(i for i, value in enumerate(logs) if value <= log_sigma)
    low = min(low, len(sigmas) - 2)
    w = (logs[low] - log_sigma) / (logs[low] - logs[low + 1])
    return low + w


def schedule_sigmas(schedule: str, steps: int, sigmas: Sequence[float]) -> list[float]:
    """A1111's σ schedule for ``steps`` steps: ``steps`` decreasing values, then a final 0.

    Args:
        schedule: ``"uniform"``, ``"karras"`` (ρ = 7), ``"exponential"``, ``"polyexponential"``
            (ρ = 1) or ``"sgm_uniform"`` (internal names or labels).
        steps: number of sampling steps (≥ 1).
        sigmas: the model's discrete σ, ascending (:func:`model_sigmas`); σmin and σmax are its
            ends.

    Returns:
        ``steps + 1`` floats.

    Raises:
        UnknownNameError: for a schedule this function does not compute.
        ValueError: for ``steps < 1`` or fewer than two model sigmas.

    >>> [round(s, 3) for s in schedule_sigmas("exponential", 3, [0.1, 1.0, 10.0])]
    [10.0, 1.0, 0.1, 0.0]
    """
    found = _match_schedule(schedule, case_sensitive=False)
    if found is None or found.name not in _COMPUTED:
        raise UnknownNameError("computed schedule", schedule, _COMPUTED)
    if steps < 1:
        raise InvalidArgumentError(f"steps must be at least 1, not {steps}")
    if len(sigmas) < 2:
        raise InvalidArgumentError("need the model's sigmas for at least two timesteps")
    sigma_min, sigma_max = float(sigmas[0]), float(sigmas[-1])
    n = steps
    ramp = [i / (n - 1) if n > 1 else 0.0 for i in range(n)]
    if found.name == "karras":
        rho = 7.0
        lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
        out = [(hi + r * (lo - hi)) ** rho for r in ramp]
    elif found.name == "exponential":
        a, b = math.log(sigma_max), math.log(sigma_min)
        out = [math.exp(a + r * (b - a)) for r in ramp]
    elif found.name == "polyexponential":
        rho = 1.0
        a, b = math.log(sigma_max), math.log(sigma_min)
        out = [math.exp((1 - r) ** rho * (a - b) + b) for r in ramp]
    elif found.name == "uniform":
        t_max = float(len(sigmas) - 1)
        out = [_sigma_at(sigmas, t_max * (1 - r)) for r in ramp]
    else:  # sgm_uniform: n+1 timesteps from t(σmax) to t(σmin), the last dropped
        start, end = _sigma_to_t(sigmas, sigma_max), _sigma_to_t(sigmas, sigma_min)
        out = [_sigma_at(sigmas, start + i / n * (end - start)) for i in range(n)]
    return [*out, 0.0]


# --------------------------------------------------------------------------------------------------
# diffusers (imported lazily)


#: Scheduler config keys that describe the model (kept by :func:`build_scheduler`).
_MODEL_KEYS = frozenset(
    {
        "num_train_timesteps",
        "beta_start",
        "beta_end",
        "beta_schedule",
        "trained_betas",
        "prediction_type",
        "rescale_betas_zero_snr",
    }
)


def build_scheduler(choice: SamplerChoice, scheduler_config: Mapping[str, Any]) -> Any:
    """Build the diffusers scheduler for ``choice`` from a pipeline's scheduler config.

    Typical use: ``pipe.scheduler = build_scheduler(choice, pipe.scheduler.config)``, then
    :func:`set_timesteps` (or let the pipeline call ``set_timesteps`` when
    ``choice.explicit_sigmas`` is False). Imports diffusers.

    Args:
        choice: from :func:`resolve`.
        scheduler_config: the model's scheduler config; only the keys that describe the model
            are used (betas, number of training steps, prediction type, zero-SNR rescaling).

    Returns:
        A configured diffusers scheduler.

    Raises:
        PromptweightsError: ``choice.scheduler_class`` is None (the message gives the reason).
        ImportError: diffusers is not installed.

    >>> build_scheduler(resolve("DPM fast"), {})
    Traceback (most recent call last):
      ...
    promptweights.errors.PromptweightsError: no diffusers scheduler for DPM fast: diffusers has no scheduler with this algorithm (DPM-Solver-fast with its own step sizes)
    """  # noqa: E501 - doctest output is one line
    from .errors import PromptweightsError

    if choice.scheduler_class is None:
        raise PromptweightsError(f"no diffusers scheduler for {choice.sampler}: {choice.reason}")
    import diffusers

    cls = getattr(diffusers, choice.scheduler_class)
    # Only what describes the model's noise schedule comes from the pipeline; sampler settings of
    # its current scheduler (use_lu_lambdas, timestep_spacing, solver_order…) must not leak in.
    config = {k: v for k, v in dict(scheduler_config).items() if k in _MODEL_KEYS}
    config.update(dict(choice.config))
    return cls.from_config(config)


def set_timesteps(scheduler: Any, choice: SamplerChoice, steps: int, device: Any = None) -> None:
    """Call ``scheduler.set_timesteps`` for ``choice``, passing A1111's sigmas where needed.

    Args:
        scheduler: from :func:`build_scheduler`.
        choice: the same choice.
        steps: number of sampling steps.
        device: torch device for the timesteps.

    >>> class Recorder:  # stands in for a diffusers scheduler
    ...     alphas_cumprod = [0.99, 0.9, 0.5]
    ...     def set_timesteps(self, *args, **kwargs):
    ...         print(args, sorted(kwargs), len(kwargs.get("sigmas", [])))
    >>> set_timesteps(Recorder(), resolve("Euler", "Polyexponential"), 2)
    () ['device', 'sigmas'] 3
    >>> set_timesteps(Recorder(), resolve("Euler", "Karras"), 2)
    (2,) ['device'] 0
    """
    if not choice.explicit_sigmas or choice.schedule_name is None:
        scheduler.set_timesteps(steps, device=device)
        return
    sigmas = schedule_sigmas(choice.schedule_name, steps, model_sigmas(scheduler.alphas_cumprod))
    scheduler.set_timesteps(sigmas=sigmas, device=device)
