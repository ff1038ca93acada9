"""Tests of the built-in vision-ocr backend: the engine directly, then the HTTP app served
by a real uvicorn on a unix socket (in a thread), queried with aiohttp.

They need the Debian `tesseract-ocr` package with English data (`eng`).
"""

from __future__ import annotations

import asyncio
import base64
import io
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytesseract
import pytest
import uvicorn
from backend_server import assert_error, call, call_async, running, served_until_sigterm
from PIL import Image, ImageDraw, ImageFont

from services.backends.ocr import engine
from services.backends.ocr.app import create_app

pytestmark = pytest.mark.timeout(60)

SENTENCE = "The quick brown fox 42"


def render(*lines: str) -> bytes:
    """PNG of black text in a large font on white with margins: easy for Tesseract."""
    font = ImageFont.load_default(size=48)
    image = Image.new("RGB", (1000, 80 + 70 * len(lines)), "white")
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((40, 40 + 70 * i), line, fill="black", font=font)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def sentence_png() -> bytes:
    return render(SENTENCE)


@pytest.fixture
def tmp_sock_dir() -> Iterator[Path]:
    # Unix socket paths are limited to ~107 bytes; pytest's tmp_path can be longer.
    path = Path(tempfile.mkdtemp(dir="/tmp", prefix="ocr-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def sock() -> Iterator[str]:
    """Socket path of a vision-ocr server running in a background thread for the module."""
    with running(create_app(), ready_status=None, timeout=20) as path:
        yield path


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- engine -----------------------------------------------------------------------------


def test_recognise_reads_sentence_exactly(sentence_png: bytes) -> None:
    result = engine.recognise(sentence_png)
    assert result["text"] == SENTENCE
    assert result["lang"] == "eng"
    assert [w["text"] for w in result["words"]] == SENTENCE.split()
    for word in result["words"]:
        assert isinstance(word["confidence"], float) and 0 <= word["confidence"] <= 100
        assert set(word["box"]) == {"left", "top", "width", "height"}
        assert word["box"]["width"] > 0 and word["box"]["height"] > 0


def test_recognise_joins_lines_with_newline() -> None:
    png = render(SENTENCE, "jumps over 7 lazy dogs")
    assert engine.recognise(png)["text"] == f"{SENTENCE}\njumps over 7 lazy dogs"


def test_recognise_blank_image_gives_empty_text() -> None:
    out = io.BytesIO()
    Image.new("L", (200, 100), 255).save(out, "PNG")
    assert engine.recognise(out.getvalue()) == {"text": "", "words": [], "lang": "eng"}


def test_recognise_converts_palette_and_alpha_images() -> None:
    rgba = Image.open(io.BytesIO(render(SENTENCE))).convert("RGBA")
    out = io.BytesIO()
    rgba.save(out, "PNG")
    assert engine.recognise(out.getvalue())["text"] == SENTENCE


@pytest.mark.parametrize("data", [b"", b"not an image at all", render("x")[:60]])
def test_recognise_rejects_non_images(data: bytes) -> None:
    with pytest.raises(engine.BadImage):
        engine.recognise(data)


def test_recognise_rejects_unknown_language(sentence_png: bytes) -> None:
    with pytest.raises(engine.UnknownLanguage, match="eng"):
        engine.recognise(sentence_png, lang="klingon")
    with pytest.raises(engine.UnknownLanguage):
        engine.recognise(sentence_png, lang="eng+klingon")


def test_available_languages_include_english() -> None:
    assert "eng" in engine.available_languages()


def test_decode_base64_image_accepts_plain_and_data_url() -> None:
    assert engine.decode_base64_image(b64(b"\x89PNG")) == b"\x89PNG"
    assert engine.decode_base64_image("data:image/png;base64," + b64(b"abc")) == b"abc"


@pytest.mark.parametrize("text", ["not base64!", "abc", "", "data:image/png;base64,", "é"])
def test_decode_base64_image_rejects_invalid(text: str) -> None:
    with pytest.raises(engine.BadImage):
        engine.decode_base64_image(text)


def test_bad_image_and_unknown_language_are_value_errors() -> None:
    assert issubclass(engine.BadImage, ValueError)
    assert issubclass(engine.UnknownLanguage, ValueError)


# --- HTTP app ---------------------------------------------------------------------------


def test_health_lists_english(sock: str) -> None:
    status, body = call(sock, "GET", "/health")
    assert status == 200, body
    assert body["status"] == "ok"
    assert body["engine"].startswith("tesseract ")
    assert "eng" in body["languages"]


@pytest.mark.parametrize("path", ["/", "/ocr"])
def test_json_ocr_reads_exact_text(sock: str, sentence_png: bytes, path: str) -> None:
    status, body = call(sock, "POST", path, json={"image_base64": b64(sentence_png)})
    assert status == 200, body
    assert body["text"] == SENTENCE
    assert body["lang"] == "eng"
    assert [w["text"] for w in body["words"]] == SENTENCE.split()


def test_json_ocr_accepts_data_url_and_lang(sock: str, sentence_png: bytes) -> None:
    image = "data:image/png;base64," + b64(sentence_png)
    status, body = call(sock, "POST", "/", json={"image_base64": image, "lang": "eng"})
    assert (status, body["text"]) == (200, SENTENCE)


def test_multipart_upload_reads_exact_text(sock: str, sentence_png: bytes) -> None:
    form = aiohttp.FormData()
    form.add_field("image", sentence_png, filename="fox.png", content_type="image/png")
    form.add_field("lang", "eng")
    status, body = call(sock, "POST", "/ocr", data=form)
    assert status == 200, body
    assert body["text"] == SENTENCE


def test_multipart_non_image_is_bad_image(sock: str) -> None:
    form = aiohttp.FormData()
    form.add_field("image", b"%PDF-1.4 hello", filename="x.pdf", content_type="application/pdf")
    assert_error(*call(sock, "POST", "/ocr", data=form), 400, "bad_image")


def test_multipart_without_image_field(sock: str) -> None:
    form = aiohttp.FormData()
    form.add_field("picture", b"...", filename="x.png", content_type="image/png")
    assert_error(*call(sock, "POST", "/ocr", data=form), 400, "missing_image")


def test_multipart_unknown_language(sock: str, sentence_png: bytes) -> None:
    form = aiohttp.FormData()
    form.add_field("image", sentence_png, filename="fox.png", content_type="image/png")
    form.add_field("lang", "klingon")
    assert_error(*call(sock, "POST", "/ocr", data=form), 400, "unknown_language")


def test_malformed_multipart(sock: str) -> None:
    headers = {"Content-Type": "multipart/form-data"}  # no boundary
    result = call(sock, "POST", "/ocr", data=b"--x\r\n", headers=headers)
    assert_error(*result, 400, "invalid_form")


@pytest.mark.parametrize("path", ["/", "/ocr"])
def test_invalid_json(sock: str, path: str) -> None:
    headers = {"Content-Type": "application/json"}
    result = call(sock, "POST", path, data=b"{not json", headers=headers)
    assert_error(*result, 400, "invalid_json")


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({}, "missing_image"),
        ({"image_base64": 123}, "missing_image"),
        (["image_base64"], "invalid_request"),
        ({"image_base64": "!!not base64!!"}, "bad_image"),
        ({"image_base64": b64(b"plain text, not an image")}, "bad_image"),
    ],
)
def test_bad_json_requests(sock: str, payload: Any, code: str) -> None:
    assert_error(*call(sock, "POST", "/", json=payload), 400, code)


def test_unknown_language_json(sock: str, sentence_png: bytes) -> None:
    payload = {"image_base64": b64(sentence_png), "lang": "klingon"}
    status, body = call(sock, "POST", "/", json=payload)
    assert_error(status, body, 400, "unknown_language")
    assert "eng" in body["error"]["message"]


def test_non_string_lang(sock: str, sentence_png: bytes) -> None:
    payload = {"image_base64": b64(sentence_png), "lang": ["eng"]}
    assert_error(*call(sock, "POST", "/", json=payload), 400, "invalid_request")


def test_unknown_route_and_method_keep_error_shape(sock: str) -> None:
    assert_error(*call(sock, "GET", "/nope"), 404, "not_found")
    assert_error(*call(sock, "GET", "/ocr"), 405, "method_not_allowed")


def test_health_answers_while_ocr_runs(
    sock: str, sentence_png: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow OCR must not block the event loop: /health answers while it is in flight."""
    entered, release = threading.Event(), threading.Event()

    def slow_recognise(image_bytes: bytes, lang: str = "eng") -> dict[str, Any]:
        entered.set()
        assert release.wait(20), "test never released the OCR"
        return {"text": "slow", "words": [], "lang": lang}

    monkeypatch.setattr(engine, "recognise", slow_recognise)

    async def scenario() -> tuple[tuple[int, Any], tuple[int, Any]]:
        ocr = asyncio.create_task(call_async(sock, "POST", "/", json={"image_base64": b64(b"x")}))
        assert await asyncio.to_thread(entered.wait, 20), "OCR never started"
        health = await asyncio.wait_for(call_async(sock, "GET", "/health"), timeout=5)
        assert not ocr.done()
        release.set()
        return health, await ocr

    try:
        (health_status, _), (ocr_status, ocr_body) = asyncio.run(scenario())
    finally:
        release.set()
    assert health_status == 200
    assert (ocr_status, ocr_body["text"]) == (200, "slow")


def test_health_503_when_tesseract_missing(
    tmp_sock_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pytesseract.pytesseract, "tesseract_cmd", "/nonexistent/tesseract")
    path = str(tmp_sock_dir / "down.sock")
    server = uvicorn.Server(
        uvicorn.Config(create_app(), uds=path, log_level="critical", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        status, body = call(path, "GET", "/health")
        assert_error(status, body, 503, "engine_unavailable")
        payload = {"image_base64": b64(render("x"))}
        assert_error(*call(path, "POST", "/", json=payload), 503, "engine_unavailable")
    finally:
        server.should_exit = True
        thread.join(timeout=20)
    assert not thread.is_alive()


# --- main.serve -------------------------------------------------------------------------


def test_serve_replaces_stale_socket_and_stops_on_sigterm(tmp_sock_dir: Path) -> None:
    path = tmp_sock_dir / "run" / "ocr.sock"
    path.parent.mkdir()
    with socket.socket(socket.AF_UNIX) as stale:  # bound, then closed: a dead server's file
        stale.bind(str(path))
    status, stderr = served_until_sigterm("ocr", path)
    # Uvicorn shuts down gracefully, then re-raises the signal so its parent sees it.
    assert status in (0, -signal.SIGTERM), stderr
    assert "Application shutdown complete" in stderr


def test_serve_refuses_non_socket_file(tmp_sock_dir: Path) -> None:
    from services.backends.ocr.main import serve

    path = tmp_sock_dir / "precious.txt"
    path.write_text("keep me")
    with pytest.raises(FileExistsError):
        serve(str(path))
    assert path.read_text() == "keep me"
