"""Concurrent callers' Redis commands share pipelines (realtime/pipelined.py)."""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest
import redis.asyncio as redis
from redis.exceptions import ResponseError

from realtime.pipelined import Pipelined


def test_each_caller_gets_its_own_replies_and_only_its_own_error() -> None:
    prefix = f"herald:test:{uuid.uuid4().hex}"
    counter, text = f"{prefix}:n", f"{prefix}:text"

    async def run() -> list[object]:
        client = redis.Redis.from_url(os.environ["REDIS_URL"])
        await client.set(text, "x")
        pipelined = Pipelined(client)
        try:
            return await asyncio.gather(
                pipelined(lambda pipe: pipe.incr(counter).incr(counter)),
                # A hash command on a string: Redis refuses it, for this caller.
                pipelined(lambda pipe: pipe.hincrby(text, "f", 1)),
                pipelined(lambda pipe: pipe.get(text)),
                pipelined(lambda pipe: pipe.incr(counter)),
                return_exceptions=True,
            )
        finally:
            await client.delete(counter, text)
            await client.aclose()

    first, refused, read, last = asyncio.run(run())
    assert first == [1, 2]
    assert isinstance(refused, ResponseError)
    assert read == [b"x"]
    assert last == [3]


def test_a_redis_that_is_gone_fails_every_waiting_caller() -> None:
    from tests.services import free_port

    async def run() -> list[object]:
        nowhere = redis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")
        pipelined = Pipelined(nowhere)
        return await asyncio.gather(
            *(pipelined(lambda pipe: pipe.incr("n")) for _ in range(3)),
            return_exceptions=True,
        )

    outcomes = asyncio.run(run())
    assert len(outcomes) == 3
    for outcome in outcomes:
        assert isinstance(outcome, redis.ConnectionError), outcome


@pytest.mark.parametrize("calls", [1, 2500])
def test_every_call_is_answered_however_many_arrive_together(calls: int) -> None:
    key = f"herald:test:{uuid.uuid4().hex}"

    async def run() -> list[list[int]]:
        client = redis.Redis.from_url(os.environ["REDIS_URL"])
        pipelined = Pipelined(client)
        try:
            return await asyncio.gather(
                *(pipelined(lambda pipe: pipe.incr(key)) for _ in range(calls))
            )
        finally:
            await client.delete(key)
            await client.aclose()

    replies = asyncio.run(run())
    assert sorted(r[0] for r in replies) == list(range(1, calls + 1))
