"""Tests for services.common.httpclient against scripted HTTP servers on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from http_loopback import Scripted

from services.common import httpclient as client

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """The head of one request, and its body when it has a content-length or is chunked."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    length = next((int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length:")), 0)
    if b"transfer-encoding: chunked" in lines:
        body = b""
        while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
            body += (await reader.readexactly(size + 2))[:-2]
        await reader.readexactly(2)
        return head, body
    return head, await reader.readexactly(length)


async def answer_ok_forever(reader, writer):
    while True:
        await read_request(reader)
        writer.write(OK)


@pytest.fixture
async def pools() -> AsyncIterator[client.Pools]:
    pools = client.Pools(connect_timeout=2)
    yield pools
    pools.close()


async def test_a_connection_is_kept_alive_for_the_next_request(pools):
    async with Scripted(answer_ok_forever) as server:
        for _ in range(3):
            reply = await pools.get(server.url).request("GET", "/x", {}, b"", timeout=5)
            assert (reply.status, await reply.read()) == (200, b"ok")
    assert server.connections == 1


async def test_the_request_head_names_host_and_length_and_keeps_end_to_end_headers(pools):
    seen = []

    async def record(reader, writer):
        seen.append(await read_request(reader))
        writer.write(OK)

    async with Scripted(record) as server:
        reply = await pools.get(server.url).request("POST", "/v1/x?a=1", {"x-trace": "7", "content-length": "99"},
                                                    b'{"a":1}', timeout=5)
        await reply.read()
    head, body = seen[0]
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /v1/x?a=1 HTTP/1.1"
    assert f"host: {server.url.removeprefix('http://')}".encode() in lines
    assert b"x-trace: 7" in lines and b"content-length: 7" in lines and b"content-length: 99" not in lines
    assert body == b'{"a":1}'


async def test_a_streamed_body_is_sent_chunked(pools):
    seen = []

    async def record(reader, writer):
        seen.append(await read_request(reader))
        writer.write(OK)

    async def parts():
        for i in range(3):
            yield b"part%d;" % i

    async with Scripted(record) as server:
        reply = await pools.get(server.url).request("PUT", "/up", {}, parts(), timeout=5)
        await reply.read()
    assert b"transfer-encoding: chunked" in seen[0][0] and seen[0][1] == b"part0;part1;part2;"


async def test_a_chunked_answer_arrives_piece_by_piece():
    go_on = asyncio.Event()

    async def two_pieces(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await go_on.wait()
        writer.write(b"6\r\nsecond\r\n0\r\n\r\n")

    pools = client.Pools(2)
    async with Scripted(two_pieces) as server:
        reply = await pools.get(server.url).request("GET", "/", {}, b"", timeout=5)
        pieces = reply.chunks()
        assert await anext(pieces) == b"first"  # before the server sent the rest
        go_on.set()
        assert [chunk async for chunk in pieces] == [b"second"]
    pools.close()


async def test_an_answer_without_length_ends_with_the_connection(pools):
    async def until_close(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\nall of it")

    async with Scripted(until_close) as server:
        reply = await pools.get(server.url).request("GET", "/", {}, b"", timeout=5)
        assert await reply.read() == b"all of it"
        assert reply.header(b"content-type") == b"text/plain"


async def test_an_interim_100_continue_is_skipped(pools):
    async def continue_first(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + OK)

    async with Scripted(continue_first) as server:
        reply = await pools.get(server.url).request("POST", "/", {}, b"x", timeout=5)
        assert (reply.status, await reply.read()) == (200, b"ok")


async def test_a_head_answer_has_no_body_whatever_its_length_says(pools):
    async def head(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n")
        await asyncio.sleep(10)

    async with Scripted(head) as server:
        reply = await pools.get(server.url).request("HEAD", "/", {}, b"", timeout=5)
        assert (reply.status, reply.header(b"content-length"), await reply.read()) == (200, b"1000", b"")


async def test_silence_past_the_read_timeout_is_a_read_timeout(pools):
    async def silent(reader, writer):
        await read_request(reader)
        await asyncio.sleep(10)

    async with Scripted(silent) as server:
        with pytest.raises(client.ReadTimeout):
            await pools.get(server.url).request("GET", "/", {}, b"", timeout=0.2)


async def test_a_stall_mid_body_is_a_read_timeout(pools):
    async def stall(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf")
        await asyncio.sleep(10)

    async with Scripted(stall) as server:
        reply = await pools.get(server.url).request("GET", "/", {}, b"", timeout=0.2)
        with pytest.raises(client.ReadTimeout):
            await reply.read()


async def test_a_pooled_connection_the_server_closed_is_not_used_again(pools):
    async def once(reader, writer):
        await read_request(reader)
        writer.write(OK)
        await writer.drain()

    async with Scripted(once) as server:
        pool = pools.get(server.url)
        await (await pool.request("GET", "/", {}, b"", timeout=5)).read()
        await asyncio.sleep(0.1)  # the server has closed it by now
        reply = await pool.request("GET", "/", {}, b"", timeout=5)  # the close was noticed: a fresh one
        assert await reply.read() == b"ok"
    assert server.connections == 2


async def test_a_close_before_the_answer_is_a_disconnect(pools):
    async def hang_up(reader, writer):
        await read_request(reader)

    async with Scripted(hang_up) as server:
        with pytest.raises(client.Disconnected):
            await pools.get(server.url).request("GET", "/", {}, b"", timeout=5)


async def test_a_refused_connect_is_connect_failed(pools):
    async with Scripted(answer_ok_forever) as server:
        url = server.url
    with pytest.raises(client.ConnectFailed, match="refused the connection"):
        await pools.get(url).request("GET", "/", {}, b"", timeout=5)


async def test_an_abandoned_answer_closes_the_connection(pools):
    closed = asyncio.Event()

    async def endless(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        try:
            while True:
                writer.write(b"4\r\ntick\r\n")
                await writer.drain()
                await asyncio.sleep(0.01)
        except ConnectionError:
            closed.set()

    async with Scripted(endless) as server:
        reply = await pools.get(server.url).request("GET", "/", {}, b"", timeout=5)
        assert await anext(reply.chunks()) == b"tick"
        reply.close()
        await asyncio.wait_for(closed.wait(), 5)


async def test_a_read_given_up_midway_closes_the_connection(pools):
    eof = asyncio.Event()

    async def half_then_wait(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf")
        await writer.drain()
        if await reader.read() == b"":  # the client closed its side
            eof.set()

    async with Scripted(half_then_wait) as server:
        reply = await pools.get(server.url).request("GET", "/", {}, b"", timeout=30)
        reading = asyncio.create_task(reply.read())
        await asyncio.sleep(0.05)
        reading.cancel()  # as when the gateway's own client goes away
        await asyncio.wait_for(eof.wait(), 2)  # at once, not when the read timeout fires


async def test_a_slow_reader_pauses_the_upstream_instead_of_buffering_it(pools):
    size = 8 * 1024 * 1024

    async def big(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size)
        for _ in range(size // 65536):
            writer.write(b"z" * 65536)
            await writer.drain()

    async with Scripted(big) as server:
        reply = await pools.get(server.url).request("GET", "/", {}, b"", timeout=5)
        received, most_buffered = 0, 0
        async for chunk in reply.chunks():
            received += len(chunk)
            most_buffered = max(most_buffered, reply._buffered)
            await asyncio.sleep(0.001)  # a client slower than loopback
    assert received == size
    assert most_buffered <= client.HIGH_WATER + 256 * 1024  # one read past the mark at most


async def test_receive_all_waits_for_the_whole_answer_and_leaves_it_to_read(pools):
    go_on = asyncio.Event()

    async def two_writes(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nfirst")
        await go_on.wait()
        writer.write(b"-half")

    async with Scripted(two_writes) as server:
        reply = await pools.get(server.url).request("GET", "/", {}, b"", timeout=5)
        assert reply.small(10) and not reply.small(9)
        waiting = asyncio.ensure_future(reply.receive_all())
        await asyncio.sleep(0.05)
        assert not waiting.done()  # half the body is still to come
        go_on.set()
        await asyncio.wait_for(waiting, 5)
        assert await reply.read() == b"first-half"
