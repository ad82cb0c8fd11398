"""Drives the official Python client (PyPI `realtime`) for the test suite.

Run it with the interpreter of tests/clients/.venv, from outside the repository
root (or with `python -P`): Herald's own Django app is also called `realtime`.

    python driver.py --url http://127.0.0.1:PORT --apikey KEY [--token JWT]

It speaks the same JSON lines as driver.mjs (see there for the commands and
events); `payload` is exactly what the library handed the callback.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import json
import logging
import sys
import traceback
from collections.abc import Callable
from typing import Any

from realtime import AsyncRealtimeChannel, AsyncRealtimeClient

# realtime/_async/client.py logs every frame it reads as `receive: {msg!r}`.
RECEIVED = "receive: "


def emit(event: dict[str, Any]) -> None:
    # default=str: the library hands over enums (e.g. data.type) and exceptions.
    sys.stdout.write(json.dumps(event, default=str) + "\n")
    sys.stdout.flush()


class LogToEvents(logging.Handler):
    """The library's log: each frame it received, and its warnings and errors
    (e.g. a frame its pydantic models refused and dropped)."""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith(RECEIVED):
            # The raw text frame, as read off the socket before any parsing.
            raw = ast.literal_eval(message.removeprefix(RECEIVED))
            emit({"event": "frame", "raw": raw})
        elif record.levelno >= logging.INFO:
            emit({"event": "log", "kind": record.levelname.lower(), "msg": message})


def guarded(callback: Callable[..., None]) -> Callable[..., None]:
    # An exception escaping a callback kills the client's receive loop silently
    # (docs/protocol.md §11); report it as an event instead.
    def run(*args: Any) -> None:
        try:
            callback(*args)
        except Exception as exc:
            emit({"event": "exception", "message": repr(exc)})

    return run


class Driver:
    def __init__(self, args: argparse.Namespace) -> None:
        self.client = AsyncRealtimeClient(f"{args.url}/realtime/v1", args.apikey)
        self.token: str | None = args.token
        self.channels: dict[str, AsyncRealtimeChannel] = {}

    def channel_for(
        self, topic: str, config: dict[str, Any] | None = None
    ) -> AsyncRealtimeChannel:
        if topic not in self.channels:
            channel = self.client.channel(topic, {"config": config} if config else None)
            channel.on_system(
                guarded(
                    lambda p: emit({"event": "system", "topic": topic, "payload": p})
                )
            )
            self.channels[topic] = channel
        return self.channels[topic]

    def joined(self, topic: str) -> AsyncRealtimeChannel:
        if topic not in self.channels:
            raise LookupError(f"no channel for topic {topic}")
        return self.channels[topic]

    async def subscribe(
        self,
        topic: str,
        config: dict[str, Any] | None = None,
        postgres_changes: list[dict[str, Any]] | None = None,
        **_: Any,
    ) -> None:
        channel = self.channel_for(topic, config)
        for index, binding in enumerate(postgres_changes or []):

            def on_change(payload: Any, index: int = index) -> None:
                emit(
                    {
                        "event": "postgres_changes",
                        "topic": topic,
                        "binding": index,
                        "payload": payload,
                    }
                )

            channel.on_postgres_changes(
                binding.get("event", "*"),
                guarded(on_change),
                table=binding.get("table"),
                schema=binding.get("schema"),
                filter=binding.get("filter"),
                select=binding.get("select"),
            )

        def on_status(status: Any, error: Exception | None) -> None:
            message = None if error is None else str(error)
            emit(
                {"event": "status", "topic": topic, "status": status, "error": message}
            )

        await channel.subscribe(guarded(on_status))

    async def on_broadcast(
        self, topic: str, event: str, config: dict[str, Any] | None = None, **_: Any
    ) -> None:
        self.channel_for(topic, config).on_broadcast(
            event,
            guarded(
                lambda p: emit({"event": "broadcast", "topic": topic, "payload": p})
            ),
        )

    async def on_presence(
        self, topic: str, event: str, config: dict[str, Any] | None = None, **_: Any
    ) -> None:
        channel = self.channel_for(topic, config)

        def report(*payload: Any) -> None:
            emit(
                {
                    "event": "presence",
                    "topic": topic,
                    "kind": event,
                    "payload": list(payload),
                    "state": channel.presence_state(),
                }
            )

        register = {
            "sync": channel.on_presence_sync,
            "join": channel.on_presence_join,
            "leave": channel.on_presence_leave,
        }[event]
        register(guarded(report))

    async def send(self, topic: str, event: str, payload: Any, **_: Any) -> None:
        await self.joined(topic).send_broadcast(event, payload)

    async def http_send(self, topic: str, event: str, payload: Any, **_: Any) -> None:
        await self.joined(topic).http_send(event, payload)

    async def track(self, topic: str, payload: dict[str, Any], **_: Any) -> None:
        await self.joined(topic).track(payload)

    async def untrack(self, topic: str, **_: Any) -> None:
        await self.joined(topic).untrack()

    async def set_auth(self, token: str, **_: Any) -> None:
        await self.client.set_auth(token)

    async def unsubscribe(self, topic: str, **_: Any) -> None:
        await self.joined(topic).unsubscribe()
        del self.channels[topic]

    async def close(self, **_: Any) -> None:
        await self.client.close()
        emit({"event": "closed"})

    async def handle(self, line: str) -> bool:
        """Run one command; False once the driver should stop."""
        name = ident = None
        try:
            command = json.loads(line)
            name, ident = command.pop("cmd", None), command.pop("id", None)
            if name not in COMMANDS:
                raise LookupError(f"unknown command {name}")
            result = await getattr(self, name)(**command)
            emit({"event": "done", "cmd": name, "id": ident, "result": result})
            return name != "close"
        except Exception as exc:
            emit(
                {
                    "event": "error",
                    "cmd": name,
                    "id": ident,
                    "message": repr(exc),
                    "stack": traceback.format_exc(),
                }
            )
            return True


COMMANDS = {
    "subscribe",
    "on_broadcast",
    "on_presence",
    "send",
    "http_send",
    "track",
    "untrack",
    "set_auth",
    "unsubscribe",
    "close",
}


async def stdin_lines() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**24)
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    return reader


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--apikey", required=True)
    parser.add_argument("--token")
    args = parser.parse_args()
    library_log = logging.getLogger("realtime")
    library_log.addHandler(LogToEvents())
    library_log.setLevel(logging.DEBUG)

    driver = Driver(args)
    if args.token:
        # Before any join: the join carries it as access_token, the URL keeps
        # the apikey (what supabase-py does after a sign-in).
        await driver.client.set_auth(args.token)
    reader = await stdin_lines()
    emit({"event": "ready", "client": "python", "vsn": "1.0.0"})
    while line := (await reader.readline()).decode():
        if line.strip() and not await driver.handle(line):
            return
    await driver.close()


if __name__ == "__main__":
    asyncio.run(main())
