"""A tiny trained text-to-image pipeline shipped with the package, for offline demos and tests.

The model draws flat shapes on a flat background at 32×32 from prompt-style captions such as
``a red circle and a blue square, white background``, ``a red circle, blue background`` or
``small green square``:

* one shape (centred) or two side by side, the first named on the left (``… and …``);
* shape colours: red, orange, yellow, green, blue, purple; a shape whose caption names no colour
  (``a circle``) is drawn gray;
* shapes: circle, square, triangle; sizes: ``small``, ``large`` or unnamed;
* backgrounds: the six colours plus white and black (``, <colour> background``).

It is a standard diffusers ``StableDiffusionPipeline``, 7.8 MB of float32 safetensors:

* ``tokenizer``: a ``CLIPTokenizer`` whose BPE vocabulary (characters, punctuation and every
  caption word whole) gives one token per word; 16-token windows (``model_max_length``);
* ``text_encoder``: a ``CLIPTextModel``, 2 layers, 64 wide (79 k parameters);
* ``unet``: a ``UNet2DConditionModel`` on 16×16×4 latents, channels (32, 64, 64), cross-attention
  at 8×8 and 4×4 (1.7 M parameters);
* ``vae``: an ``AutoencoderKL`` (32×32×3 ↔ 16×16×4, 159 k parameters), trained on the scenes;
  its ``scaling_factor`` brings the latents to a standard deviation of 0.35, not 1, so that the
  shapes' colours settle late in sampling and prompt editing can still change them;
* ``scheduler``: DPM-Solver++ over Stable Diffusion's scaled-linear betas (ε-prediction), with
  steps uniform in log-SNR (``use_lu_lambdas``).

What prompt weights do to it (``tests/test_toy.py``, three seed sets each), in
``a (red:w) circle and a blue square, white background``: ``(red:1.4)`` gives more red than
``red``, in the picture and against the blue square, under every strategy; under ``compel`` and
``down-weight`` red rises at each step of ``w`` = 0, 0.6, 1, 1.4, and ``(red:0)`` removes the
word: the circle is drawn gray, as for ``a circle``. Under ``comfy`` the circle stays red at
weight 0 (the words after "red" still carry it), and ``a1111``, which rescales the whole prompt to
keep its mean, changes the whole picture at weights away from 1 on this small model. ``+``, the
word ComfyUI_ADV_CLIP_emb puts in place of a down-weighted word, was a filler in training, so the
model ignores it. On held-out captions the named colours are drawn right (≥ 90% of one-shape and
≥ 85% of two-shape scenes); the outlines are rough blobs (the shape class is read right in about
60% of one-shape scenes, near chance in two-shape ones).

When the colour settles depends on the guidance scale: the stronger the guidance, the later. At
this model's guidance of 1.5 (``DEFAULT_GUIDANCE``) and 12 steps it settles
about halfway, so ``[red:green:0.5]`` ends between red and green, ``[red:green:0.3]`` nearer green
and ``[red:green:0.7]`` nearer red, as A1111 users expect of prompt editing.

Text encoder and UNet were trained together from scratch with the diffusion loss (captions dropped
10% of the time for classifier-free guidance), so the colour words carry the colour.
``tools/train_toy.py`` reproduces the weights (``all``: 1200 VAE steps, then the whole
3500-step diffusion schedule at batch 32, about 80 minutes on one CPU thread shared with other
work; the run was resumed from its 2750-step checkpoint, which reproduces an uninterrupted
one). Some colour/shape/background combinations were held out of training (``held_out`` and
``held_out_pair`` there).

Nothing here imports torch or diffusers at module import time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import torch

__all__ = ["generate", "load_pipeline", "model_path", "text_encoder"]

#: Steps and guidance scale the demos and tests use. Stronger guidance makes the colour settle
#: later (at 4 only in the last third of the steps, where prompt editing at 0.5 cannot reach it).
DEFAULT_STEPS = 12
DEFAULT_GUIDANCE = 1.5


@contextlib.contextmanager
def model_path() -> Iterator[Path]:
    """Yield the directory of the shipped pipeline (a real directory, even from a zip import)."""
    with resources.as_file(resources.files(__name__) / "model") as path:
        yield Path(path)


def load_pipeline(device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> Any:
    """Load the toy ``StableDiffusionPipeline`` from package data, offline.

    Args:
        device: where to put it.
        dtype: its dtype; ``torch.float32`` (as stored) when ``None``.

    Returns:
        The pipeline, progress bar off.
    """
    with _quiet_image_libraries():
        from diffusers import StableDiffusionPipeline

    pipeline_class: Any = StableDiffusionPipeline
    with model_path() as path, _quiet_image_libraries():
        # The weights are stored in float32; converting afterwards avoids the ``torch_dtype`` /
        # ``dtype`` keyword that differs between diffusers versions.
        pipe = pipeline_class.from_pretrained(
            path,
            local_files_only=True,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device) if dtype is None else pipe.to(device, dtype)


@contextlib.contextmanager
def _quiet_image_libraries() -> Iterator[None]:
    """Hide what loading a text-to-image pipeline makes transformers and torchvision say about
    image and video processors (a torchvision build that does not match torch, a slow image
    processor, deprecated video decoding): the toy model has no image processor at all. Other
    warnings, and transformers' errors, still show."""
    import logging as std_logging
    import warnings

    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity(std_logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"(?s).*torchvision", category=UserWarning)
            warnings.filterwarnings("ignore", module=r"torchvision(\..*)?$")
            yield
    finally:
        logging.set_verbosity(verbosity)


def text_encoder(pipe: Any) -> Any:
    """The pipeline's text tower as a :class:`promptweights.encoders.TextEncoder`.

    Cached on the pipeline, so the empty-prompt encoding is computed once.
    """
    from promptweights.encoders import TextEncoder

    encoder = getattr(pipe, "_promptweights_encoder", None)
    if encoder is None or encoder.model is not pipe.text_encoder:
        encoder = TextEncoder.clip(pipe.text_encoder, pipe.tokenizer)
        pipe._promptweights_encoder = encoder
    return encoder


def generate(
    pipe: Any,
    prompt: str,
    negative_prompt: str = "",
    *,
    seeds: Sequence[int] = (0,),
    strategy: str = "a1111",
    normalization: str = "none",
    steps: int = DEFAULT_STEPS,
    guidance_scale: float = DEFAULT_GUIDANCE,
) -> np.ndarray:
    """Draw images for an A1111 prompt with one seed each, through the diffusers adapter.

    The prompt and negative prompt are encoded by :func:`promptweights.diffusers.encode` (weights,
    prompt editing and alternation switched at run time as A1111 does, ``AND`` combined in the
    denoiser, one batched pass per encoder: ``batch_rows=True``).

    Args:
        pipe: the pipeline from :func:`load_pipeline`.
        prompt: the prompt, in A1111 syntax.
        negative_prompt: the negative prompt.
        seeds: one image per seed (each from its own ``torch.Generator``).
        strategy: weighting strategy name (``"a1111"``, ``"comfy"``, …).
        normalization: token-weight normalisation name.
        steps: sampling steps.
        guidance_scale: classifier-free guidance scale.

    Returns:
        ``float32`` images ``(len(seeds), 32, 32, 3)`` in ``[0, 1]``.
    """
    import torch

    from promptweights.diffusers import encode

    cond = encode(
        pipe,
        [prompt] * len(seeds),
        negative_prompt,
        strategy=strategy,
        normalization=normalization,
        steps=steps,
        batch_rows=True,
    )
    generators = [torch.Generator("cpu").manual_seed(int(seed)) for seed in seeds]
    with cond.attach(pipe):
        out = pipe(
            **cond.pipeline_kwargs(),  # num_inference_steps=steps is in there
            guidance_scale=guidance_scale,
            generator=generators,
            output_type="np",
        )
    images: np.ndarray = out.images
    return images.astype("float32")
