"""The indexed fan-out against a brute-force reference.

Generated subscribers (random bindings and filters, roles, claims, row
policies) join a real hub (Redis layer); generated changes (INSERT, UPDATE,
DELETE with old rows) are dispatched through it. The set of (socket, change)
deliveries must be exactly what checking every binding and policy of every
socket gives.
"""

from __future__ import annotations

import asyncio
import os
import random
from typing import Any

import orjson
import pytest

from realtime.auth import Principal
from realtime.bindings import binding_matches, parse_bindings
from realtime.fanout_index import AudienceIndex
from realtime.fastsend import Outbox
from realtime.hub import Hub, Member
from realtime.layer import stream_group, tenant_group
from realtime.models import RowPolicy
from realtime.protocol import V1, V2
from realtime.row_policy import old_row_visible, redacted_old_record, row_visible
from realtime.selectors import row_policy_rules

pytestmark = pytest.mark.django_db(transaction=True)

TABLES = ["orders", "items"]
ROLES = ["anon", "authenticated", "service_role"]
SITES = [1, 2, 3, "3", 4.0, None]
STATUSES = ["paid", "open", "Paid", None]


def random_filter(rnd: random.Random) -> str | None:
    site = rnd.choice([1, 2, 3, 4])
    options = [
        None,
        f"site_id=eq.{site}",
        f"site_id=in.({site},{rnd.choice([1, 2, 3])})",
        f"site_id=neq.{site}",
        f"site_id=gt.{site}",
        f"status=eq.{rnd.choice(['paid', 'open'])}",
        f"status=ilike.p%,site_id=eq.{site}",
        "status=is.null",
        f"site_id=not.eq.{site}",
        f"site_id=eq.{site},status=in.(paid,open)",
        "flag=eq.true",
        f"id=eq.{rnd.randint(1, 5)}",
    ]
    return rnd.choice(options)


def random_bindings(rnd: random.Random) -> list[dict[str, Any]]:
    bindings = []
    for _ in range(rnd.randint(1, 3)):
        binding: dict[str, Any] = {
            "event": rnd.choice(["*", "INSERT", "UPDATE", "DELETE"]),
            "schema": "public",
            "table": rnd.choice([*TABLES, "*"]),
        }
        text = random_filter(rnd)
        if text is not None:
            binding["filter"] = text
        bindings.append(binding)
    return bindings


def random_row(rnd: random.Random) -> dict[str, Any]:
    row: dict[str, Any] = {"id": rnd.randint(1, 5), "status": rnd.choice(STATUSES)}
    site = rnd.choice(SITES)
    if site is not None or rnd.random() < 0.5:
        row["site_id"] = site
    if rnd.random() < 0.3:
        row["flag"] = rnd.choice([True, False, "true"])
    return row


def random_change(rnd: random.Random, seq: int) -> dict[str, Any]:
    kind = rnd.choice(["INSERT", "UPDATE", "DELETE"])
    data: dict[str, Any] = {
        "schema": "public",
        "table": rnd.choice(TABLES),
        "commit_timestamp": "2026-12-02T12:00:00.000Z",
        "type": kind,
        "columns": [],
        "errors": None,
        "seq": seq,
    }
    if kind != "DELETE":
        data["record"] = random_row(rnd)
    if kind != "INSERT":
        data["old_record"] = random_row(rnd)
    return data


def reference(member: Member, change: dict[str, Any], policies: Any) -> Any:
    """What the socket must get of the change: its old row, or False."""
    hit = any(
        binding_matches(
            b,
            table=change["table"],
            change_type=change["type"],
            record=change.get("record"),
            old_record=change.get("old_record"),
        )
        for b in member.bindings
    )
    row = change.get("old_record" if change["type"] == "DELETE" else "record")
    role, claims = member.principal.role, member.principal.claims
    rules = policies[change["table"]].get(role, [])
    if not (hit and row_visible(role=role, policies=rules, row=row, claims=claims)):
        return False
    old = change.get("old_record")
    whole = old_row_visible(
        role=role,
        policies=rules,
        change_type=change["type"],
        old_record=old,
        claims=claims,
    )
    return orjson.dumps(old if whole else redacted_old_record(old))


async def dispatch_all(
    members: list[Member], changes: list[dict[str, Any]], tenant_id: int
) -> dict[tuple[int, int], bytes]:
    hub = Hub()
    try:
        for member in members:
            await hub.add(member)
        delivered: dict[tuple[int, int], bytes] = {}
        for change in changes:
            # Each change reaches its table's stream and the tenant's, as
            # layer.changes_messages sends it.
            for stream in (
                stream_group(tenant_id, change["table"]),
                tenant_group(tenant_id),
            ):
                outbox = Outbox()
                message = {
                    "type": "stream.changes",
                    "stream": stream,
                    "tenant": tenant_id,
                    "seqs": [change["seq"]],
                    "data": [orjson.dumps(change)],
                }
                await hub.dispatch_changes(message, outbox)
                for member, frames in outbox.flush():
                    for frame in frames:
                        sent = orjson.loads(frame.text)
                        payload = sent["payload"] if isinstance(sent, dict) else sent[4]
                        data = payload["data"]
                        key = (members.index(member), data["seq"])
                        assert key not in delivered, "delivered twice"
                        delivered[key] = orjson.dumps(data.get("old_record"))
        return delivered
    finally:
        for task in hub._tasks:
            task.cancel()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_indexed_fan_out_delivers_exactly_what_checking_everyone_does(
    make_tenant: Any, seed: int
) -> None:
    seed = int(os.environ.get("HERALD_FANOUT_SEED", seed))
    rnd = random.Random(seed)
    creds = make_tenant()
    site, status = (
        {"column": "site_id", "claim": "site_id"},
        {
            "column": "status",
            "claim": "status",
        },
    )
    # Every shape of policy: one rule, either of two, every row, none at all.
    for table, role, rules in [
        ("orders", "anon", [site]),
        ("orders", "authenticated", [site]),
        ("orders", "authenticated", [status]),
        ("items", "authenticated", []),
        ("items", "anon", [site, status]),
    ]:
        RowPolicy.objects.create(
            tenant=creds.tenant, table=table, role=role, rules=rules
        )
    policies = {t: row_policy_rules(tenant_id=creds.tenant.pk, table=t) for t in TABLES}
    members = []
    for n in range(300):
        bindings, _problems = parse_bindings(random_bindings(rnd))
        claims: dict[str, Any] = {"sub": f"user-{n}"}
        if rnd.random() < 0.8:
            claims["site_id"] = rnd.choice([1, 2, 3, "3", 4])
        if rnd.random() < 0.3:
            claims["status"] = rnd.choice(["paid", "open"])
        codec = rnd.choice([V1, V2])
        members.append(
            Member(
                send=None,  # type: ignore[arg-type]
                codec=codec,
                topic=rnd.choice(["realtime:a", "realtime:b"]),
                bindings=tuple(bindings),
                principal=Principal(
                    tenant=creds.tenant, role=rnd.choice(ROLES), claims=claims
                ),
            )
        )
    changes = [random_change(rnd, seq) for seq in range(1, 401)]
    expected = {
        (i, change["seq"]): due
        for i, member in enumerate(members)
        for change in changes
        if (due := reference(member, change, policies)) is not False
    }
    got = asyncio.run(dispatch_all(members, changes, creds.tenant.pk))
    assert got == expected
    assert len(expected) > 1000  # the generated workload does deliver
    by_seq = {change["seq"]: change for change in changes}
    redacted = [
        key
        for key, old in expected.items()
        if old != orjson.dumps(by_seq[key[1]].get("old_record"))
    ]
    assert redacted  # and it moves rows out of some readers' sight


def test_an_audience_is_offered_only_the_values_its_filters_require() -> None:
    index = AudienceIndex()

    class Audience:
        def __init__(self, text: str | None) -> None:
            binding = {"event": "*", "schema": "public", "table": "orders"}
            if text:
                binding["filter"] = text
            self.bindings = tuple(parse_bindings([binding])[0])

    by_site = {site: Audience(f"site_id=eq.{site}") for site in range(10_000)}
    everyone = Audience(None)
    for audience in [*by_site.values(), everyone]:
        index.add(audience)
    offered = index.candidates([{"site_id": 42}])
    assert set(map(id, offered)) == {id(by_site[42]), id(everyone)}
    assert set(map(id, index.candidates([{"site_id": "42"}]))) == {
        id(by_site[42]),
        id(everyone),
    }
    for audience in by_site.values():
        index.remove(audience)
    assert index.candidates([{"site_id": 42}]) == [everyone]
    assert not index.by_value


def test_sockets_joining_a_new_stream_at_once_all_receive(make_tenant: Any) -> None:
    """The first joins of a stream wait on the layer together: none of them may
    replace what another one made meanwhile (sockets then got nothing, ever)."""
    creds = make_tenant()
    bindings, _ = parse_bindings([{"event": "*", "schema": "public", "table": "t"}])
    members = [
        Member(
            send=None,  # type: ignore[arg-type]
            codec=V1,
            topic=f"realtime:room-{n % 7}",
            bindings=tuple(bindings),
            principal=Principal(
                tenant=creds.tenant, role="service_role", claims={"sub": f"u{n}"}
            ),
        )
        for n in range(50)
    ]
    change = {
        "schema": "public",
        "table": "t",
        "commit_timestamp": "2026-12-02T12:00:00.000Z",
        "type": "INSERT",
        "columns": [],
        "errors": None,
        "seq": 1,
        "record": {"id": 1},
    }

    async def joined_at_once() -> set[int]:
        hub = Hub()
        try:
            await asyncio.gather(*(hub.add(member) for member in members))
            outbox = Outbox()
            message = {
                "type": "stream.changes",
                "stream": stream_group(creds.tenant.pk, "t"),
                "tenant": creds.tenant.pk,
                "seqs": [1],
                "data": [orjson.dumps(change)],
            }
            await hub.dispatch_changes(message, outbox)
            return {members.index(member) for member, _ in outbox.flush()}
        finally:
            for task in hub._tasks:
                task.cancel()

    assert asyncio.run(joined_at_once()) == set(range(50))
