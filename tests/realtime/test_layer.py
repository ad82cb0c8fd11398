"""The channel layer below the hub, on real Redis: a publish's messages queued
in two round trips, and a process taking all that waits for it at once."""

import asyncio
import time
import uuid

from channels_redis.core import RedisChannelLayer
from django.conf import settings

from realtime.layer import RECEIVE_BATCH, group_send_all, node_channel, receive_many


def redis_layer(**config):
    """A layer of its own (its own prefix), so no test sees another's messages."""
    prefix = f"test{time.monotonic_ns()}"
    config = {"capacity": 1000, **config}
    return RedisChannelLayer(hosts=[settings.REDIS_URL], prefix=prefix, **config)


def run(coroutine_fn, **config):
    """Run a test's coroutine on a loop of its own, with a layer of its own
    (`config` for RedisChannelLayer); the layer's pools close after."""

    async def main():
        channel_layer = redis_layer(**config)
        try:
            return await coroutine_fn(channel_layer)
        finally:
            await channel_layer.close_pools()

    return asyncio.run(main())


def message(group, n):
    return {"type": "test.message", "stream": group, "n": n}


async def send_all(channel_layer, messages):
    """group_send_all as a publish makes it: a token of its own."""
    await group_send_all(channel_layer, messages, token=uuid.uuid4().hex)


def test_a_process_takes_every_waiting_message_in_order_a_batch_at_a_time():
    async def body(channel_layer):
        channel = node_channel()
        await channel_layer.group_add("g", channel)
        count = RECEIVE_BATCH + 20
        await send_all(channel_layer, [message("g", n) for n in range(count)])
        first = await receive_many(channel_layer, channel)
        second = await receive_many(channel_layer, channel)
        return first, second

    first, second = run(body)
    assert [m["n"] for m in first] == list(range(RECEIVE_BATCH))
    assert [m["n"] for m in second] == list(range(RECEIVE_BATCH, RECEIVE_BATCH + 20))
    assert first[0] == {"type": "test.message", "stream": "g", "n": 0}


def test_an_empty_channel_waits_for_the_next_message():
    async def body(channel_layer):
        channel_layer.brpop_timeout = 1
        channel = node_channel()
        await channel_layer.group_add("g", channel)
        idle = await receive_many(channel_layer, channel)
        waiting = asyncio.create_task(receive_many(channel_layer, channel))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        await send_all(channel_layer, [message("g", 7)])
        return idle, await asyncio.wait_for(waiting, 5)

    idle, arrived = run(body)
    assert idle == []  # the wait ran out: nothing, not an error
    assert [m["n"] for m in arrived] == [7]


def test_stock_receivers_get_the_same_messages_in_order():
    """Process-local (`!`) channels, as Channels consumers use, and plain ones,
    in several groups: each gets its groups' messages, in the order sent."""

    async def body(channel_layer):
        local = await channel_layer.new_channel()
        plain = node_channel()
        await channel_layer.group_add("a", local)
        await channel_layer.group_add("a", plain)
        await channel_layer.group_add("b", plain)
        sent = [message("a", 1), message("b", 2), message("a", 3)]
        await send_all(channel_layer, sent)
        got_local = [await channel_layer.receive(local) for _ in range(2)]
        got_plain = [await channel_layer.receive(plain) for _ in range(3)]
        return got_local, got_plain

    got_local, got_plain = run(body)
    assert [m["n"] for m in got_local] == [1, 3]
    assert [m["n"] for m in got_plain] == [1, 2, 3]
    assert "__asgi_channel__" not in got_local[0]


def test_a_full_channel_loses_its_copy_and_no_other():
    async def body(channel_layer):
        full, free = node_channel(), node_channel()
        for channel in (full, free):
            await channel_layer.group_add("g", channel)
        await channel_layer.send(full, {"type": "old", "n": 0})
        await channel_layer.send(full, {"type": "old", "n": 1})
        await send_all(channel_layer, [message("g", 2)])
        return (
            await receive_many(channel_layer, full),
            await receive_many(channel_layer, free),
        )

    full, free = run(body, capacity=2)
    assert [m["n"] for m in full] == [0, 1]  # what it had, nothing lost
    assert [m["n"] for m in free] == [2]


def test_an_expired_member_is_dropped_and_sent_nothing():
    """A membership a dead process left past group_expiry gets no copies."""

    async def body(channel_layer):
        live, dead = node_channel(), node_channel()
        await channel_layer.group_add("g", live)
        connection = channel_layer.connection(0)
        key = channel_layer._group_key("g")
        await connection.zadd(key, {dead: time.time() - channel_layer.group_expiry - 5})
        await send_all(channel_layer, [message("g", 1)])
        members = await connection.zrange(key, 0, -1)
        queued = await connection.exists(channel_layer.prefix + dead)
        got = await receive_many(channel_layer, live)
        return live, [m.decode() for m in members], queued, got

    live, members, queued, got = run(body)
    assert members == [live]
    assert not queued
    assert [m["n"] for m in got] == [1]


def test_a_send_tried_again_with_its_token_queues_nothing_more():
    """A publish sent once more after its connection failed (the first try may
    have reached Redis) reaches each channel once."""

    async def body(channel_layer):
        channel = node_channel()
        await channel_layer.group_add("g", channel)
        for _ in range(2):
            await group_send_all(channel_layer, [message("g", 1)], token="t1")
        await group_send_all(channel_layer, [message("g", 2)], token="t2")
        return await receive_many(channel_layer, channel)

    assert [m["n"] for m in run(body)] == [1, 2]
