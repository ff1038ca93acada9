"""The OCR core of the built-in `vision-ocr` backend: image bytes in, text and words out.

`recognise()` decodes an image with Pillow and reads it with Tesseract (via pytesseract).
It blocks for as long as Tesseract runs, so async callers must run it in a thread. Every
failure a client can cause is a `ValueError` subclass (`BadImage`, `UnknownLanguage`) with
a message fit to show them; a missing or broken Tesseract is `EngineUnavailable`.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import re
import time
from typing import Any

import pytesseract
from PIL import Image, UnidentifiedImageError
from pytesseract import Output

log = logging.getLogger(__name__)

# "data:image/png;base64," and the like, as browsers produce with canvas.toDataURL().
_DATA_URL_PREFIX = re.compile(r"^data:[^,;]*(;[^,;]*)*;base64,", re.IGNORECASE)
# Modes Tesseract reads as they are; others (P, CMYK, RGBA, I;16...) are converted first.
_NATIVE_MODES = ("1", "L", "RGB")

_known_languages: tuple[str, ...] = ()


class BadImage(ValueError):
    """The bytes are not an image Pillow can decode (or not valid base64 at all)."""


class UnknownLanguage(ValueError):
    """The requested Tesseract language is not installed on this machine."""


class EngineUnavailable(RuntimeError):
    """Tesseract is missing or failed to run; not the client's fault."""


def decode_base64_image(text: str) -> bytes:
    """Decode base64 image data, accepting an optional `data:...;base64,` URL prefix."""
    payload = _DATA_URL_PREFIX.sub("", text.strip(), count=1)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        # ValueError too: non-ASCII characters in a str fail before the base64 check.
        raise BadImage(f"image_base64 is not valid base64: {exc}") from exc
    if not data:
        raise BadImage("image_base64 is empty")
    return data


def available_languages() -> list[str]:
    """Languages Tesseract has trained data for, e.g. ["eng", "osd"]."""
    try:
        return sorted(pytesseract.get_languages(config=""))
    except pytesseract.TesseractNotFoundError as exc:
        raise EngineUnavailable(f"tesseract is not installed or not on PATH: {exc}") from exc


def recognise(image_bytes: bytes, lang: str = "eng") -> dict[str, Any]:
    """OCR one image: {"text", "words": [{"text", "confidence", "box"}], "lang"}.

    `lang` is a Tesseract language code, or several joined by "+" ("eng+deu").
    """
    _check_language(lang)
    image = _open_image(image_bytes)
    started = time.monotonic()
    data = _run_tesseract(image, lang)
    words, lines = _collect_words(data)
    log.debug(
        "ocr %dx%d lang=%s: %d words in %.3fs",
        image.width, image.height, lang, len(words), time.monotonic() - started,
    )
    text = "\n".join(" ".join(line) for line in lines).strip()
    return {"text": text, "words": words, "lang": lang}


def _check_language(lang: str) -> None:
    global _known_languages
    # Listing languages spawns tesseract (~20-30 ms), so reuse the last list and only
    # ask again on a miss, which also notices language packs installed since.
    installed = _known_languages
    if not installed or any(part not in installed for part in lang.split("+")):
        installed = _known_languages = tuple(available_languages())
    if any(part not in installed for part in lang.split("+")):
        raise UnknownLanguage(
            f"language {lang!r} is not installed; installed: {', '.join(installed) or 'none'}"
        )


def _open_image(image_bytes: bytes) -> Image.Image:
    """Decode fully now, so truncated or corrupt files fail here rather than in Tesseract."""
    if not image_bytes:
        raise BadImage("image is empty")
    try:
        image = Image.open(io.BytesIO(image_bytes))
        image.load()
    except UnidentifiedImageError as exc:
        raise BadImage("data is not an image in a format Pillow can read") from exc
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        # Pillow reports truncated/corrupt data as OSError, and some plugins as
        # ValueError or SyntaxError; a pixel bomb is a client error too.
        raise BadImage(f"image could not be decoded: {exc}") from exc
    if image.mode not in _NATIVE_MODES:
        image = image.convert("RGB")
    return image


def _run_tesseract(image: Image.Image, lang: str) -> dict[str, list[Any]]:
    try:
        return pytesseract.image_to_data(image, lang=lang, output_type=Output.DICT)
    except pytesseract.TesseractNotFoundError as exc:
        raise EngineUnavailable(f"tesseract is not installed or not on PATH: {exc}") from exc
    except pytesseract.TesseractError as exc:
        raise EngineUnavailable(f"tesseract failed: {exc.message}") from exc


def _collect_words(data: dict[str, list[Any]]) -> tuple[list[dict[str, Any]], list[list[str]]]:
    """Words with text and a confidence, plus their texts grouped by line in reading order."""
    words: list[dict[str, Any]] = []
    lines: dict[tuple[int, int, int], list[str]] = {}
    for i, raw in enumerate(data["text"]):
        text = str(raw).strip()
        confidence = float(data["conf"][i])
        if not text or confidence < 0:
            continue
        box = {key: int(data[key][i]) for key in ("left", "top", "width", "height")}
        words.append({"text": text, "confidence": confidence, "box": box})
        # Tesseract numbers lines within paragraphs within blocks; dicts keep that order.
        line_key = (data["block_num"][i], data["par_num"][i], data["line_num"][i])
        lines.setdefault(line_key, []).append(text)
    return words, list(lines.values())
