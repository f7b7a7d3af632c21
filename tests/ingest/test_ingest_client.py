"""IngestClient against a target where no server listens."""

from __future__ import annotations

import asyncio
import socket

import grpc
import pytest

from asyncpipe.demo.service import BankClient

TIMEOUT = 5.0  # the client must give up well before its own 61 s of retries


def closed_port() -> int:
    """A port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_send_to_no_server_fails_fast_with_the_address() -> None:
    target = f"127.0.0.1:{closed_port()}"
    async with BankClient(target) as client:
        with pytest.raises(ConnectionRefusedError) as raised:
            async with asyncio.timeout(TIMEOUT):
                await client.send_transactions([])
    assert f"no server at {target} (connection refused)" in str(raised.value)


async def test_health_of_no_server_fails_fast() -> None:
    target = f"127.0.0.1:{closed_port()}"
    async with BankClient(target) as client:
        with pytest.raises(ConnectionRefusedError, match="no server at"):
            async with asyncio.timeout(TIMEOUT):
                await client.health()


async def test_wait_for_server_keeps_waiting_until_the_deadline() -> None:
    async with BankClient(
        f"127.0.0.1:{closed_port()}", wait_for_server=True, timeout=0.2, retries=0
    ) as client:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async with asyncio.timeout(TIMEOUT):
                await client.send_transactions([])
    assert raised.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
