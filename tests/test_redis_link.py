"""The link we read Redis connections through, against a peer that breaks the protocol.

Real servers cover the normal paths (every Redis test goes through ``link``); these check
that bytes no Redis would send end the link with a redis-py error the backend knows how to
report, and that no caller is left waiting or handed someone else's reply.
"""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, ResponseError

from dockrion_nb.backends.redis.link import CommandLink
from dockrion_nb.backends.redis.script import pack


async def peer(reply: bytes) -> asyncio.Server:
    """A loopback peer that answers the first command it reads with ``reply``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(reply)
        await writer.drain()
        await reader.read()  # until the link hangs up
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def open_link(server: asyncio.Server) -> CommandLink:
    port = server.sockets[0].getsockname()[1]
    link = CommandLink()
    await asyncio.get_running_loop().create_connection(lambda: link, "127.0.0.1", port)
    return link


async def test_a_reply_nobody_asked_for_ends_the_link() -> None:
    server = await peer(b"+PONG\r\n+EXTRA\r\n")
    try:
        link = await open_link(server)
        assert await link.call(pack("PING")) == b"PONG"  # the caller gets its own reply
        reason = await asyncio.wait_for(link.lost, 5)
        assert isinstance(reason, InvalidResponse) and not link.open
        with pytest.raises(RedisConnectionError):
            await link.call(pack("PING"))
    finally:
        server.close()


async def test_bytes_that_are_not_resp_fail_the_waiting_caller() -> None:
    server = await peer(b"\x00garbage\r\n")
    try:
        link = await open_link(server)
        with pytest.raises(InvalidResponse, match="unexpected data from the server"):
            await asyncio.wait_for(link.call(pack("PING")), 5)
        assert not link.open
    finally:
        server.close()


async def test_an_error_reply_raises_for_its_caller_only() -> None:
    server = await peer(b"-ERR nope\r\n")
    try:
        link = await open_link(server)
        with pytest.raises(ResponseError, match="nope"):
            await asyncio.wait_for(link.call(pack("PING")), 5)
        assert link.open  # an error reply is an answer, not a broken connection
        link.finish()
        assert await link.lost is None
    finally:
        server.close()
