"""promptweights: AUTOMATIC1111 prompt syntax as exact, fast text-encoder conditioning.

The language layer lives here and needs only ``lark``: :func:`parse` gives a typed tree,
:func:`weighted_spans`, :func:`schedules`, :func:`split_and` and :func:`extra_networks` give exactly
what A1111's own functions give. Model code is in submodules that import torch lazily
(``promptweights.strategies``, ``promptweights.builder``, ``promptweights.diffusers``), and
Hypothesis strategies are in ``promptweights.testing``.

>>> import promptweights as pw
>>> pw.weighted_spans("a (red:1.2) cat")
[('a ', 1.0), ('red', 1.2), (' cat', 1.0)]
>>> pw.schedules("a [cat:dog:0.5]", 10)
[(5, 'a cat'), (10, 'a dog')]
"""

from __future__ import annotations

from .convert import Conversion, convert
from .errors import (
    ArgumentTypeError,
    CompareError,
    Diagnostic,
    InfotextError,
    InfotextLimitError,
    InvalidArgumentError,
    InvalidWeightError,
    LimitExceededError,
    NetworkFileError,
    PromptSyntaxError,
    PromptweightsError,
    PromptweightsWarning,
    UnknownNameError,
    UnreproducibleError,
    UnsupportedPipelineError,
)
from .limits import DEFAULT_LIMITS, MAX_MULTIPLIER, MAX_PROMPT_CHARS, MAX_WEIGHT, Limits
from .networks import extra_networks, strip_comments
from .parsing import parse
from .render import render
from .routing import route
from .schedules import DEFAULT_MAX_DEPTH, schedules, split_and
from .spans import DIALECTS, weighted_spans
from .tree import (
    Alternation,
    Attention,
    Blend,
    Break,
    Conjunction,
    Edit,
    Emphasis,
    EncoderSection,
    ExtraNetwork,
    Lora,
    Node,
    PerEncoder,
    Prompt,
    SubPrompt,
    Swap,
    Text,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_LIMITS",
    "DEFAULT_MAX_DEPTH",
    "DIALECTS",
    "MAX_MULTIPLIER",
    "MAX_PROMPT_CHARS",
    "MAX_WEIGHT",
    "Alternation",
    "ArgumentTypeError",
    "Attention",
    "Blend",
    "Break",
    "CompareError",
    "Conjunction",
    "Conversion",
    "Diagnostic",
    "Edit",
    "Emphasis",
    "EncoderSection",
    "ExtraNetwork",
    "InfotextError",
    "InfotextLimitError",
    "InvalidArgumentError",
    "InvalidWeightError",
    "LimitExceededError",
    "Limits",
    "Lora",
    "NetworkFileError",
    "Node",
    "PerEncoder",
    "Prompt",
    "PromptSyntaxError",
    "PromptweightsError",
    "PromptweightsWarning",
    "SubPrompt",
    "Swap",
    "Text",
    "UnknownNameError",
    "UnreproducibleError",
    "UnsupportedPipelineError",
    "__version__",
    "convert",
    "extra_networks",
    "parse",
    "render",
    "route",
    "schedules",
    "split_and",
    "strip_comments",
    "weighted_spans",
]
