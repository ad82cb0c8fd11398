"""The Python ceiling for `make bench-peers`: a minimal `websockets` broadcast server.

As lean as Python allows for the same workload: one asyncio process, no Django,
no policies, no filters, no per-socket state beyond a set membership. It speaks
the Phoenix subset the load generator needs (heartbeat reply, `phx_join` reply
with the postgres_changes ids, then pushes) and gets changes exactly as Herald
does: its process joins the (tenant, table) stream group on the Redis channel
layer (channels_redis, Herald's settings) and receives the very message
benchmarks/publisher.py sends with `realtime.layer.changes_send`: one message
per publish per process, carrying its changes. It takes them off its channel
as Herald does, all that are waiting at once (`realtime.layer.receive_many`),
and fans out the changes of all of them together. Per change it builds each
distinct frame once (byte-identical to Herald's: the `data` JSON is forwarded
as received), then:

- `--send prepared` (the default, the ceiling): serializes the WebSocket
  frames once with websockets' own `Frame.serialize` (a server's frames are
  unmasked, so the bytes are the same for every socket) and writes the
  message's frames, joined, to each open socket's transport: one
  `transport.write` (a `send()`) per socket per batch of messages, as Herald
  does, the least Python can do;
- `--send broadcast`: `websockets.broadcast`, the library's own fan-out, which
  encodes the text once but builds and serializes a frame per socket, per
  change.

    python -m benchmarks.ceiling --port 8100 --redis redis://... --group herald.t1.bench
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import signal
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from channels_redis.core import RedisChannelLayer
from redis.exceptions import TimeoutError as RedisTimeoutError
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import OPEN

from realtime.layer import node_channel, receive_many

CHANGES_TYPE = "stream.changes"  # realtime.layer.CHANGES_TYPE
ID_RANGE = 2**27 - 1

# (v2, topic, ids) -> the sockets joined with those bindings on that topic.
Room = tuple[bool, str, tuple[int, ...]]
rooms: dict[Room, set[ServerConnection]] = {}
PREPARED = True  # --send prepared


def binding_id(params: Mapping[str, Any]) -> int:
    """realtime.bindings.binding_id, without importing Django: same ids, same bytes."""
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.blake2b(canonical.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % ID_RANGE + 1


def encode(
    v2: bool, join_ref: Any, ref: Any, topic: str, event: str, payload: Any
) -> str:
    if v2:
        return orjson.dumps([join_ref, ref, topic, event, payload]).decode()
    frame = {"topic": topic, "event": event, "payload": payload, "ref": ref}
    return orjson.dumps(frame).decode()


async def handler(conn: ServerConnection) -> None:
    assert conn.request is not None
    query = parse_qs(urlsplit(conn.request.path).query)
    v2 = query.get("vsn", ["1.0.0"])[0].startswith("2.")
    joined: set[Room] = set()
    try:
        async for text in conn:
            msg = orjson.loads(text)
            if v2:
                join_ref, ref, topic, event, payload = msg
            else:
                join_ref, ref = msg.get("join_ref"), msg.get("ref")
                topic, event, payload = msg["topic"], msg["event"], msg["payload"]
            if event == "heartbeat":
                ok = {"status": "ok", "response": {}}
                await conn.send(encode(v2, None, ref, topic, "phx_reply", ok))
            elif event == "phx_join":
                config = (payload or {}).get("config") or {}
                entries = [
                    {**b, "id": binding_id(b)}
                    for b in config.get("postgres_changes") or []
                ]
                room = (v2, topic, tuple(e["id"] for e in entries))
                rooms.setdefault(room, set()).add(conn)
                joined.add(room)
                ok = {"status": "ok", "response": {"postgres_changes": entries}}
                await conn.send(encode(v2, join_ref, ref, topic, "phx_reply", ok))
            elif event == "phx_leave":
                for room in [r for r in joined if r[1] == topic]:
                    rooms[room].discard(conn)
                    joined.discard(room)
                ok = {"status": "ok", "response": {}}
                await conn.send(encode(v2, join_ref, ref, topic, "phx_reply", ok))
    except ConnectionClosed:
        pass
    finally:
        for room in joined:
            rooms[room].discard(conn)


def fan_out(changes: list[bytes]) -> None:
    """One frame per room and change, built once, written to its sockets."""
    for (v2, topic, ids), conns in rooms.items():
        if not conns:
            continue
        frames = []
        topic_json, ids_json = orjson.dumps(topic), orjson.dumps(ids)
        for data in changes:
            payload = b'{"ids":' + ids_json + b',"data":' + data + b"}"
            if v2:
                frame = b"[null,null," + topic_json + b',"postgres_changes",'
                frame += payload + b"]"
            else:
                frame = b'{"topic":' + topic_json + b',"event":"postgres_changes"'
                frame += b',"payload":' + payload + b',"ref":null}'
            frames.append(frame)
        if PREPARED:
            wire = b"".join(
                Frame(Opcode.TEXT, frame).serialize(mask=False) for frame in frames
            )
            for conn in conns:
                if conn.protocol.state is OPEN:
                    conn.transport.write(wire)
        else:
            for frame in frames:
                broadcast(conns, frame, text=True)


async def pump(layer: RedisChannelLayer, channel: str) -> None:
    while True:
        try:
            messages = await receive_many(layer, channel)
        except RedisTimeoutError:
            continue  # an idle wait ran out (as in realtime.hub)
        changes = [
            data
            for message in messages
            if message.get("type") == CHANGES_TYPE
            for data in message["data"]
        ]
        if changes:
            fan_out(changes)


def health(conn: ServerConnection, request: Request) -> Response | None:
    if request.path == "/healthz":
        return conn.respond(HTTPStatus.OK, "ok\n")
    return None


async def main(port: int, redis_url: str, group: str) -> None:
    # Herald's channel layer settings (config/settings.py), the same Redis.
    address = {"address": redis_url, "socket_timeout": 15, "socket_connect_timeout": 5}
    layer = RedisChannelLayer(hosts=[address], capacity=5000, expiry=60)
    channel = node_channel()
    await layer.group_add(group, channel)
    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)
    async with serve(
        handler,
        "127.0.0.1",
        port,
        process_request=health,
        compression=None,
        ping_interval=None,  # the clients heartbeat, as with Herald
        max_queue=None,
    ):
        task = asyncio.create_task(pump(layer, channel))
        await stop
        task.cancel()
    await layer.group_discard(group, channel)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", required=True, help="the channel layer's Redis URL")
    parser.add_argument("--group", required=True, help="the stream group to join")
    parser.add_argument("--send", default="prepared", choices=["prepared", "broadcast"])
    args = parser.parse_args()
    PREPARED = args.send == "prepared"
    asyncio.run(main(args.port, args.redis, args.group))
