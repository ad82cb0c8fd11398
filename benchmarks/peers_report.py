"""The table `make bench-peers` prints: every design, the ratios, the goals."""

from __future__ import annotations

import argparse
from typing import Any

from benchmarks.report import dig, fmt_cpu, fmt_lat, num, ratio, stream_anomalies

NAMES = {
    "herald": "Herald",
    "socketio": "Socket.IO",
    "ceiling": "Python ceiling",
    "wsbroadcast": "websockets.broadcast",
    "naive": "naive Channels",
}
# Herald at or above Socket.IO, and within this factor of the Python ceiling.
GOAL_CEILING_FACTOR = 2.0
WIDTHS = (32, 13, 8, 31, 25, 9)


def row(*cells: str) -> str:
    first, *rest = cells
    return f"{first:<{WIDTHS[0]}}" + "".join(
        f"{c:>{w}}" for c, w in zip(rest, WIDTHS[1:], strict=False)
    )


def goal_row(text: str, shown: str, verdict: str) -> str:
    return f"{text:<56}{shown:>16}{verdict:>8}"


def rate(results: dict[str, Any], key: str) -> float | None:
    return dig(results, key, "stream", "throughput", "deliveries_per_s")


def cpu_us(res: dict[str, Any] | None) -> float | None:
    """Server CPU per delivery (all of a design's processes): least moved by noise."""
    tput = dig(res, "stream", "throughput")
    if not tput or not tput["deliveries_per_s"] or tput["cpu"]["server"] is None:
        return None
    return tput["cpu"]["server"] / tput["deliveries_per_s"] * 1e6


def label(key: str) -> str:
    design, count = key.split(":")
    return f"{NAMES[design]}, {count} process{'es' if count != '1' else ''}"


def peers_report(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    lat_rate = None
    for res in results.values():
        lat_rate = lat_rate or dig(
            res, "stream", "latency", 0, "offered_deliveries_per_s"
        )
    lat_head = f"p50/p95/p99 ms @{lat_rate:,.0f}/s" if lat_rate else "p50/p95/p99 ms"
    rule = "-" * sum(WIDTHS)
    print(
        f"\n{args.subscribers} subscribers of one stream; deliveries/s at the receivers"
    )
    print(rule)
    head = ("deliveries/s", "µs CPU", "cores srv/pub/redis/gen/rest", lat_head)
    print(row("", *head, "frame B"))
    for key, res in results.items():
        print(
            row(
                label(key),
                num(rate(results, key)),
                num(cpu_us(res), ".1f"),
                fmt_cpu(dig(res, "stream", "throughput", "cpu")),
                fmt_lat(dig(res, "stream", "latency", 0)),
                num(dig(res, "stream", "totals", "frameBytes")),
            )
        )
    print(rule)
    # Deliveries/s, and the same ratio of server CPU per delivery (b's µs over
    # a's): the figure other load on the machine moves least.
    print(
        f"{'ratio':<32}{'deliveries/s':>28}{'server CPU per delivery':>30}\n"
        f"{'':<32}{'1 process':>14}{'2 processes':>14}"
        f"{'1 process':>15}{'2 processes':>15}"
    )
    for text, a, b in (
        ("Herald / Socket.IO", "herald", "socketio"),
        ("Python ceiling / Herald", "ceiling", "herald"),
        ("Herald / naive Channels", "herald", "naive"),
        ("Socket.IO / Python ceiling", "socketio", "ceiling"),
    ):
        cells = [
            ratio(rate(results, f"{a}:{n}"), rate(results, f"{b}:{n}")) for n in (1, 2)
        ]
        cells += [
            ratio(cpu_us(results.get(f"{b}:{n}")), cpu_us(results.get(f"{a}:{n}")))
            for n in (1, 2)
        ]
        if any(c != "-" for c in cells):
            print(
                f"{'  ' + text:<32}{cells[0]:>14}{cells[1]:>14}"
                f"{cells[2]:>15}{cells[3]:>15}"
            )
    scaling = [
        f"{NAMES[d]} {ratio(rate(results, f'{d}:2'), rate(results, f'{d}:1'))}"
        for d in NAMES
        if rate(results, f"{d}:2") and rate(results, f"{d}:1")
    ]
    if scaling:
        print(f"  two processes / one: {', '.join(scaling)}")
    print(rule)
    for key, res in results.items():
        notes = stream_anomalies(res["stream"])
        errors = res.get("errors") or {}
        if errors.get("count"):
            top = max(errors["kinds"], key=errors["kinds"].get)
            notes.append(f"the servers logged {errors['count']} errors, e.g. {top}")
        if res.get("client_check"):
            notes.append(res["client_check"])
        for note in notes:
            print(f"  note ({label(key)}): {note}")


def peers_goals(results: dict[str, dict[str, Any]], batch: int) -> bool:
    """The issue's goals, on one process and on two; True when all pass."""
    per = "1 change" if batch == 1 else f"{batch} changes"
    title = f"goal (Herald, deliveries/s, same run, {per} per publish)"
    print(goal_row(title, "measured", ""))
    all_ok = True
    for count, words in ((1, "one process"), (2, "two processes")):
        h = rate(results, f"herald:{count}")
        s = rate(results, f"socketio:{count}")
        c = rate(results, f"ceiling:{count}")
        checks = [
            (f"  >= Socket.IO, {words}", h / s if h and s else None, 1.0, 1),
            (
                f"  within {GOAL_CEILING_FACTOR:g}x the Python ceiling, {words}",
                c / h if h and c else None,
                GOAL_CEILING_FACTOR,
                -1,
            ),
        ]
        for text, value, goal, sign in checks:
            if value is None:
                continue
            ok = value >= goal if sign > 0 else value <= goal
            all_ok = all_ok and ok
            shown = f"{value:.2f}x" if sign > 0 else f"ceiling {value:.2f}x"
            print(goal_row(text, shown, "PASS" if ok else "MISS"))
    return all_ok
