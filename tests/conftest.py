"""Shared pytest set-up: Hypothesis profiles, the repository root on ``sys.path``, the
``one_torch_thread`` fixture, the tiny ``tok``/``model`` fixtures and a simulated batch-dependent
rounding.

``ci`` is bounded so that the whole suite stays within minutes on a 2-core runner; ``dev`` looks a
little harder. ``ci`` is loaded when the ``CI`` environment variable is set, ``dev`` otherwise;
``HYPOTHESIS_PROFILE`` names one explicitly. Deadlines are off in both: the runners are shared, and
speed is measured by ``benchmarks/parse.py``, not by tests.

``PROMPTWEIGHTS_BATCH_ROUNDING=1`` simulates a CPU whose matrix products round differently with the
number of rows in a batch (PyTorch promises no batch invariance; an Intel Xeon and an AMD EPYC
differ here): every ``torch.nn.Linear`` output moves by one unit in the last place at some columns
chosen by its row count. A test that compares two batches of different sizes bit for bit then
fails on any machine, while one that compares equal batch compositions, or uses a tolerance,
passes. ``.ci/run`` runs the model tests this way.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

# The benchmarks (and their A1111 reference parser) are not installed with the package; tests
# import them from the checkout, also when pytest is started as `pytest` rather than `python -m`.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _simulate_batch_rounding() -> None:
    import torch

    def nudge(module: torch.nn.Module, args: object, output: object) -> object:
        if not isinstance(module, torch.nn.Linear) or not isinstance(output, torch.Tensor):
            return None
        if not output.is_floating_point() or output.dim() < 2:
            return None
        rows = output.shape[0]
        columns = torch.arange(output.shape[-1], device=output.device)
        moved = (columns + rows) % 31 == 0
        return torch.where(moved, torch.nextafter(output, output.new_tensor(float("inf"))), output)

    torch.nn.modules.module.register_module_forward_hook(nudge)


if os.environ.get("PROMPTWEIGHTS_BATCH_ROUNDING"):
    _simulate_batch_rounding()

settings.register_profile("ci", max_examples=60, deadline=None, print_blob=True)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
)


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Run a module's tiny models on one torch thread: the machine is shared, and tiny models run
    fastest (and most reproducibly) that way. Use with ``pytest.mark.usefixtures``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tok() -> Any:
    """The tiny CLIP tokenizer of ``_tiny_models``, one per module."""
    from _tiny_models import tiny_clip_tokenizer

    return tiny_clip_tokenizer()


@pytest.fixture(scope="module")
def model(tok: Any) -> Any:
    """A tiny CLIP text model over ``tok``, one per module."""
    from _tiny_models import tiny_clip_model

    return tiny_clip_model(tok)


@pytest.fixture(scope="module")
def tiny_pipe() -> object:
    """A tiny SD 1.x pipeline (``_tiny_models.tiny_sd_pipeline``), one per module."""
    from _tiny_models import tiny_clip_model, tiny_clip_tokenizer, tiny_sd_pipeline

    tokenizer = tiny_clip_tokenizer()
    return tiny_sd_pipeline(tokenizer, tiny_clip_model(tokenizer))


@pytest.fixture(scope="module")
def toy_pipe() -> object:
    """The shipped toy pipeline on the CPU, one per module."""
    import torch

    from promptweights import toy

    torch.manual_seed(0)
    return toy.load_pipeline("cpu")
