// Load generator for `make bench`; benchmarks/run.py starts it once per workload.
//
// One Node process holds every socket (ws, no compression) and publishes on the
// same clock: each record carries `bench_t`, its publish time in µs, so the
// receive time minus it is the publish-to-receive latency. Changes go through
// benchmarks/publisher.py straight to the channel layer (`publish: "layer"`) or
// with POST /api/changes (`"rest"`). Deliveries are counted by scanning the
// frame bytes for `bench_n`/`bench_t` instead of JSON-parsing every frame (the
// first frame of each socket is checked in full), which keeps the generator far
// from being the bottleneck. Every loop is bounded in count and time.
//
// argv[2] is a JSON config (see run.py); results are JSON lines on stdout.
// mode "idle":   open `count` joined sockets, print {"event":"ready"}, hold them
//                (heartbeating) until a line arrives on stdin, then close.
// mode "stream": open `count` sockets on one stream, run the throughput phase,
//                then one latency phase per entry of `latRates`, print results.

import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import WebSocket from "ws";

const cfg = JSON.parse(process.argv[2]);
const V2 = cfg.vsn.startsWith("2.");
const KEY_N = Buffer.from('"bench_n":');
const KEY_T = Buffer.from('"bench_t":');
const HEARTBEAT_MS = 25_000; // realtime-js's interval
const JOIN_TIMEOUT_MS = 20_000;
const PAD = "x".repeat(cfg.padBytes ?? 120);

const now = () => performance.timeOrigin + performance.now(); // ms, fractional
const sleep = (ms) => new Promise((r) => setTimeout(r, Math.max(0, ms)));
const emit = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);

function frame(joinRef, ref, topic, event, payload) {
  return V2
    ? JSON.stringify([joinRef, ref, topic, event, payload])
    : JSON.stringify({ topic, event, payload, ref, join_ref: joinRef });
}

function decode(text) {
  const m = JSON.parse(text);
  if (!V2) return m;
  const [join_ref, ref, topic, event, payload] = m;
  return { join_ref, ref, topic, event, payload };
}

function readInt(buf, pos) {
  let value = 0;
  for (let i = 0; i < 20; i++) {
    const c = buf[pos + i];
    if (c < 48 || c > 57) return value;
    value = value * 10 + (c - 48);
  }
  return value;
}

// ---- counters shared by every socket ----------------------------------------

const totals = { received: 0, stray: 0, invalid: 0, invalidSample: null, unexpected: 0, closedMidRun: 0 };
let phase = null; // the running throughput or latency phase
let closing = false; // set once the run is over: closes are expected then

function onDelivery(n, t) {
  totals.received++;
  const p = phase;
  const k = p ? n - p.nBase : -1;
  if (!p || k < 0 || k >= p.counts.length) {
    totals.stray++; // a late frame of an earlier phase
    return;
  }
  const c = ++p.counts[k];
  if (c > p.subs) p.duplicates++;
  else if (c >= p.target && !p.done[k]) complete(p, k);
  if (p.lat && k >= p.measureFromK && p.latLen < p.lat.length) {
    const ms = now() - t / 1000;
    p.lat[p.latLen++] = ms;
    if (c === 1) p.first[k] = ms;
    if (c === p.target) p.last[k] = ms;
  }
}

function complete(p, k) {
  p.done[k] = 1;
  p.completed++;
  p.lastProgress = now();
  p.wake();
}

function onSubscriberClosed() {
  // A change is complete once every socket still open has it: without this, one
  // socket the server closed would stall the closed loop.
  totals.closedMidRun++;
  const p = phase;
  if (!p) return;
  p.target--;
  for (let k = 0; k < p.counts.length && k < nextN - p.nBase; k++) {
    if (!p.done[k] && p.counts[k] >= p.target) complete(p, k);
  }
}

function validate(sub, text, n) {
  // The first delivery of each socket is checked against SPEC §5 in full.
  let why = null;
  try {
    const raw = JSON.parse(text);
    const m = decode(text);
    const data = m.payload?.data;
    if (m.event !== "postgres_changes") why = `event ${m.event}`;
    else if (m.topic !== sub.topic) why = `topic ${m.topic}`;
    else if (m.ref !== null) why = "ref is not null";
    else if (V2 && raw[0] !== null) why = "join_ref is not null";
    else if (!m.payload.ids?.includes(sub.bindingId)) why = "ids lacks the binding id";
    else if (data?.table !== cfg.table || data?.schema !== "public") why = "table";
    else if (data.type !== "INSERT" || data.errors !== null) why = "type/errors";
    else if (!Array.isArray(data.columns) || typeof data.commit_timestamp !== "string")
      why = "columns/commit_timestamp";
    else if (data.record?.bench_n !== n) why = "record";
  } catch (e) {
    why = `not JSON: ${e}`;
  }
  if (why) {
    totals.invalid++;
    totals.invalidSample ??= `${why}: ${text.slice(0, 300)}`;
  }
}

// ---- one subscriber -------------------------------------------------------------

class Sub {
  constructor(topic) {
    this.topic = topic;
    this.ref = 0;
    this.joinRef = null;
    this.bindingId = null;
    this.checked = false;
    this.ws = null;
  }

  open() {
    return new Promise((resolve, reject) => {
      const url = `${cfg.ws}/realtime/v1/websocket?apikey=${encodeURIComponent(cfg.apikey)}&vsn=${cfg.vsn}`;
      const ws = new WebSocket(url, { perMessageDeflate: false });
      this.ws = ws;
      const timer = setTimeout(() => {
        ws.terminate();
        reject(new Error("join timed out"));
      }, JOIN_TIMEOUT_MS);
      this.joined = (err) => {
        clearTimeout(timer);
        this.joined = null;
        if (err) reject(err);
        else resolve(this);
      };
      ws.on("open", () => this.join());
      ws.on("message", (data, isBinary) => this.onMessage(data, isBinary));
      ws.on("error", (e) => this.joined?.(e));
      ws.on("close", (code) => {
        if (this.joined) this.joined(new Error(`closed ${code} before join`));
        else if (!closing) onSubscriberClosed();
      });
    });
  }

  join() {
    this.joinRef = String(++this.ref);
    const config = {
      broadcast: { ack: false, self: false },
      presence: { key: "", enabled: false },
      postgres_changes: [{ event: "INSERT", schema: "public", table: cfg.table }],
      private: false,
    };
    this.ws.send(frame(this.joinRef, this.joinRef, this.topic, "phx_join", { config }));
  }

  heartbeat() {
    if (this.ws.readyState !== WebSocket.OPEN) return;
    this.ws.send(frame(null, String(++this.ref), "phoenix", "heartbeat", {}));
  }

  onMessage(buf, isBinary) {
    const i = isBinary ? -1 : buf.indexOf(KEY_N);
    if (i === -1) return this.onControl(buf);
    const n = readInt(buf, i + KEY_N.length);
    const t = readInt(buf, buf.indexOf(KEY_T) + KEY_T.length);
    onDelivery(n, t);
    if (!this.checked) {
      this.checked = true;
      validate(this, buf.toString(), n);
    }
  }

  onControl(buf) {
    let m;
    try {
      m = decode(buf.toString());
    } catch {
      totals.unexpected++;
      return;
    }
    if (m.event === "phx_reply" && m.topic === this.topic && m.ref === this.joinRef) {
      const ok = m.payload?.status === "ok";
      const id = m.payload?.response?.postgres_changes?.[0]?.id;
      if (ok && Number.isInteger(id)) {
        this.bindingId = id;
        this.joined?.(null);
      } else {
        this.joined?.(new Error(`join refused: ${JSON.stringify(m.payload)}`));
      }
    } else if (!(m.event === "phx_reply" && m.topic === "phoenix") && m.event !== "system") {
      totals.unexpected++;
    }
  }
}

async function openAll(count, topicOf) {
  const subs = [];
  const errors = [];
  let next = 0;
  const started = now();
  async function worker() {
    while (next < count) {
      const sub = new Sub(topicOf(next++));
      try {
        subs.push(await sub.open());
      } catch (e) {
        errors.push(String(e));
      }
    }
  }
  await Promise.all(Array.from({ length: cfg.connectConcurrency ?? 64 }, worker));
  return { subs, failed: errors.length, firstError: errors[0] ?? null, seconds: (now() - started) / 1000 };
}

function closeAll(subs) {
  closing = true;
  for (const sub of subs) sub.ws.terminate();
}

// ---- publishing -------------------------------------------------------------------

let nextN = 0;
const posts = { ok: 0, failed: 0, firstError: null, inFlight: 0 };

// With `publish: "layer"`, changes go through benchmarks/publisher.py (straight to
// the channel layer, no database); otherwise POST /api/changes to the server.
const acks = [];
let publisher = null;
if (cfg.publish === "layer" && cfg.mode === "stream") {
  const [cmd, ...args] = cfg.publisherCmd;
  publisher = spawn(cmd, args, { cwd: cfg.root, stdio: ["pipe", "pipe", "inherit"] });
  cfg.publisherPid = publisher.pid;
  createInterface({ input: publisher.stdout }).on("line", () => acks.shift()?.());
  publisher.on("exit", (code) => {
    if (closing) return;
    emit({ event: "error", error: `publisher exited with ${code}` });
    process.exit(2);
  });
}

function send(records) {
  if (publisher) {
    return new Promise((resolve) => {
      acks.push(resolve);
      publisher.stdin.write(`${JSON.stringify(records)}\n`);
    });
  }
  const items = records.map((record) => ({ table: cfg.table, type: "INSERT", record }));
  return fetch(`${cfg.publishHttp}/api/changes`, {
    method: "POST",
    headers: { apikey: cfg.apikey, "content-type": "application/json" },
    body: JSON.stringify(items),
  }).then(async (res) => {
    const body = await res.text();
    if (res.status !== 201) throw new Error(`HTTP ${res.status}: ${body.slice(0, 200)}`);
  });
}

async function publish(k) {
  const t = Math.round(now() * 1000);
  const records = [];
  for (let i = 0; i < k; i++) {
    const n = nextN++;
    records.push({ id: n, bench_n: n, bench_t: t, site_id: 42, status: "published", body: PAD });
  }
  posts.inFlight++;
  try {
    await send(records);
    phase?.postMs?.push(now() - t / 1000);
    posts.ok++;
  } catch (e) {
    posts.failed++;
    posts.firstError ??= String(e);
  } finally {
    posts.inFlight--;
  }
}

// ---- CPU accounting, to show who is busy --------------------------------------------

function cpuSeconds(pid) {
  if (!pid) return null;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / cfg.clockTicks;
  } catch {
    return null;
  }
}

function machineBusySeconds() {
  // Every core's non-idle time, to show what else ran during a phase.
  const [, ...ticks] = readFileSync("/proc/stat", "utf8").split("\n", 1)[0].trim().split(/\s+/);
  const [user, nice, system, , , irq, softirq, steal] = ticks.map(Number);
  return (user + nice + system + irq + softirq + (steal || 0)) / cfg.clockTicks;
}

function snapshot() {
  const own = process.cpuUsage();
  return {
    machine: machineBusySeconds(),
    t: now(),
    received: totals.received,
    server: cpuSeconds(cfg.serverPid),
    publisher: cfg.publisherPid === cfg.serverPid ? null : cpuSeconds(cfg.publisherPid),
    redis: cpuSeconds(cfg.redisPid),
    loadgen: (own.user + own.system) / 1e6,
  };
}

function cpuShares(a, b) {
  // Share of one core each process used between two snapshots.
  const share = (key) => (a[key] === null || b[key] === null ? null : (b[key] - a[key]) / ((b.t - a.t) / 1000));
  const shares = { server: share("server"), publisher: share("publisher"), redis: share("redis"), loadgen: share("loadgen") };
  // The rest: PostgreSQL, the kernel's softirqs, and anything else on the machine.
  shares.other = share("machine") - Object.values(shares).reduce((sum, v) => sum + (v ?? 0), 0);
  return shares;
}

// ---- phases ---------------------------------------------------------------------------

function newPhase(subs, capacity) {
  const p = {
    subs,
    target: subs - totals.closedMidRun,
    nBase: nextN,
    counts: new Int32Array(capacity),
    done: new Uint8Array(capacity),
    completed: 0,
    duplicates: 0,
    lastProgress: now(),
    lat: null,
    latLen: 0,
    measureFromK: 0,
    waiter: null,
    wake() {
      const w = p.waiter;
      p.waiter = null;
      w?.();
    },
    progress(ms) {
      return new Promise((resolve) => {
        const timer = setTimeout(resolve, ms);
        p.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    },
  };
  return p;
}

async function drain(p, published, ms) {
  const deadline = now() + ms;
  while (p.completed < published && now() < deadline) await p.progress(50);
  return (now() - deadline + ms) / 1000;
}

async function throughput(subs) {
  // Closed loop: keep about `windowSeconds` of deliveries (at the rate seen so
  // far, at least two batches) published but not yet delivered everywhere, so
  // the server always has work but never a backlog that could overflow the
  // layer or outlast the phase; count deliveries/s at the receivers.
  const { batch, windowSeconds, tputSeconds, warmupSeconds } = cfg;
  const p = (phase = newPhase(subs, 1_000_000));
  emit({ event: "phase", name: "throughput", seconds: tputSeconds });
  const t0 = now();
  let first = null;
  setTimeout(() => (first = snapshot()), warmupSeconds * 1000);
  let published = 0;
  let stalled = false;
  let window = 2 * batch;
  const rate = { t: t0, received: totals.received };
  while (now() - t0 < tputSeconds * 1000 && published + batch <= p.counts.length) {
    if (now() - rate.t >= 500) {
      const perSecond = ((totals.received - rate.received) * 1000) / (now() - rate.t);
      window = Math.max(2 * batch, Math.ceil((perSecond * windowSeconds) / subs));
      Object.assign(rate, { t: now(), received: totals.received });
    }
    if (published - p.completed + batch <= window && posts.inFlight < cfg.maxPosts) {
      published += batch;
      publish(batch).finally(() => p.wake());
      continue;
    }
    await p.progress(100);
    if (now() - p.lastProgress > 5000) {
      stalled = true;
      break;
    }
  }
  const last = snapshot();
  // Drain before the next phase, so it does not inherit a backlog.
  const drainSeconds = await drain(p, published, 30_000);
  phase = null;
  if (!first) throw new Error(`throughput phase ended before its warm-up (stalled: ${stalled})`);
  const seconds = (last.t - first.t) / 1000;
  return {
    subscribers: subs,
    seconds,
    deliveries_per_s: (last.received - first.received) / seconds,
    changes_published: published,
    changes_fully_delivered: p.completed,
    duplicates: p.duplicates,
    stalled,
    drain_s: drainSeconds,
    cpu: cpuShares(first, last),
  };
}

function percentile(sorted, expected, q) {
  // Deliveries that never came count as slower than any that did.
  const index = Math.ceil(q * expected) - 1;
  return index < sorted.length ? sorted[Math.max(0, index)] : null;
}

function spread(values) {
  const got = values.filter((v) => !Number.isNaN(v)).sort();
  const at = (q) => (got.length ? got[Math.min(got.length - 1, Math.floor(q * got.length))] : null);
  return { p50: at(0.5), p99: at(0.99), n: got.length };
}

async function latency(subs, rate) {
  // Open loop: publish at `rate` deliveries/s (rate/subs changes/s) on a fixed
  // schedule, whatever the server does, for latSeconds; the first warmupSeconds
  // of changes are not measured.
  const { latSeconds, warmupSeconds, drainSeconds } = cfg;
  const perSecond = rate / subs;
  const tick = Math.max(1000 / perSecond, 20);
  const total = Math.max(1, Math.round(perSecond * latSeconds));
  const p = (phase = newPhase(subs, total));
  p.measureFromK = Math.min(total - 1, Math.round(perSecond * warmupSeconds));
  p.lat = new Float64Array((total - p.measureFromK) * subs);
  p.postMs = [];
  p.first = new Float64Array(total).fill(Number.NaN);
  p.last = new Float64Array(total).fill(Number.NaN);
  emit({ event: "phase", name: "latency", rate, seconds: latSeconds });
  const t0 = now();
  const first = snapshot();
  let published = 0;
  let behind = 0;
  for (let k = 1; published < total && k <= total + 1; k++) {
    const due = Math.min(total, Math.round((perSecond * k * tick) / 1000));
    if (due > published) {
      if (posts.inFlight >= 16) behind++; // the server answers too slowly
      const n = due - published;
      published = due;
      publish(n);
    }
    await sleep(t0 + k * tick - now());
  }
  const publishSeconds = (now() - t0) / 1000;
  const last = snapshot();
  const waited = await drain(p, published, drainSeconds * 1000);
  phase = null;
  const sorted = p.lat.subarray(0, p.latLen).sort();
  const expected = (total - p.measureFromK) * subs;
  const pct = (q) => percentile(sorted, expected, q);
  return {
    subscribers: subs,
    offered_deliveries_per_s: (published * subs) / publishSeconds,
    changes: published,
    measured_deliveries: expected,
    received: p.latLen,
    drain_s: waited,
    drain_bound_s: drainSeconds,
    posts_behind: behind,
    p50_ms: pct(0.5),
    p95_ms: pct(0.95),
    p99_ms: pct(0.99),
    max_ms: p.latLen === expected ? sorted[sorted.length - 1] : null,
    // Per change: publish to its first socket, and to its last one.
    first_socket_ms: spread(p.first.subarray(p.measureFromK)),
    last_socket_ms: spread(p.last.subarray(p.measureFromK)),
    // Publishing itself, until acknowledged (REST: the change is committed).
    publish_ms: spread(Float64Array.from(p.postMs)),
    cpu: cpuShares(first, last),
  };
}

function startHeartbeats(subs) {
  // Every socket beats every 25 s, spread over the period as real clients are:
  // one burst of all of them at once would stall the server for its length.
  const slots = 100;
  let slot = 0;
  return setInterval(() => {
    for (let i = slot; i < subs.length; i += slots) subs[i].heartbeat();
    slot = (slot + 1) % slots;
  }, HEARTBEAT_MS / slots);
}

async function idleMode() {
  const topicOf = cfg.topics === "same" ? () => "realtime:idle" : (i) => `realtime:idle-${i}`;
  const opened = await openAll(cfg.count, topicOf);
  const beats = startHeartbeats(opened.subs);
  emit({ event: "ready", open: opened.subs.length, failed: opened.failed, first_error: opened.firstError, connect_s: opened.seconds });
  const lines = createInterface({ input: process.stdin });
  await Promise.race([new Promise((r) => lines.once("line", r)), sleep(cfg.holdSeconds * 1000)]);
  const stillOpen = opened.subs.filter((s) => s.ws.readyState === WebSocket.OPEN).length;
  clearInterval(beats);
  closeAll(opened.subs);
  emit({ event: "done", still_open: stillOpen, unexpected: totals.unexpected });
  lines.close();
}

async function streamMode() {
  const topicOf = cfg.topics === "distinct" ? (i) => `realtime:bench-${i}` : () => "realtime:bench";
  const opened = await openAll(cfg.count, topicOf);
  const beats = startHeartbeats(opened.subs);
  const subs = opened.subs.length;
  const result = { event: "result", open: subs, failed: opened.failed, first_error: opened.firstError, connect_s: opened.seconds };
  if (subs > 0) {
    await sleep(500); // let the joins settle (group memberships)
    result.throughput = await throughput(subs);
    result.latency = [];
    for (const { label, rate } of cfg.latRates) {
      const r = rate === "half" ? result.throughput.deliveries_per_s / 2 : rate;
      result.latency.push({ label, ...(await latency(subs, r)) });
    }
  }
  clearInterval(beats);
  closeAll(opened.subs);
  publisher?.stdin.end();
  Object.assign(result, { totals, posts: { ok: posts.ok, failed: posts.failed, first_error: posts.firstError } });
  emit(result);
}

const deadline = setTimeout(() => {
  emit({ event: "error", error: `loadgen ran past ${cfg.maxSeconds}s` });
  process.exit(2);
}, cfg.maxSeconds * 1000);

try {
  await (cfg.mode === "idle" ? idleMode() : streamMode());
} catch (e) {
  emit({ event: "error", error: String(e?.stack ?? e) });
  process.exitCode = 1;
}
clearTimeout(deadline);
process.exit();
