"""The shared parts of the backends (services/backends/http.py): the error shape chosen by
path, for errors no model backend makes on demand (413, an unexpected exception), and
the `model` check. The model backends' own tests cover their 400/404/405/503 answers."""

from __future__ import annotations

import pytest
from backend_server import assert_error, assert_openai_error, call, running
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from services.backends.http import ApiError, check_model, error_handlers

pytestmark = pytest.mark.timeout(30)


async def too_large(request: Request) -> JSONResponse:
    raise HTTPException(413, "request body too large")


async def broken(request: Request) -> JSONResponse:
    raise RuntimeError("a bug")


async def refused(request: Request) -> JSONResponse:
    raise ApiError(400, "invalid_request", "input must be a list", param="input")


def test_errors_take_openai_shape_under_v1_and_ours_elsewhere() -> None:
    paths = {"/too-large": too_large, "/broken": broken, "/refused": refused}
    routes = [Route(prefix + path, handler, methods=["POST"])
              for prefix in ("", "/v1") for path, handler in paths.items()]
    app = Starlette(routes=routes, exception_handlers=error_handlers("test"))
    with running(app, ready_status=None) as sock:
        assert_openai_error(*call(sock, "POST", "/v1/too-large"), 413, "body_too_large")
        assert_openai_error(*call(sock, "POST", "/v1/broken"), 500, "internal_error")
        assert_openai_error(*call(sock, "POST", "/v1/refused"), 400, "invalid_request", param="input")
        assert_openai_error(*call(sock, "POST", "/v1"), 404, "not_found")
        assert_error(*call(sock, "POST", "/too-large"), 413, "body_too_large")
        assert_error(*call(sock, "POST", "/broken"), 500, "internal_error")
        assert_error(*call(sock, "POST", "/refused"), 400, "invalid_request")
        assert_error(*call(sock, "POST", "/v1x"), 404, "not_found")  # not under /v1


@pytest.mark.parametrize("body", [{}, {"model": None}, {"model": "m-1"}])
def test_check_model_accepts_this_model_or_none(body: dict[str, object]) -> None:
    check_model(body, "m-1")


@pytest.mark.parametrize(("wanted", "status", "code"),
                         [("m-2", 404, "model_not_found"), ("M-1", 404, "model_not_found"),
                          ("", 404, "model_not_found"), (1, 400, "invalid_request")])
def test_check_model_refuses_another(wanted: object, status: int, code: str) -> None:
    with pytest.raises(ApiError) as info:
        check_model({"model": wanted}, "m-1")
    assert (info.value.status, info.value.code, info.value.param) == (status, code, "model")
