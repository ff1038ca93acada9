"""POST /service/{type} for a local service: the seed's envelope around the backend's answer."""

from __future__ import annotations

from api_doubles import MAX_BODY

from services.api.envelope import declares_json


async def test_the_backend_answer_is_wrapped_in_the_seed_envelope_as_it_came(start_api):
    api = await start_api()
    async with api.client.post("/service/echo", data=b'{"x": 1}') as resp:
        assert resp.status == 200
        assert resp.headers["content-type"] == "application/json"
        assert await resp.read() == (b'{"status":"success","message":"Processed by w1","service":"echo",'
                                     b'"worker_id":"w1","data":{"echo":{"x": 1}}}')


async def error_of(resp) -> tuple[int, str]:
    return resp.status, (await resp.json())["error"]["code"]


async def test_a_body_that_is_not_json_is_refused_before_the_backend(start_api):
    api = await start_api()
    async with api.client.post("/service/echo", data=b"{not json") as resp:
        assert await error_of(resp) == (400, "invalid_json")


async def test_a_body_over_the_limit_is_refused_by_its_length(start_api):
    api = await start_api()
    async with api.client.post("/service/echo", data=b"1" * (MAX_BODY + 1)) as resp:
        assert await error_of(resp) == (413, "body_too_large")


async def test_a_streamed_body_over_the_limit_is_refused_while_read(start_api):
    async def chunks():
        for _ in range(4):
            yield b"1" * (MAX_BODY // 2)

    api = await start_api()
    async with api.client.post("/service/echo", data=chunks()) as resp:
        assert "content-length" not in resp.request_info.headers
        assert await error_of(resp) == (413, "body_too_large")


async def test_a_backend_not_listening_is_503_with_retry_after(start_api):
    api = await start_api()
    async with api.client.post("/service/down", json={}) as resp:
        assert await error_of(resp) == (503, "backend_unavailable")
        assert resp.headers["retry-after"] == "1"
        assert resp.headers["x-mesh-unserved"] == "1"  # a forwarding node may try another provider


async def test_a_backend_slower_than_its_timeout_is_504(start_api):
    api = await start_api()
    async with api.client.post("/service/slow", json={}) as resp:
        assert await error_of(resp) == (504, "backend_timeout")


async def test_a_backend_answer_that_is_not_json_is_502(start_api):
    api = await start_api()
    async with api.client.post("/service/text", json={}) as resp:
        assert await error_of(resp) == (502, "bad_gateway")


async def test_a_backend_error_passes_through_with_its_body_and_type(start_api):
    api = await start_api()
    async with api.client.post("/service/fail", json={}) as resp:
        assert resp.status == 500
        assert resp.headers["content-type"] == "application/problem+json"
        assert await resp.read() == b'{"detail":"model exploded"}'


async def test_the_envelope_is_post_only(start_api):
    api = await start_api()
    async with api.client.get("/service/echo") as resp:
        assert await error_of(resp) == (405, "method_not_allowed")
        assert resp.headers["allow"] == "POST"
    assert api.router.resolved == []


def test_json_is_recognised_by_its_media_type_with_or_without_parameters():
    assert declares_json("application/json; charset=utf-8")
    assert declares_json("application/problem+JSON")
    assert not declares_json("text/plain")
    assert not declares_json(None)
