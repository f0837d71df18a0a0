"""A1111 generation parameters ("infotext"): read, write, and carry them in image files.

Every image A1111 saves carries its settings as text (a1111-behaviour.md §10)::

    girl, (eyeshadow)
    Negative prompt: ugly, [blurry]
    Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 965400086, Size: 512x512

:func:`parse` reads such text into a :class:`GenerationParameters` exactly as A1111's reader does
(values stay strings, ``WxH`` values split into ``<key>-1``/``<key>-2``, defaults for missing keys,
version back-compat), and :func:`format` writes one back in A1111's layout and quoting. The value
keeps what was *written* (the pairs in their order, bare keys, empty values) apart from what A1111
*derives* when reading (splits, defaults, back-compat), so both round trips hold:
``parse(format(p)) == p`` for every :class:`GenerationParameters`, and ``format(parse(t)) == t``
for text A1111 wrote. (Parsed values also remember their exact text, so that spacing, CRLF and
other things A1111's reader ignores come back unchanged too; ``format(p, keep_source=False)``
gives the canonical form.)

:func:`read_image` and :func:`save_image` move the text in and out of PNG ``parameters`` chunks and
JPEG/WebP EXIF ``UserComment`` fields; they need Pillow (the ``image`` extra) and import it only
when called. The module is in two parts: this one holds the image I/O and re-exports the codec
(text ↔ parameters: :func:`parse`, :func:`format`, :class:`GenerationParameters`) from
:mod:`promptweights.infotext_codec`; import both from here.

Input is untrusted: text longer than :data:`MAX_INFOTEXT_CHARS` is refused, nothing is
evaluated or unpickled, and odd text gives a best-effort result with diagnostics (or, with
``strict=True``, an :class:`~promptweights.errors.InfotextError`).

>>> p = parse("a cat\\nSteps: 20, Sampler: Euler a, CFG scale: 7, Size: 512x768")
>>> p.steps, p.sampler, p.width, p.height
(20, 'Euler a', 512, 768)
>>> format(p)
'a cat\\nSteps: 20, Sampler: Euler a, CFG scale: 7, Size: 512x768'
"""

from __future__ import annotations

import io
import os
import warnings
from typing import IO, Any

from .errors import InfotextError, InfotextLimitError
from .infotext_codec import (
    A1111_KEY_ORDER,
    EMPHASIS_STRATEGIES,
    MAX_INFOTEXT_CHARS,
    GenerationParameters,
    format,
    parse,
    unreproducible,
)
from .infotext_codec import FAMILY_KEY as FAMILY_KEY
from .infotext_codec import SAMPLING_KEY as SAMPLING_KEY
from .infotext_codec import SCHEDULER_KEY as SCHEDULER_KEY
from .infotext_codec import SEQUENCE_KEY as SEQUENCE_KEY
from .infotext_codec import STRATEGY_KEY as STRATEGY_KEY
from .infotext_codec import UNSUPPORTED_SETTINGS as UNSUPPORTED_SETTINGS
from .infotext_codec import Value as Value

__all__ = [
    "A1111_KEY_ORDER",
    "EMPHASIS_STRATEGIES",
    "FAMILY_KEY",
    "MAX_IMAGE_BYTES",
    "MAX_INFOTEXT_CHARS",
    "SAMPLING_KEY",
    "SCHEDULER_KEY",
    "SEQUENCE_KEY",
    "STRATEGY_KEY",
    "UNSUPPORTED_SETTINGS",
    "GenerationParameters",
    "format",
    "parse",
    "read_image",
    "read_image_text",
    "save_image",
    "unreproducible",
]

#: Longest image file :func:`read_image` opens, in bytes (A1111 has no cap; this is ours).
MAX_IMAGE_BYTES = 256 * 1024 * 1024

# ``save_image`` has a ``format`` argument (Pillow's); the codec's writer under another name.
_format_text = format

# --------------------------------------------------------------------------------------------------
# Images (Pillow, imported lazily)

_EXIF_IFD = 0x8769
_USER_COMMENT = 0x9286
_UNICODE_PREFIX = b"UNICODE\x00"
_ASCII_PREFIX = b"ASCII\x00\x00\x00"
_JIS_PREFIX = b"JIS\x00\x00\x00\x00\x00"

ImageSource = str | os.PathLike[str] | bytes | IO[bytes]


def _pil() -> Any:
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "reading and writing image metadata needs Pillow: pip install 'promptweights[image]'"
        ) from exc
    return Image


def _decode_user_comment(data: bytes) -> str:
    """EXIF UserComment bytes → text: 8-byte charset prefix, then the text (A1111 uses UTF-16)."""
    prefix, body = data[:8], data[8:]
    if prefix == _UNICODE_PREFIX:
        if body[:2] in (b"\xff\xfe", b"\xfe\xff"):
            return body.decode("utf-16", errors="replace")
        # piexif (A1111) writes big-endian; some tools write little-endian without a BOM.
        be_zeros = body[0::2].count(0)
        le_zeros = body[1::2].count(0)
        return body.decode("utf-16-le" if le_zeros > be_zeros else "utf-16-be", errors="replace")
    if prefix == _ASCII_PREFIX:
        return body.decode("ascii", errors="replace")
    if prefix == _JIS_PREFIX:
        return body.decode("shift_jis", errors="replace")
    return data.decode("utf-8", errors="ignore").lstrip("\x00")


def read_image_text(source: ImageSource) -> str | None:
    """Return the infotext stored in an image file, or None if it holds none.

    PNG: the ``parameters`` text chunk (tEXt, zTXt or iTXt). JPEG/WebP: the EXIF
    ``UserComment``. Only the metadata is read; the pixels are never decoded.

    Args:
        source: a path, the file's bytes, or a binary file object.

    Returns:
        The text, or None.

    Raises:
        InfotextError: the file is not an image Pillow can open.
        InfotextLimitError: the file is larger than :data:`MAX_IMAGE_BYTES`.
        OSError: a path that cannot be read.
        ImportError: Pillow is not installed (extra ``image``).

    >>> read_image_text(b"not an image")
    Traceback (most recent call last):
      ...
    promptweights.errors.InfotextError: not an image file Pillow can read: ...
    """
    image_module = _pil()
    if isinstance(source, bytes):
        size = len(source)
        source = io.BytesIO(source)
    elif isinstance(source, (str, os.PathLike)):
        size = os.path.getsize(source)  # OSError for a path that cannot be read
    else:
        size = 0  # a file object: Pillow reads only the headers and metadata chunks
    if size > MAX_IMAGE_BYTES:
        raise InfotextLimitError(f"image file of {size} bytes exceeds {MAX_IMAGE_BYTES}")
    try:
        with warnings.catch_warnings():
            # Pillow warns about corrupt EXIF or truncated files; only the text matters here.
            warnings.simplefilter("ignore")
            return _read_text(image_module, source)
    except image_module.DecompressionBombError as exc:
        raise InfotextLimitError(f"image too large: {exc}") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InfotextError(f"not an image file Pillow can read: {exc}") from exc


def _read_text(image_module: Any, source: Any) -> str | None:
    with image_module.open(source) as image:
        text = image.info.get("parameters")
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        if isinstance(text, str):
            return text
        comment = image.getexif().get_ifd(_EXIF_IFD).get(_USER_COMMENT)
    if isinstance(comment, bytes) and comment:
        return _decode_user_comment(comment)
    if isinstance(comment, str) and comment:
        return comment
    return None


def read_image(source: ImageSource, *, strict: bool = False) -> GenerationParameters:
    """Read and :func:`parse` the infotext of an image file.

    Args:
        source: a path, the file's bytes, or a binary file object.
        strict: passed to :func:`parse`.

    Returns:
        The parameters.

    Raises:
        InfotextError: no infotext in the file, or the file is unreadable.
        ImportError: Pillow is not installed (extra ``image``).

    >>> read_image(b"\\x89PNG")
    Traceback (most recent call last):
      ...
    promptweights.errors.InfotextError: not an image file Pillow can read: ...
    """
    text = read_image_text(source)
    if text is None:
        raise InfotextError("the image holds no generation parameters")
    return parse(text, strict=strict)


def save_image(
    image: Any,
    fp: str | os.PathLike[str] | IO[bytes],
    params: GenerationParameters | str,
    *,
    format: str | None = None,
    **save_options: Any,
) -> None:
    """Save a Pillow image with its infotext, where A1111 puts it.

    PNG: a ``parameters`` text chunk (iTXt when the text is not Latin-1). JPEG and WebP: the
    EXIF ``UserComment`` as ``UNICODE\\0`` + UTF-16-BE, as A1111 (piexif) writes it.

    Args:
        image: a ``PIL.Image.Image``.
        fp: a path or a binary file object.
        params: the parameters, or infotext as a string.
        format: Pillow format name (``"PNG"``, ``"JPEG"``, ``"WEBP"``); from the path if None.
        save_options: passed on to ``Image.save`` (``quality=``, ``lossless=``…).

    Raises:
        InfotextError: for a format other than PNG, JPEG or WebP.
        ImportError: Pillow is not installed (extra ``image``).

    >>> save_image(None, io.BytesIO(), "a", format="GIF")
    Traceback (most recent call last):
      ...
    promptweights.errors.InfotextError: cannot store infotext in 'GIF' files; use PNG, JPEG or WEBP
    """
    text = params if isinstance(params, str) else _format_text(params)
    kind = (format or "").upper()
    if not kind and isinstance(fp, (str, os.PathLike)):
        ext = os.path.splitext(os.fspath(fp))[1].lower()
        kind = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}.get(ext, ext)
    if kind not in ("PNG", "JPEG", "WEBP"):
        raise InfotextError(f"cannot store infotext in {kind!r} files; use PNG, JPEG or WEBP")
    image_module = _pil()
    if kind == "PNG":
        from PIL import PngImagePlugin

        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", text)
        image.save(fp, format=kind, pnginfo=info, **save_options)
        return
    exif = image_module.Exif()
    exif.get_ifd(_EXIF_IFD)[_USER_COMMENT] = _UNICODE_PREFIX + text.encode("utf-16-be")
    image.save(fp, format=kind, exif=exif.tobytes(), **save_options)
