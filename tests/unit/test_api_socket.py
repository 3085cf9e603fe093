"""The API's listening socket: its connections send a response's parts at once (no Nagle)."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from core.errors import SettingsError
from core.settings import Settings
from envlink.cli import _listen


def _settings(port: int = 0) -> Settings:
    """Where the API is to listen; port 0: any free one (beyond what the setting accepts)."""
    return Settings.model_construct(api_host="127.0.0.1", api_port=port)


async def test_connections_accepted_by_the_api_socket_have_nagle_off() -> None:
    """asyncio sets TCP_NODELAY only on connections of a socket made as IPPROTO_TCP."""
    listening = _listen(_settings())
    assert listening.proto == socket.IPPROTO_TCP
    accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = writer.get_extra_info("socket")
        accepted.set_result(connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    server = await asyncio.start_server(handle, sock=listening)
    async with server:
        _, writer = await asyncio.open_connection(*listening.getsockname()[:2])
        assert await asyncio.wait_for(accepted, 5) != 0
        writer.close()


async def test_a_response_in_two_writes_is_not_held_back_on_a_kept_connection() -> None:
    """Headers, then the body, on a kept-alive connection: the body is not held until the
    client's delayed acknowledgement (about 40 ms on Linux) of the headers."""
    listening = _listen(_settings())

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.readline():
            writer.write(b"H" * 200)  # the headers,
            await asyncio.sleep(0.001)  # sent on their own,
            writer.write(b"B" * 1000)  # then the body
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, sock=listening)
    async with server:
        reader, writer = await asyncio.open_connection(*listening.getsockname()[:2])
        rounds = []
        for _ in range(20):
            started = time.perf_counter()
            writer.write(b"ask\n")
            await reader.readexactly(1200)
            rounds.append(time.perf_counter() - started)
        writer.close()
    assert sorted(rounds)[10] < 0.02, rounds


def test_a_port_in_use_names_the_setting() -> None:
    taken = _listen(_settings())
    try:
        with pytest.raises(SettingsError, match="ENVLINK_API_PORT"):
            _listen(_settings(taken.getsockname()[1]))
    finally:
        taken.close()
