"""Hostile frames against a live server: nobody else may notice.

A seeded fuzzer sends generated Phoenix frames (vsn 1.0.0 and 2.0.0, text and
binary) from several sockets opened with a tenant's publishable key, some also
holding a tenant-signed user token. After every frame the sending socket asks
for a heartbeat, so the frame is known to be handled (or to have killed the
socket) before the next one; any traceback the server logs meanwhile is laid
at that frame's door. Every so often, and at the end, bystander sockets of the
same tenant and of another one must still receive a published change and a
broadcast promptly; at the end, with the hostile sockets closed, the tenant's
connection count and its active subscription rows must be the bystander's only,
`/healthz` must answer and the log must hold no traceback.

HERALD_FUZZ_SEED picks the seed (printed), HERALD_FUZZ_FRAMES the number of
frames. The focused tests at the end send one frame of each kind the fuzzer
found to crash a consumer.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import sqlite3
import string
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from realtime.auth import token_mint
from tests.server import Server, embedded_env, manage
from tests.wire import Socket

pytestmark = pytest.mark.django_db(transaction=True)

FRAMES = int(os.environ.get("HERALD_FUZZ_FRAMES", "900"))
MAX_FRAME = 1_000_000
CHECK_EVERY = 400
WATCH_TOPIC = "realtime:watch"
WATCH_TABLE = "fuzz_watch"
PROMPTLY = 5.0
SLOW = 10.0
SETTLE = 15.0
# Closes a server may choose on purpose (normal, policy, too big, app codes).
DELIBERATE_CLOSES = {1000, 1008, 1009} | set(range(4000, 5000))


# --- The server under test --------------------------------------------------------


@dataclass
class Tenant:
    id: int
    slug: str
    publishable_key: str
    secret_key: str
    jwt_secret: str

    def token(self, *, role: str = "authenticated", ttl: int = 3600, **kw: Any) -> str:
        shape = SimpleNamespace(slug=self.slug, jwt_secret=self.jwt_secret)
        return token_mint(tenant=shape, role=role, ttl=ttl, **kw)  # type: ignore[arg-type]


@dataclass
class Target:
    """A live server and how to read its figures from outside."""

    server: Server
    connections: Callable[[Tenant], dict[str, int]]
    active_topics: Callable[[Tenant], list[str]]

    @property
    def url(self) -> str:
        return self.server.url


def metrics_connections(server: Server, tenant: Tenant) -> int:
    """`herald_connections{tenant=…}` from the server's /metrics (loopback)."""
    text = httpx.get(f"{server.url}/metrics", timeout=5).text
    pattern = rf'^herald_connections\{{tenant="{re.escape(tenant.slug)}"\}} (\S+)$'
    found = re.search(pattern, text, re.M)
    return int(float(found.group(1))) if found else 0


def raise_limits(tenant_id: int) -> None:
    """Rates high enough that the fuzz reaches the handlers, not the limiter."""
    from realtime.models import Tenant as TenantRow

    TenantRow.objects.filter(pk=tenant_id).update(
        max_events_per_second=100_000,
        max_joins_per_second=100_000,
        max_presence_events_per_second=100_000,
    )


def fresh_name(name: str) -> str:
    """Tenants of earlier tests are gone, but their slugs label /metrics still."""
    return f"{name} {random.randrange(10**9)}"


@pytest.fixture
def pg_target(herald_server: Server, make_tenant: Any) -> Iterator[Any]:
    yield from pg_target_on(herald_server, make_tenant)


@pytest.fixture
def fresh_server(server_env: dict[str, str], tmp_path: Path) -> Iterator[Server]:
    """A server of this test's own, so its log holds this test's frames only."""
    server = Server(server_env, log=tmp_path / "server.log")
    yield server
    server.stop()


@pytest.fixture
def fresh_target(fresh_server: Server, make_tenant: Any) -> Iterator[Any]:
    yield from pg_target_on(fresh_server, make_tenant)


def pg_target_on(herald_server: Server, make_tenant: Any) -> Iterator[Any]:
    from realtime.limits import connections_now
    from subscriptions.models import Subscription

    def tenant(name: str) -> Tenant:
        creds = make_tenant(fresh_name(name))
        raise_limits(creds.tenant.pk)
        return Tenant(
            creds.tenant.pk,
            creds.tenant.slug,
            creds.publishable_key,
            creds.secret_key,
            creds.tenant.jwt_secret,
        )

    def connections(t: Tenant) -> dict[str, int]:
        return {
            "metrics": metrics_connections(herald_server, t),
            "redis": connections_now([t.id])[t.id],
        }

    def active_topics(t: Tenant) -> list[str]:
        rows = Subscription.objects.filter(tenant_id=t.id, state="active")
        return sorted(rows.values_list("topic", flat=True))

    yield Target(herald_server, connections, active_topics), tenant


@pytest.fixture
def embedded_target(tmp_path: Path) -> Iterator[Any]:
    env = embedded_env(tmp_path)
    manage(env, "migrate", "--noinput")
    server = Server(env, log=tmp_path / "server.log")
    db = tmp_path / "herald.sqlite3"

    def query(sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with sqlite3.connect(db, timeout=30) as conn:
            return conn.execute(sql, args).fetchall()

    def tenant(name: str) -> Tenant:
        creds = json.loads(manage(env, "create_tenant", fresh_name(name), "--json"))
        [(pk,)] = query(
            "SELECT id FROM realtime_tenant WHERE slug = ?", creds["tenant"]
        )
        query(
            "UPDATE realtime_tenant SET max_events_per_second = 100000,"
            " max_joins_per_second = 100000, max_presence_events_per_second = 100000"
            " WHERE id = ?",
            pk,
        )
        return Tenant(
            pk,
            creds["tenant"],
            creds["publishable_key"],
            creds["secret_key"],
            creds["jwt_secret"],
        )

    def connections(t: Tenant) -> dict[str, int]:
        return {"metrics": metrics_connections(server, t)}

    def active_topics(t: Tenant) -> list[str]:
        rows = query(
            "SELECT topic FROM subscriptions_subscription"
            " WHERE tenant_id = ? AND state = 'active'",
            t.id,
        )
        return sorted(r[0] for r in rows)

    yield Target(server, connections, active_topics), tenant
    server.stop()


# --- Bystanders -------------------------------------------------------------------


class Bystander:
    """A well-behaved socket joined to a change binding and a broadcast topic."""

    def __init__(self, target: Target, tenant: Tenant) -> None:
        self.target, self.tenant = target, tenant
        self.socket = Socket(target.server.ws_url, tenant.publishable_key)
        binding = {"event": "*", "schema": "public", "table": WATCH_TABLE}
        # No row policy names the table: only the service role sees its rows.
        token = tenant.token(role="service_role", ttl=24 * 3600)
        reply = self.socket.join("watch", bindings=[binding], token=token)
        assert reply["payload"]["status"] == "ok", reply["raw"]
        self.n = 0

    def problems(self) -> list[str]:
        """Empty when a change and a broadcast both arrive promptly."""
        self.n += 1
        found = []
        headers = {"apikey": self.tenant.secret_key}
        try:
            response = httpx.post(
                f"{self.target.url}/api/changes",
                headers=headers,
                json={"table": WATCH_TABLE, "type": "INSERT", "record": {"id": self.n}},
                timeout=PROMPTLY,
            )
            if response.status_code != 201:
                found.append(f"POST /api/changes: {response.status_code}")
            else:
                self.socket.recv_until(
                    lambda f: (
                        f["event"] == "postgres_changes"
                        and f["payload"]["data"]["record"] == {"id": self.n}
                    ),
                    PROMPTLY,
                )
        except (TimeoutError, ConnectionClosed, httpx.HTTPError) as exc:
            found.append(f"change not received within {PROMPTLY}s ({exc!r})")
        try:
            response = httpx.post(
                f"{self.target.url}/realtime/v1/api/broadcast",
                headers=headers,
                json={
                    "messages": [
                        {"topic": "watch", "event": "ping", "payload": {"n": self.n}}
                    ]
                },
                timeout=PROMPTLY,
            )
            if response.status_code != 202:
                found.append(f"POST broadcast: {response.status_code}")
            else:
                self.socket.recv_until(
                    lambda f: (
                        f["event"] == "broadcast"
                        and f["payload"].get("payload") == {"n": self.n}
                    ),
                    PROMPTLY,
                )
        except (TimeoutError, ConnectionClosed, httpx.HTTPError) as exc:
            found.append(f"broadcast not received within {PROMPTLY}s ({exc!r})")
        return [f"bystander of {self.tenant.slug}: {p}" for p in found]


# --- Generators -------------------------------------------------------------------


# What the frame being generated holds that is odd; part of its label.
FEATURES: set[str] = set()


class Deep:
    """A sentinel standing for nesting `depth` levels deep in the encoded frame."""

    registry: dict[str, str] = {}

    def __init__(self, depth: int, rng: random.Random) -> None:
        flavour = rng.choice(["list", "dict", "mixed"])
        if flavour == "list":
            text = "[" * depth + "1" + "]" * depth
        elif flavour == "dict":
            text = '{"a":' * depth + "1" + "}" * depth
        else:
            opens = [rng.choice(("[", '{"k":')) for _ in range(depth)]
            closes = ["]" if o == "[" else "}" for o in reversed(opens)]
            text = "".join(opens) + "null" + "".join(closes)
        self.key = f"@@deep{len(Deep.registry)}@@"
        Deep.registry[self.key] = text


def encode_json(value: Any, rng: random.Random) -> str:
    deep: list[str] = []

    def default(obj: Any) -> Any:
        if isinstance(obj, Deep):
            deep.append(obj.key)
            return obj.key
        raise TypeError(type(obj))

    ascii_only = rng.random() < 0.5
    try:
        text = json.dumps(value, ensure_ascii=ascii_only, default=default)
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: only \u escapes can carry it
        text = json.dumps(value, ensure_ascii=True, default=default)
    if deep:
        FEATURES.add("deep")
    for key in dict.fromkeys(deep):
        text = text.replace(f'"{key}"', Deep.registry.pop(key))
    return text


CONTROL = "".join(map(chr, range(32))) + "\x7f\u2028\u2029\ufeff\u202e"
ODD_FIXED = [
    "a b",
    " ",
    "",
    "*",
    "таблица",
    "表格",
    "naïve",
    "😀",
    "a\x00b",
    "\x00",
    "tab\tle",
    "new\nline",
    "x\ud800y",
    "'; drop table x; --",
    '"quoted"',
    "../../etc",
    "%00",
    "a.b",
    "public.orders",
    "UPPER",
    "x" * 63,
    "x" * 64,
    "y" * 90,
    "z" * 256,
]


def odd_name(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.35:
        return rng.choice(ODD_FIXED)
    if roll < 0.55:
        return "".join(rng.choice(CONTROL + "ab") for _ in range(rng.randint(1, 40)))
    if roll < 0.75:
        alphabet = "aé表😀 \x00-_.ÿ"
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(100, 5000)))
    if roll < 0.9:
        return rng.choice(string.ascii_lowercase) * rng.randint(60, 300)
    return "t_" + "".join(rng.choices(string.ascii_lowercase, k=rng.randint(1, 12)))


def huge_number(rng: random.Random) -> str:
    return "1" + "0" * rng.choice([20, 400, 4300, 4301, 5000])


def weird_value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.randrange(14)
    if roll == 0:
        return None
    if roll == 1:
        return rng.choice([True, False])
    if roll == 2:
        return rng.choice([0, -1, 2**31, 2**63 - 1, -(2**63), 1.5, 1e308, -0.0])
    if roll == 3:
        return odd_name(rng)
    if roll == 4:
        return "s" * rng.choice([0, 1, 1000, 100_000])
    if roll == 5 and depth < 3:
        return [weird_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if roll == 6 and depth < 3:
        return {odd_name(rng): weird_value(rng, depth + 1) for _ in range(3)}
    if roll == 7:
        return Deep(rng.randint(200, 1000), rng)
    if roll == 8:
        return rng.choice(["true", "TRUE", "false", "yes", "1", ""])
    return rng.choice(["x", "phoenix", "realtime:fz0", 7, [], {}])


def odd_filter(rng: random.Random) -> Any:
    column = rng.choice(["id", "site_id", "status", odd_name(rng)])
    op = rng.choice(
        [
            *("eq", "neq", "lt", "lte", "gt", "gte", "in", "like", "ilike", "is"),
            *("cs", "", "??", "eq.eq", "IN", "not.eq", "match", "\x00", "é"),
        ]
    )
    roll = rng.randrange(9)
    FEATURES.add("odd_filter")
    if roll == 0:
        FEATURES.add("huge_number")
        value = huge_number(rng)
    elif roll == 1:
        FEATURES.add("long_in_list")
        values = ",".join(str(i) for i in range(rng.choice([3, 100, 5000, 50_000])))
        op, value = "in", f"({values})"
    elif roll == 2:
        value = rng.choice(["(", ")", "(1,2", "((1))", "(,)", '("a,b")', "()"])
    elif roll == 3:
        value = rng.choice(["NaN", "Infinity", "-1e999", "1e999", "null", "true"])
    elif roll == 4:
        FEATURES.add("huge_number")
        value = "-" + huge_number(rng)
    elif roll == 5:
        value = odd_name(rng)
    else:
        value = str(rng.randint(-5, 5))
    text = f"{column}={op}.{value}"
    roll = rng.random()
    if roll < 0.05:
        return weird_value(rng)
    if roll < 0.1:
        return text + "&" + text
    if roll < 0.15:
        return rng.choice(["", "=", "id", "id=", "=eq.1", "id=eq", "id=.1"])
    return text


def odd_binding(rng: random.Random, table: str | None = None) -> Any:
    if rng.random() < 0.05:
        return weird_value(rng)
    binding: dict[str, Any] = {}
    if rng.random() < 0.9:
        binding["event"] = rng.choice(
            ["*", "INSERT", "update", "DELETE", "nope", 3, None, odd_name(rng)]
        )
    if rng.random() < 0.8:
        binding["schema"] = rng.choice(["public", "*", "other", odd_name(rng), 1])
    if rng.random() < 0.9:
        binding["table"] = table if table is not None else odd_table(rng)
    if rng.random() < 0.5:
        binding["filter"] = odd_filter(rng)
    if rng.random() < 0.1:
        binding[odd_name(rng)] = weird_value(rng)
    if rng.random() < 0.05:
        binding["extra"] = Deep(rng.randint(200, 1000), rng)
    return binding


def odd_table(rng: random.Random) -> Any:
    roll = rng.random()
    if roll < 0.5:
        FEATURES.add("odd_table")
        return odd_name(rng)
    if roll < 0.6:
        FEATURES.add("odd_table")
        return weird_value(rng)
    return rng.choice(["orders", "fz_t", WATCH_TABLE + "_not", "*"])


@dataclass
class Hostile:
    """A hostile socket and what it has joined."""

    name: str
    vsn: str
    token: str | None
    socket: Socket
    joined: set[str] = field(default_factory=set)
    pending: dict[str, str] = field(default_factory=dict)
    refs: int = 0

    def next_ref(self) -> str:
        self.refs += 1
        return str(self.refs)


@dataclass
class Frame:
    kind: str
    data: str | bytes


class Fuzzer:
    def __init__(self, rng: random.Random, tenant: Tenant) -> None:
        self.rng, self.tenant = rng, tenant
        self.kinds: list[tuple[str, Callable[[Hostile], Frame], int]] = [
            ("invalid_json", self.invalid_json, 4),
            ("binary_junk", self.binary_junk, 3),
            ("wrong_shape", self.wrong_shape, 4),
            ("wrong_types", self.wrong_types, 6),
            ("join", self.join, 22),
            ("join_many_bindings", self.join_many_bindings, 1),
            ("broadcast", self.broadcast, 14),
            ("broadcast_binary", self.broadcast_binary, 8),
            ("presence", self.presence, 12),
            ("access_token", self.access_token, 6),
            ("heartbeat", self.heartbeat, 4),
            ("phx_leave", self.leave, 6),
            ("unknown_event", self.unknown_event, 4),
        ]
        self.weights = [w for _, _, w in self.kinds]
        self.many_bindings_left = 3

    def frame(self, h: Hostile) -> Frame:
        for _ in range(20):
            FEATURES.clear()
            _, make, _ = self.rng.choices(self.kinds, self.weights)[0]
            frame = make(h)
            data = frame.data
            raw = data if isinstance(data, bytes) else data.encode("utf-8")
            if len(raw) < MAX_FRAME:
                extra = sorted(f for f in FEATURES if f not in frame.kind)
                frame.kind = "+".join([frame.kind, *extra])
                return frame
        return Frame("heartbeat", self.encode(h, None, "1", "phoenix", "heartbeat", {}))

    # --- helpers

    def encode(
        self, h: Hostile, join_ref: Any, ref: Any, topic: Any, event: Any, payload: Any
    ) -> str:
        if h.vsn == "2.0.0":
            return encode_json([join_ref, ref, topic, event, payload], self.rng)
        obj = {
            "topic": topic,
            "event": event,
            "payload": payload,
            "ref": ref,
            "join_ref": join_ref,
        }
        if self.rng.random() < 0.05:
            obj.pop(self.rng.choice(list(obj)))
        return encode_json(obj, self.rng)

    def topic(self, h: Hostile) -> str:
        roll = self.rng.random()
        if h.joined and roll < 0.7:
            return self.rng.choice(sorted(h.joined))
        if roll < 0.85:
            return f"realtime:fz{self.rng.randrange(5)}"
        FEATURES.add("odd_topic")
        if roll < 0.95:
            return "realtime:" + odd_name(self.rng)
        return self.rng.choice(["realtime:", "phoenix", "fz0", odd_name(self.rng)])

    def token(self) -> Any:
        rng, t = self.rng, self.tenant
        roll = rng.randrange(10)
        FEATURES.add("odd_token")
        if roll == 0:
            return t.token()
        if roll == 1:
            return t.token(ttl=-10)
        if roll == 2:
            return t.token(role="service_role", claims={odd_name(rng): odd_name(rng)})
        if roll == 3:  # forged: signed with another secret
            forged = Tenant(t.id, t.slug, "", "", "not-the-secret-" * 3)
            return forged.token(role="service_role")
        if roll == 4:
            return "eyJ" + "A" * rng.choice([10, 10_000, 500_000])
        if roll == 5:
            return "a.b.c"
        if roll == 6:
            return t.publishable_key
        if roll == 7:
            return t.token(sub=odd_name(rng))
        return weird_value(rng)

    # --- kinds

    def invalid_json(self, h: Hostile) -> Frame:
        rng = self.rng
        text = rng.choice(
            [
                "",
                "{",
                "[",
                "null",
                "NaN",
                "[1,2,",
                '{"topic":',
                "\x00",
                "[" * 2000,
                "{" * 1100 + "}" * 1100,
                "[" * 1100 + "]" * 1100,
                '"' + "a" * 1000,
                "".join(
                    rng.choice(string.printable) for _ in range(rng.randint(1, 300))
                ),
                '["1","1","phoenix","heartbeat",{}]x',
                '{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"1"}}',
                '{"a":1,"a":2}',
                "1" + "0" * 5000,
            ]
        )
        return Frame("invalid_json", text)

    def binary_junk(self, h: Hostile) -> Frame:
        rng = self.rng
        roll = rng.random()
        if roll < 0.4:
            data = rng.randbytes(rng.randint(0, 2000))
        else:  # kind 3 with lengths that lie
            sizes = bytes(rng.randrange(256) for _ in range(5))
            encoding = rng.choice([0, 1, 2, 255])
            data = (
                bytes([3])
                + sizes
                + bytes([encoding])
                + rng.randbytes(rng.randint(0, 600))
            )
        return Frame("binary_junk", data)

    def wrong_shape(self, h: Hostile) -> Frame:
        rng = self.rng
        if h.vsn == "2.0.0":
            value = rng.choice(
                [
                    {"topic": "phoenix", "event": "heartbeat", "payload": {}, "ref": 1},
                    [],
                    [None, "1", "phoenix", "heartbeat"],
                    [None, "1", "phoenix", "heartbeat", {}, "extra"],
                    "string",
                    7,
                    [weird_value(rng) for _ in range(5)],
                ]
            )
        else:
            value = rng.choice(
                [
                    [None, "1", "phoenix", "heartbeat", {}],
                    {},
                    {"topic": "phoenix"},
                    {"topic": "phoenix", "event": "heartbeat", "payload": {}},
                    "string",
                    7,
                    {odd_name(rng): weird_value(rng) for _ in range(5)},
                ]
            )
        return Frame("wrong_shape", encode_json(value, rng))

    def wrong_types(self, h: Hostile) -> Frame:
        rng = self.rng
        fields = [
            weird_value(rng) if rng.random() < 0.5 else good
            for good in (h.next_ref(), h.next_ref(), self.topic(h), "phx_join", {})
        ]
        return Frame("wrong_types", self.encode(h, *fields))

    def join_payload(self, h: Hostile) -> tuple[str, dict[str, Any]]:
        rng = self.rng
        label = "join"
        config: dict[str, Any] = {}
        if rng.random() < 0.8:
            config["private"] = rng.choice([False, True, "true", "TRUE", 1, None])
        if rng.random() < 0.6:
            config["broadcast"] = rng.choice(
                [
                    {
                        "self": rng.choice([True, False, "true"]),
                        "ack": rng.choice([True, False, "yes"]),
                    },
                    weird_value(rng),
                    {"self": weird_value(rng), "ack": weird_value(rng)},
                ]
            )
        if rng.random() < 0.6:
            config["presence"] = rng.choice(
                [
                    {
                        "key": odd_name(rng),
                        "enabled": rng.choice([True, False, "true"]),
                    },
                    {"key": weird_value(rng), "enabled": weird_value(rng)},
                    weird_value(rng),
                ]
            )
            if isinstance(config["presence"], dict) and isinstance(
                config["presence"].get("key"), str
            ):
                label = "join:odd_presence_key"
        roll = rng.random()
        if roll < 0.6:
            count = rng.choice([0, 1, 1, 2, 3, 5, 20])
            bindings = [odd_binding(rng) for _ in range(count)]
            config["postgres_changes"] = bindings
            if bindings:
                label = "join:odd_bindings"
        elif roll < 0.7:
            config["postgres_changes"] = weird_value(rng)
        elif roll < 0.8:
            config["postgres_changes"] = [
                {
                    "event": "*",
                    "schema": "public",
                    "table": "fz_t",
                    "filter": odd_filter(rng),
                }
            ]
            label = "join:odd_filter"
        if rng.random() < 0.05:
            config["extra"] = Deep(rng.randint(200, 1000), rng)
            label = "join:deep_config"
        payload: dict[str, Any] = {"config": config}
        if h.token is not None and rng.random() < 0.7:
            payload["access_token"] = h.token
        elif rng.random() < 0.3:
            payload[rng.choice(["access_token", "user_token"])] = self.token()
            label = "join:odd_token"
        if rng.random() < 0.05:
            payload = rng.choice([weird_value(rng), {"config": weird_value(rng)}])
            label = "join:odd_payload"
        return label, payload

    def join(self, h: Hostile) -> Frame:
        rng = self.rng
        roll = rng.random()
        if roll < 0.55:
            topic = f"realtime:fz{rng.randrange(5)}"
        elif roll < 0.9:
            topic = "realtime:" + odd_name(rng)
        else:
            topic = self.topic(h)
        label, payload = self.join_payload(h)
        if topic.startswith("realtime:") and topic[9:] not in {
            f"fz{i}" for i in range(5)
        }:
            FEATURES.add("odd_topic")
        ref = h.next_ref()
        join_ref = ref if rng.random() < 0.9 else weird_value(rng)
        h.pending[ref] = topic
        return Frame(label, self.encode(h, join_ref, ref, topic, "phx_join", payload))

    def join_many_bindings(self, h: Hostile) -> Frame:
        rng = self.rng
        # Each costs seconds today (see the focused test of 4000): a few a run.
        self.many_bindings_left -= 1
        if self.many_bindings_left < 0:
            return self.join(h)
        count = rng.choice([0, 100, 300, 1000])
        bindings = [
            {"event": "*", "schema": "public", "table": f"t{i}_{rng.randrange(10**6)}"}
            for i in range(count)
        ]
        topic = f"realtime:fz{rng.randrange(5)}"
        ref = h.next_ref()
        h.pending[ref] = topic
        payload: dict[str, Any] = {"config": {"postgres_changes": bindings}}
        if h.token is not None:
            payload["access_token"] = h.token
        return Frame(
            f"join:{count}_bindings",
            self.encode(h, ref, ref, topic, "phx_join", payload),
        )

    def broadcast_payload(self) -> tuple[str, Any]:
        rng = self.rng
        roll = rng.random()
        if roll < 0.2:
            return "broadcast:deep", {
                "type": "broadcast",
                "event": "e",
                "payload": Deep(rng.randint(200, 1000), rng),
            }
        if roll < 0.3:
            return "broadcast:big", {
                "type": "broadcast",
                "event": "e",
                "payload": {"s": "x" * rng.choice([1000, 500_000, 900_000])},
            }
        if roll < 0.5:
            return "broadcast:odd_event", {
                "type": "broadcast",
                "event": odd_name(rng),
                "payload": {odd_name(rng): weird_value(rng)},
            }
        if roll < 0.7:
            return "broadcast:wrong_types", rng.choice(
                [
                    weird_value(rng),
                    {"event": weird_value(rng), "payload": weird_value(rng)},
                ]
            )
        return "broadcast", {"type": "broadcast", "event": "e", "payload": {"n": 1}}

    def broadcast(self, h: Hostile) -> Frame:
        label, payload = self.broadcast_payload()
        topic = self.topic(h)
        return Frame(
            label,
            self.encode(h, h.next_ref(), h.next_ref(), topic, "broadcast", payload),
        )

    def broadcast_binary(self, h: Hostile) -> Frame:
        rng = self.rng
        if h.vsn != "2.0.0":
            return self.broadcast(h)
        label = "broadcast_binary"
        topic = self.topic(h).encode("utf-8", "replace")[:255]
        event = (odd_name(rng) if rng.random() < 0.3 else "e").encode(
            "utf-8", "replace"
        )[:255]
        meta = b""
        if rng.random() < 0.2:
            meta = rng.choice([b"{}", b"[]", b"1", b'{"a":1}', b"{" * 100, b"\xff"])
            label = "broadcast_binary:meta"
        encoding = rng.choice([0, 1])
        if encoding == 1:
            roll = rng.random()
            if roll < 0.3:
                body = Deep.registry.pop(Deep(rng.randint(200, 1000), rng).key).encode()
                label = "broadcast_binary:deep"
            elif roll < 0.4:
                body = b"not json"
            else:
                body = b'{"n":1}'
        else:
            body = rng.randbytes(rng.choice([0, 10, 1000, 300_000]))
        join_ref, ref = h.next_ref().encode(), h.next_ref().encode()
        if rng.random() < 0.1:
            join_ref, ref = b"\xff\xfe", b""
        header = bytes(
            [3, len(join_ref), len(ref), len(topic), len(event), len(meta), encoding]
        )
        return Frame(label, header + join_ref + ref + topic + event + meta + body)

    def presence(self, h: Hostile) -> Frame:
        rng = self.rng
        roll = rng.random()
        if roll < 0.25:
            label, payload = (
                "presence:deep",
                {
                    "type": "presence",
                    "event": "track",
                    "payload": {"meta": Deep(rng.randint(200, 1000), rng)},
                },
            )
        elif roll < 0.45:
            label, payload = (
                "presence:odd_meta",
                {
                    "type": "presence",
                    "event": "track",
                    "payload": {odd_name(rng): weird_value(rng) for _ in range(3)},
                },
            )
        elif roll < 0.6:
            label, payload = (
                "presence:untrack",
                {"type": "presence", "event": "untrack"},
            )
        elif roll < 0.75:
            label, payload = (
                "presence:wrong_types",
                rng.choice(
                    [
                        weird_value(rng),
                        {"event": weird_value(rng), "payload": weird_value(rng)},
                    ]
                ),
            )
        else:
            label, payload = (
                "presence:track",
                {
                    "type": "presence",
                    "event": rng.choice(["track", "TRACK"]),
                    "payload": {"user": rng.randrange(100)},
                },
            )
        topic = self.topic(h)
        return Frame(
            label,
            self.encode(h, h.next_ref(), h.next_ref(), topic, "presence", payload),
        )

    def access_token(self, h: Hostile) -> Frame:
        rng = self.rng
        payload = rng.choice(
            [{"access_token": self.token()}, weird_value(rng), {"access_token": None}]
        )
        return Frame(
            "access_token",
            self.encode(
                h, h.next_ref(), h.next_ref(), self.topic(h), "access_token", payload
            ),
        )

    def heartbeat(self, h: Hostile) -> Frame:
        rng = self.rng
        topic = rng.choice(["phoenix", "phoenix", self.topic(h)])
        payload = rng.choice([{}, weird_value(rng)])
        return Frame(
            "heartbeat", self.encode(h, None, h.next_ref(), topic, "heartbeat", payload)
        )

    def leave(self, h: Hostile) -> Frame:
        return Frame(
            "phx_leave",
            self.encode(h, h.next_ref(), h.next_ref(), self.topic(h), "phx_leave", {}),
        )

    def unknown_event(self, h: Hostile) -> Frame:
        rng = self.rng
        event = rng.choice(
            ["phx_reply", "phx_close", "phx_error", "system", odd_name(rng)]
        )
        return Frame(
            "unknown_event",
            self.encode(
                h, h.next_ref(), h.next_ref(), self.topic(h), event, weird_value(rng)
            ),
        )


# --- The run ----------------------------------------------------------------------


def tracebacks(text: str) -> list[str]:
    """The exception line of each traceback in a stretch of server log.

    Of a chain ("During handling of the above exception…") only the last.
    """
    lines = text.splitlines()
    found = []
    for i, line in enumerate(lines):
        if not line.startswith("Traceback (most recent call last)"):
            continue
        for j in range(i + 1, len(lines)):
            if lines[j] and not lines[j].startswith((" ", "\t")):
                following = [x for x in lines[j + 1 : j + 4] if x.strip()]
                chained = bool(following) and following[0].startswith(
                    ("During handling of the above", "The above exception")
                )
                if not chained:
                    found.append(lines[j][:300])
                break
    return found


class LogTail:
    def __init__(self, path: Path) -> None:
        self.handle = open(path, "rb")  # noqa: SIM115 - closed in close()
        self.handle.seek(0, os.SEEK_END)

    def read(self) -> str:
        return self.handle.read().decode("utf-8", "replace")

    def close(self) -> None:
        self.handle.close()


@dataclass
class Finding:
    what: str
    example: str
    kinds: Counter[str] = field(default_factory=Counter)


class Run:
    def __init__(self, target: Target, hostile_tenant: Tenant, seed: int) -> None:
        self.target, self.tenant = target, hostile_tenant
        self.rng = random.Random(seed)
        self.fuzzer = Fuzzer(self.rng, hostile_tenant)
        self.findings: dict[str, Finding] = {}
        self.problems: list[str] = []
        self.kinds: Counter[str] = Counter()
        self.closes: Counter[str] = Counter()
        self.spent: Counter[str] = Counter()
        self.log = LogTail(target.server.log_path)
        self.hostiles: list[Hostile] = []
        self.user_token = hostile_tenant.token(sub="fuzzer", ttl=3600)
        self.specs = [
            ("h1-pk", "1.0.0", None),
            ("h2-pk", "2.0.0", None),
            ("h1-user", "1.0.0", self.user_token),
            ("h2-user", "2.0.0", self.user_token),
            ("h2-pk-b", "2.0.0", None),
        ]
        self.hostiles = [self.open(*spec) for spec in self.specs]

    def open(self, name: str, vsn: str, token: str | None) -> Hostile:
        socket = Socket(self.target.server.ws_url, self.tenant.publishable_key, vsn=vsn)
        return Hostile(name, vsn, token, socket)

    def reopen(self, i: int) -> None:
        with contextlib.suppress(Exception):  # it may be dead already
            self.hostiles[i].socket.close()
        self.hostiles[i] = self.open(*self.specs[i])

    def find(self, kind: str, what: str, example: str) -> None:
        if what not in self.findings:
            self.findings[what] = Finding(what, f"{kind}: {example[:300]}")
        self.findings[what].kinds[kind] += 1

    def send(self, i: int) -> None:
        h = self.hostiles[i]
        frame = self.fuzzer.frame(h)
        base = re.split("[:+]", frame.kind)[0]
        self.kinds[base] += 1
        example = repr(frame.data[:300])
        slow = "bindings" in frame.kind
        started = time.monotonic()
        outcome, closed = self.exchange(h, frame, timeout=60 if slow else 5)
        took = time.monotonic() - started
        self.spent[frame.kind.split("+")[0]] += took
        if took > SLOW:
            self.find(frame.kind, f"frame took {took:.0f}s (over {SLOW}s)", example)
        if outcome is not None:
            self.find(frame.kind, outcome, example)
        if closed or outcome is not None:
            self.closes[frame.kind] += 1
            self.reopen(i)
        for line in tracebacks(self.log.read()):
            self.find(frame.kind, f"server traceback: {line}", example)

    def exchange(
        self, h: Hostile, frame: Frame, *, timeout: float
    ) -> tuple[str | None, bool]:
        """Send the frame, then a heartbeat: (what went wrong or None, closed)."""
        try:
            h.socket.ws.send(frame.data)
            probe = f"probe-{h.next_ref()}"
            h.socket.push("phoenix", "heartbeat", {}, ref=probe)
            deadline = time.monotonic() + timeout
            while (left := deadline - time.monotonic()) > 0:
                got = h.socket.recv(timeout=left)
                if got["event"] == "phx_reply":
                    if got["ref"] == probe:
                        return None, False
                    ref = got["ref"]
                    topic = h.pending.pop(ref, None) if isinstance(ref, str) else None
                    payload = got.get("payload")
                    status = (
                        payload.get("status") if isinstance(payload, dict) else None
                    )
                    if topic is not None and status == "ok":
                        h.joined.add(topic)
                elif got["event"] == "phx_close":
                    h.joined.discard(got["topic"])
        except TimeoutError:
            pass
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else None
            if code in DELIBERATE_CLOSES:
                return None, True
            return f"socket closed abnormally (code {code})", True
        return f"no heartbeat reply within {timeout}s (socket hung)", False

    def check(self, where: str, bystanders: list[Bystander]) -> None:
        for b in bystanders:
            self.problems += [f"{where}: {p}" for p in b.problems()]
        try:
            health = httpx.get(f"{self.target.url}/healthz", timeout=PROMPTLY)
            if health.status_code != 200:
                self.problems.append(f"{where}: /healthz {health.status_code}")
        except httpx.HTTPError as exc:
            self.problems.append(f"{where}: /healthz {exc!r}")
        if self.target.server.process.poll() is not None:
            self.problems.append(f"{where}: server process exited")

    def close_all(self) -> None:
        for h in self.hostiles:
            h.socket.close()


def settled(read: Callable[[], Any], want: Any, timeout: float = SETTLE) -> Any:
    """Poll `read` until it returns `want` or the deadline passes; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if value == want or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def fuzz(target: Target, make: Callable[[str], Tenant], frames: int) -> None:
    seed = int(os.environ.get("HERALD_FUZZ_SEED", str(random.randrange(2**32))))
    print(f"\nHERALD_FUZZ_SEED={seed} HERALD_FUZZ_FRAMES={frames}")
    hostile, other = make("Fuzzed"), make("Elsewhere")
    bystanders = [Bystander(target, hostile), Bystander(target, other)]
    run = Run(target, hostile, seed)
    started = time.monotonic()
    try:
        run.check("before", bystanders)
        for n in range(1, frames + 1):
            run.send(run.rng.randrange(len(run.hostiles)))
            if n % CHECK_EVERY == 0:
                run.check(f"after {n} frames", bystanders)
            if run.rng.random() < 0.002:  # a hostile socket goes, a new one comes
                run.reopen(run.rng.randrange(len(run.hostiles)))
            if target.server.process.poll() is not None:
                run.problems.append(f"server process died at frame {n}")
                break
        run.check("at the end", bystanders)
    finally:
        run.close_all()
    elapsed = time.monotonic() - started
    # (c) the connection count is the bystanders' own, one per tenant.
    for t in (hostile, other):
        want = {k: 1 for k in target.connections(t)}
        got = settled(lambda t=t: target.connections(t), want)
        if got != want:
            run.problems.append(f"connections of {t.slug}: {got}, want {want}")
    # (d) no active subscription row outlives its hostile socket.
    got = settled(lambda: target.active_topics(hostile), [WATCH_TOPIC])
    if got != [WATCH_TOPIC]:
        leaked = Counter(t[:60] for t in got if t != WATCH_TOPIC)
        run.problems.append(f"active subscriptions left of closed sockets: {leaked}")
    run.check("after closing", bystanders)
    for line in tracebacks(run.log.read()):
        run.find("after closing", f"server traceback: {line}", "")
    for b in bystanders:
        b.socket.close()
    run.log.close()
    report = [
        f"seed {seed}: {sum(run.kinds.values())} frames in {elapsed:.0f}s",
        f"kinds: {dict(run.kinds.most_common())}",
        f"slowest: { {k: round(v, 1) for k, v in run.spent.most_common(8)} }",
        f"sockets closed or reopened after: {dict(run.closes.most_common())}",
        *(
            f"FOUND {f.what}\n    after {dict(f.kinds.most_common())}"
            f"\n    e.g. {f.example}"
            for f in run.findings.values()
        ),
        *(f"PROBLEM {p}" for p in run.problems),
    ]
    print("\n".join(report))
    assert not run.findings and not run.problems, "\n".join(report)


def test_fuzz_the_live_server(pg_target: Any) -> None:
    target, make = pg_target
    fuzz(target, make, FRAMES)


@pytest.mark.embedded
def test_fuzz_the_embedded_default(embedded_target: Any) -> None:
    target, make = embedded_target
    fuzz(target, make, max(FRAMES // 5, 100))


# --- One frame of each crash class ------------------------------------------------


def deep(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def join_frame(topic: str, config_json: str) -> str:
    return (
        f'{{"topic":{json.dumps(topic)},"event":"phx_join",'
        f'"payload":{{"config":{config_json}}},"ref":"1","join_ref":"1"}}'
    )


def bindings_json(*bindings: str) -> str:
    return '{"postgres_changes":[' + ",".join(bindings) + "]}"


def one_binding(table: str, extra: str = "") -> str:
    return f'{{"event":"*","schema":"public","table":{json.dumps(table)}{extra}}}'


def joined_then(frame: str) -> list[str]:
    """Join realtime:fz first (ref "1"), then the frame (ref "2")."""
    return [join_frame("realtime:fz", "{}"), frame]


CRASHES: dict[str, tuple[list[str], float]] = {
    "binding on table 'a b'": (
        [join_frame("realtime:fz", bindings_json(one_binding("a b")))],
        10,
    ),
    "binding on a 90-char table": (
        [join_frame("realtime:fz", bindings_json(one_binding("t" * 90)))],
        10,
    ),
    "binding on a non-ASCII table": (
        [join_frame("realtime:fz", bindings_json(one_binding("таблица")))],
        10,
    ),
    "300-deep binding": (
        [
            join_frame(
                "realtime:fz", bindings_json(one_binding("t", f',"x":{deep(300)}'))
            )
        ],
        10,
    ),
    "300-deep broadcast payload": (
        joined_then(
            '{"topic":"realtime:fz","event":"broadcast","ref":"2","join_ref":"1",'
            f'"payload":{{"type":"broadcast","event":"e","payload":{deep(300)}}}}}'
        ),
        10,
    ),
    "300-deep presence meta": (
        joined_then(
            '{"topic":"realtime:fz","event":"presence","ref":"2","join_ref":"1",'
            f'"payload":{{"type":"presence","event":"track","payload":{deep(300)}}}}}'
        ),
        10,
    ),
    "U+0000 in a topic": ([join_frame("realtime:a\x00b", "{}")], 10),
    "5000-digit number in a filter": (
        [
            join_frame(
                "realtime:fz",
                bindings_json(
                    one_binding("t", ',"filter":"id=eq.1' + "0" * 5000 + '"')
                ),
            )
        ],
        10,
    ),
    "in.() with 50000 values": (
        [
            join_frame(
                "realtime:fz",
                bindings_json(
                    one_binding(
                        "t",
                        ',"filter":"id=in.(' + ",".join(map(str, range(50_000))) + ')"',
                    )
                ),
            )
        ],
        10,
    ),
    "4000 bindings on distinct tables": (
        [
            join_frame(
                "realtime:fz",
                bindings_json(*(one_binding(f"table_{i}") for i in range(4000))),
            )
        ],
        20,
    ),
}


def answer_of(socket: Socket, ref: str, timeout: float) -> tuple[str, Any]:
    """('reply', payload), ('system', payload) after an ok join, ('closed', code)."""
    deadline = time.monotonic() + timeout
    reply = None
    try:
        while (left := deadline - time.monotonic()) > 0:
            got = socket.recv(timeout=left)
            if got["event"] == "phx_reply" and got["ref"] == ref:
                reply = got["payload"]
                if reply.get("status") != "ok":
                    return "reply", reply
                # An ok join may still refuse a binding with a system error.
                try:
                    system = socket.recv_until(
                        lambda f: f["event"] == "system", min(left, 2)
                    )
                    return "system", system["payload"]
                except TimeoutError:
                    return "reply", reply
    except ConnectionClosed as exc:
        return "closed", exc.rcvd.code if exc.rcvd else None
    except TimeoutError:
        pass
    return "nothing", reply


@pytest.mark.parametrize("name", list(CRASHES))
def test_one_hostile_frame_is_answered_and_harms_nobody(
    name: str, pg_target: Any
) -> None:
    target, make = pg_target
    frames, bound = CRASHES[name]
    hostile, other = make("Hostile"), make("Neighbour")
    bystanders = [Bystander(target, hostile), Bystander(target, other)]
    log = LogTail(target.server.log_path)
    socket = Socket(target.server.ws_url, hostile.publishable_key)
    ref = str(len(frames))
    started = time.monotonic()
    for frame in frames[:-1]:
        socket.ws.send(frame)
        assert socket.reply_to("1")["payload"]["status"] == "ok"
    socket.ws.send(frames[-1])
    # While the frame is handled, the bystanders still hear promptly.
    problems = [p for b in bystanders for p in b.problems()]
    kind, answer = answer_of(socket, ref, bound * 6)
    took = time.monotonic() - started
    problems += [f"server traceback: {line}" for line in tracebacks(log.read())]
    if kind == "reply":
        ok = answer.get("status") == "ok" and "bindings" in name
        refused = answer.get("status") == "error" and isinstance(
            (answer.get("response") or {}).get("reason"), str
        )
        if not (ok or refused):
            problems.append(f"reply not an error with a reason: {answer}")
    elif kind == "system":
        if answer.get("status") != "error" and "bindings" not in name:
            problems.append(f"join accepted the frame: system {answer}")
    elif kind == "closed":
        if answer not in DELIBERATE_CLOSES:
            problems.append(f"socket closed abnormally (code {answer})")
    else:
        problems.append(f"no answer within {bound}s (took {took:.1f}s)")
    socket.close()
    problems += [p for b in bystanders for p in b.problems()]
    health = httpx.get(f"{target.url}/healthz", timeout=PROMPTLY)
    if health.status_code != 200:
        problems.append(f"/healthz {health.status_code}")
    if target.server.process.poll() is not None:
        problems.append("server process exited")
    want = {k: 1 for k in target.connections(hostile)}
    got = settled(lambda: target.connections(hostile), want)
    if got != want:
        problems.append(f"connections after close: {got}, want {want}")
    topics = settled(lambda: target.active_topics(hostile), [WATCH_TOPIC])
    if topics != [WATCH_TOPIC]:
        problems.append(f"active subscriptions after close: {[t[:40] for t in topics]}")
    problems += [f"server traceback: {line}" for line in tracebacks(log.read())]
    for b in bystanders:
        b.socket.close()
    log.close()
    assert not problems, f"{name} ({kind}: {str(answer)[:300]}):\n" + "\n".join(
        problems
    )
