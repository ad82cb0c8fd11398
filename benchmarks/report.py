"""The table `make bench` prints: figures, ratios, notes and the issue's goals."""

from __future__ import annotations

import argparse
from typing import Any

GOAL_RATE = 30_000
GOAL_RATIO = 5.0
GOAL_P99_MS = 100.0
GOAL_RSS_KB = 30.0


def dig(res: Any, *path: Any) -> Any:
    for step in path:
        if res is None:
            return None
        try:
            res = res[step]
        except (KeyError, IndexError):
            return None
    return res


def num(value: float | None, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def ratio(a: float | None, b: float | None) -> str:
    return "-" if not a or not b else f"{a / b:.2f}x"


def fmt_lat(lat: dict[str, Any] | None) -> str:
    if lat is None:
        return "-"
    # A percentile that fell on a delivery that never came within the drain.
    bound = f">{lat['drain_bound_s'] * 1000:.0f}"
    parts = [bound if lat[k] is None else f"{lat[k]:.1f}" for k in PCTS]
    return "/".join(parts)


def fmt_cpu(cpu: dict[str, float | None] | None) -> str:
    if cpu is None:
        return "-"
    return "/".join("-" if v is None else f"{v:.0%}" for v in cpu.values())


PCTS = ("p50_ms", "p95_ms", "p99_ms")
WIDTHS = (48, 22, 22, 9)


def line(*cells: str) -> str:
    first, *rest = cells
    return f"{first:<{WIDTHS[0]}}" + "".join(
        f"{c:>{w}}" for c, w in zip(rest, WIDTHS[1:], strict=False)
    )


def cpu_per_delivery(res: dict[str, Any] | None) -> float | None:
    """The server's CPU time per delivery: the figure other load moves least."""
    return phase_cpu(dig(res, "stream", "throughput"))


def phase_cpu(phase: dict[str, Any] | None) -> float | None:
    """µs of server CPU per delivery in one phase (throughput or latency)."""
    if not phase or phase["cpu"]["server"] is None:
        return None
    rate = phase.get("deliveries_per_s") or phase.get("offered_deliveries_per_s")
    return phase["cpu"]["server"] / rate * 1e6 if rate else None


def fmt_threads(phase: dict[str, Any] | None) -> str:
    """Each generator thread's share of a core: main (publishing), then sockets."""
    threads = dig(phase, "generator_threads")
    if not threads:
        return "-"
    shares = ["-" if t["share"] is None else f"{t['share']:.0%}" for t in threads]
    return "/".join(shares)


def report(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    h, n = results.get("herald"), results.get("naive")
    h_rate = dig(h, "stream", "throughput", "deliveries_per_s")
    n_rate = dig(n, "stream", "throughput", "deliveries_per_s")
    h_rss, n_rss = dig(h, "idle", "kb_per_conn"), dig(n, "idle", "kb_per_conn")
    rows = [
        line("", "Herald", "naive", "ratio"),
        line(
            f"deliveries/s, {args.subscribers} subscribers, one stream",
            num(h_rate),
            num(n_rate),
            ratio(h_rate, n_rate),
        ),
        line(
            "  cores busy: server/publ./redis/loadgen/rest",
            fmt_cpu(dig(h, "stream", "throughput", "cpu")),
            fmt_cpu(dig(n, "stream", "throughput", "cpu")),
        ),
        line(
            "  server CPU per delivery, µs",
            num(cpu_per_delivery(h), ".1f"),
            num(cpu_per_delivery(n), ".1f"),
            ratio(cpu_per_delivery(n), cpu_per_delivery(h)),
        ),
        line(
            "  generator threads, % of a core (main/sockets)",
            fmt_threads(dig(h, "stream", "throughput")),
            fmt_threads(dig(n, "stream", "throughput")),
        ),
    ]
    rows += latency_rows(h, n)
    rows.append(
        line(
            f"RSS KB per idle joined socket ({args.idle} sockets)",
            num(h_rss, ".1f"),
            num(n_rss, ".1f"),
            ratio(h_rss, n_rss),
        )
    )
    rule = "-" * sum(WIDTHS)
    print("\n".join(["", rule, *rows, rule]))
    for name, res in results.items():
        for note in anomalies(res):
            print(f"  note ({name}): {note}")


def latency_rows(h: dict[str, Any] | None, n: dict[str, Any] | None) -> list[str]:
    """One row per offered rate, Herald's and the naive design's side by side."""
    h_lats = {lat["label"]: lat for lat in dig(h, "stream", "latency") or []}
    n_lats = {lat["label"]: lat for lat in dig(n, "stream", "latency") or []}
    rows = []
    for label in [*h_lats, *(k for k in n_lats if k not in h_lats)]:
        h_lat, n_lat = h_lats.get(label), n_lats.get(label)
        rate = (h_lat or n_lat)["offered_deliveries_per_s"]
        p99_ratio = ratio(dig(n_lat, "p99_ms"), dig(h_lat, "p99_ms"))
        if n_lat and h_lat and h_lat["p99_ms"] and n_lat["p99_ms"] is None:
            # The naive p99 never arrived: it is at least the drain bound.
            p99_ratio = f">{n_lat['drain_bound_s'] * 1000 / h_lat['p99_ms']:.0f}x"
        rows.append(
            line(
                f"p50/p95/p99 ms at {rate:,.0f}/s ({label})",
                fmt_lat(h_lat),
                fmt_lat(n_lat),
                p99_ratio,
            )
        )
        rows.append(
            line(
                "  server CPU per delivery, µs",
                num(phase_cpu(h_lat), ".1f"),
                num(phase_cpu(n_lat), ".1f"),
            )
        )
    return rows


def anomalies(res: dict[str, Any]) -> list[str]:
    """What would make a figure doubtful: said next to the table, never hidden."""
    notes = []
    idle, stream = res["idle"], res["stream"]
    for workload in ("idle", "stream"):
        errors = res[f"{workload}_errors"]
        if errors["count"]:
            top = max(errors["kinds"], key=errors["kinds"].get)
            notes.append(
                f"the server of the {workload} workload logged {errors['count']} "
                f"errors, most often: {top}"
            )
    if idle["failed"] or idle["still_open"] != idle["open"]:
        notes.append(
            f"idle: {idle['failed']} failed, {idle['still_open']}/{idle['open']} "
            f"open at the RSS reading ({idle['first_error']})"
        )
    return notes + stream_anomalies(stream)


def stream_anomalies(stream: dict[str, Any]) -> list[str]:
    """What would make a figure of the stream workload doubtful."""
    notes = []
    if stream["totals"]["closedMidRun"]:
        closed = stream["totals"]["closedMidRun"]
        notes.append(f"the server closed {closed} subscribers mid-run")
    if stream["failed"]:
        notes.append(f"{stream['failed']} subscribers failed: {stream['first_error']}")
    totals, posts = stream["totals"], stream["posts"]
    if totals["invalid"]:
        notes.append(f"{totals['invalid']} bad frames, e.g. {totals['invalidSample']}")
    if posts["failed"]:
        notes.append(f"{posts['failed']} publishes failed: {posts['first_error']}")
    tput = stream.get("throughput") or {}
    if tput and tput["drain_s"] >= 30:
        notes.append("throughput: the backlog did not drain in 30 s")
    if tput.get("stalled"):
        notes.append("throughput: the closed loop stalled (no progress for 5 s)")
    if tput and tput["changes_fully_delivered"] < tput["changes_published"]:
        notes.append(
            f"throughput: {tput['changes_published'] - tput['changes_fully_delivered']}"
            f" of {tput['changes_published']} changes not delivered to every socket"
        )
    for lat in stream.get("latency") or []:
        if lat["received"] < lat["measured_deliveries"]:
            notes.append(
                f"at {lat['offered_deliveries_per_s']:,.0f}/s only "
                f"{lat['received']}/{lat['measured_deliveries']} measured deliveries "
                f"arrived within {lat['drain_bound_s']}s of the last publish"
            )
    return notes


def goals(results: dict[str, dict[str, Any]]) -> None:
    h, n = results.get("herald"), results.get("naive")
    if h is None:
        return
    h_rate = dig(h, "stream", "throughput", "deliveries_per_s")
    n_rate = dig(n, "stream", "throughput", "deliveries_per_s")
    p99 = dig(h, "stream", "latency", 0, "p99_ms")
    rss = dig(h, "idle", "kb_per_conn")
    checks = [
        (f">= {GOAL_RATE:,} deliveries/s", num(h_rate), h_rate, GOAL_RATE, 1),
        (
            f">= {GOAL_RATIO:g}x the naive design, same run",
            ratio(h_rate, n_rate),
            h_rate / n_rate if h_rate and n_rate else None,
            GOAL_RATIO,
            1,
        ),
        (
            f"p99 < {GOAL_P99_MS:g} ms at {GOAL_RATE // 2:,}/s (half the goal)",
            "-" if p99 is None else f"{p99:.1f} ms",
            p99,
            GOAL_P99_MS,
            -1,
        ),
        (
            f"<= {GOAL_RSS_KB:g} KB RSS per idle connection",
            "-" if rss is None else f"{rss:.1f} KB",
            rss,
            GOAL_RSS_KB,
            -1,
        ),
    ]
    print(line("goal (Herald)", "measured", "", ""))
    for label, shown, value, goal, sign in checks:
        ok = value is not None and (value >= goal if sign > 0 else value <= goal)
        print(line(f"  {label}", shown, "PASS" if ok else "MISS"))


# --- the workloads beyond the best case -------------------------------------------

VERIFY_KEYS = ("missing", "extra", "duplicates", "out_of_order", "wrong_seq")
WIDE = (52, 14, 12, 30)


def wide(*cells: str) -> str:
    first, *rest = cells
    return f"{first:<{WIDE[0]}}" + "".join(
        f"{c:>{w}}" for c, w in zip(rest, WIDE[1:], strict=False)
    )


def report_workloads(
    results: dict[str, dict[str, Any]],
    others: dict[str, dict[str, Any]],
    args: argparse.Namespace,
) -> None:
    """Herald's workloads side by side (CPU per delivery beside every rate),
    then the per-socket verification of every stream workload."""
    single = results.get("herald")
    realistic, rest = others.get("realistic"), others.get("rest")
    rows = [wide("Herald", "deliveries/s", "server µs/dl", "generator threads, % core")]
    s_tput = dig(single, "stream", "throughput")
    r_tput = dig(realistic, "stream", "throughput")
    if s_tput:
        rows.append(
            wide(
                "single audience, throughput (closed loop)",
                num(s_tput["deliveries_per_s"]),
                num(phase_cpu(s_tput), ".1f"),
                fmt_threads(s_tput),
            )
        )
    if r_tput:
        rows.append(
            wide(
                f"realistic ({args.subscribers} users, {args.sites} sites), throughput",
                num(r_tput["deliveries_per_s"]),
                num(phase_cpu(r_tput), ".1f"),
                fmt_threads(r_tput),
            )
        )
        rows.append(
            wide(
                f"  {r_tput['fan_out']:.1f} sockets due per change; "
                f"{r_tput['changes_published']:,} changes",
                "",
                "",
                f"server/publ./redis: {fmt_cpu(r_tput['cpu'])}",
            )
        )
    if s_tput and r_tput:
        rows.append(
            wide(
                "  CPU per delivery, realistic / single audience",
                "",
                ratio(phase_cpu(r_tput), phase_cpu(s_tput)),
            )
        )
    for name, res in (("realistic", realistic), ("REST", rest)):
        for lat in dig(res, "stream", "latency") or []:
            rows.append(
                wide(
                    f"{name} p50/p95/p99 ms ({lat['label']})",
                    num(lat["offered_deliveries_per_s"]),
                    num(phase_cpu(lat), ".1f"),
                    fmt_threads(lat),
                )
            )
            rows.append(wide("", "", "", fmt_lat(lat)))
            if name == "REST":
                publish = lat["publish_ms"]
                rows.append(
                    wide(
                        "  POST /api/changes until answered, p50/p99 ms",
                        "",
                        "",
                        f"{num(publish['p50'], '.1f')}/{num(publish['p99'], '.1f')}",
                    )
                )
    rule = "-" * sum(WIDE)
    print("\n".join(["", rule, *rows, rule]))
    print("generator threads: main (publishing) / each socket thread, % of a core")
    print(
        "per-socket verification (missing/extra/duplicates/out-of-order/wrong cursor):"
    )
    for label, res in verified(results, others):
        v = dig(res, "stream", "verification")
        if v is None:
            print(f"  {label:<28} not verified (no result)")
            continue
        counts = "/".join(str(v[k]) for k in VERIFY_KEYS)
        verdict = "PASS" if verify_ok(v) else "FAIL"
        if label.endswith("naive"):
            verdict += " (the naive baseline: shown, not part of the exit status)"
        print(
            f"  {label:<28} {counts:<14} over {v['sockets']:,} sockets, "
            f"{v['changes']:,} changes, {v['bad_sockets']} sockets wrong: {verdict}"
        )
        for bad in v.get("bad_sample") or []:
            print(f"    e.g. {bad}")
    for name, res in others.items():
        for note in stream_anomalies(res["stream"]):
            print(f"  note ({name}): {note}")
        if res["errors"]["count"]:
            errors = res["errors"]
            top = max(errors["kinds"], key=errors["kinds"].get)
            print(
                f"  note ({name}): the server logged {errors['count']} errors, "
                f"most often: {top}"
            )


def verified(
    results: dict[str, dict[str, Any]], others: dict[str, dict[str, Any]]
) -> list[tuple[str, dict[str, Any]]]:
    return [
        *((f"single audience, {name}", res) for name, res in results.items()),
        *((name, res) for name, res in others.items()),
    ]


def verify_ok(v: dict[str, Any] | None) -> bool:
    return v is not None and v["sockets"] > 0 and not any(v[k] for k in VERIFY_KEYS)


def verification_ok(
    results: dict[str, dict[str, Any]], others: dict[str, dict[str, Any]]
) -> bool:
    """Every socket of Herald's every stream workload got exactly its due.

    The naive design is verified and shown too, but it is the baseline: driven
    at half Herald's maximum, far past its own, it loses changes (a full
    channel drops what is sent to it), and that is not Herald failing.
    """
    return all(
        verify_ok(dig(res, "stream", "verification"))
        for label, res in verified(results, others)
        if not label.endswith("naive")
    )
