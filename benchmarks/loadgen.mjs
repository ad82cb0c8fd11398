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
// argv[2] is a JSON config (see run.py, peers.py, soak.py); results are JSON
// lines on stdout. `ws` is one server URL or a list (sockets are spread over
// them in turn); `protocol` is "phoenix" (Herald, the naive design, the
// ceiling) or "socketio" (Socket.IO 4 spoken over `ws` with the same frame
// scan, so every design costs the generator the same per delivery).
// mode "idle":   open `count` joined sockets, print {"event":"ready"}, hold them
//                (heartbeating) until a line arrives on stdin, then close.
// mode "stream": open `count` sockets on one stream, run the throughput phase,
//                then one latency phase per entry of `latRates`, print results.
// mode "soak":   open `count` sockets over `streams` tables, reconnecting any
//                the server closes; publish `rate` changes/s for `soakSeconds`,
//                print a "tick" every `tickSeconds` (deliveries, frames
//                expected but missing, reconnects, latency), then "done".

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
const URLS = [].concat(cfg.ws);
const SIO = cfg.protocol === "socketio";
const SERVER_PIDS = [].concat(cfg.serverPid ?? []);

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

const totals = {
  received: 0,
  stray: 0,
  invalid: 0,
  invalidSample: null,
  unexpected: 0,
  closedMidRun: 0,
  frameBytes: null, // the size of the first delivery frame, to compare designs
};
let phase = null; // the running throughput or latency phase
let closing = false; // set once the run is over: closes are expected then
let soak = null; // the soak run's per-change counts

function onDelivery(n, t) {
  totals.received++;
  if (soak) return soak.delivered(n, t);
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
  if (SIO) return validateSio(sub, text, n);
  try {
    const raw = JSON.parse(text);
    const m = decode(text);
    const data = m.payload?.data;
    if (m.event !== "postgres_changes") why = `event ${m.event}`;
    else if (m.topic !== sub.topic) why = `topic ${m.topic}`;
    else if (m.ref !== null) why = "ref is not null";
    else if (V2 && raw[0] !== null) why = "join_ref is not null";
    else if (!m.payload.ids?.includes(sub.bindingId)) why = "ids lacks the binding id";
    else if (data?.table !== sub.table || data?.schema !== "public") why = "table";
    else if (data.type !== "INSERT" || data.errors !== null) why = "type/errors";
    else if (!Array.isArray(data.columns) || typeof data.commit_timestamp !== "string")
      why = "columns/commit_timestamp";
    else if (data.record?.bench_n !== n) why = "record";
  } catch (e) {
    why = `not JSON: ${e}`;
  }
  invalid(why, text);
}

function invalid(why, text) {
  if (why) {
    totals.invalid++;
    totals.invalidSample ??= `${why}: ${text.slice(0, 300)}`;
  }
}

function validateSio(sub, text, n) {
  // A Socket.IO event packet in an Engine.IO message: 42["postgres_changes",data]
  let why = null;
  try {
    if (!text.startsWith("42[")) throw new Error("not an event packet");
    const [event, data] = JSON.parse(text.slice(2));
    if (event !== "postgres_changes") why = `event ${event}`;
    else if (data?.table !== sub.table || data?.schema !== "public") why = "table";
    else if (data.type !== "INSERT" || data.errors !== null) why = "type/errors";
    else if (data.record?.bench_n !== n) why = "record";
  } catch (e) {
    why = `not a Socket.IO event: ${e}`;
  }
  invalid(why, text);
}

// ---- one subscriber -------------------------------------------------------------

class Sub {
  constructor(topic, url, table = cfg.table) {
    this.topic = topic;
    this.url = url;
    this.table = table;
    this.ref = 0;
    this.joinRef = null;
    this.bindingId = null;
    this.checked = false;
    this.ws = null;
  }

  open() {
    return new Promise((resolve, reject) => {
      const url = SIO
        ? `${this.url}/socket.io/?EIO=4&transport=websocket`
        : `${this.url}/realtime/v1/websocket?apikey=${encodeURIComponent(cfg.apikey)}&vsn=${cfg.vsn}`;
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
        else {
          this.live = true;
          resolve(this);
        }
      };
      if (!SIO) ws.on("open", () => this.join()); // Socket.IO: once the server says open
      ws.on("message", (data, isBinary) => this.onMessage(data, isBinary));
      ws.on("error", (e) => this.joined?.(e));
      ws.on("close", (code) => {
        if (this.joined) this.joined(new Error(`closed ${code} before join`));
        else if (soak && this.live && !closing) soak.closed(this, code);
        else if (!closing) onSubscriberClosed();
      });
    });
  }

  join() {
    this.joinRef = String(++this.ref);
    const config = {
      broadcast: { ack: false, self: false },
      presence: { key: "", enabled: false },
      postgres_changes: [{ event: "INSERT", schema: "public", table: this.table }],
      private: false,
    };
    this.ws.send(frame(this.joinRef, this.joinRef, this.topic, "phx_join", { config }));
  }

  heartbeat() {
    // Socket.IO's server pings and the client answers (onSioControl).
    if (SIO || this.ws.readyState !== WebSocket.OPEN) return;
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
      totals.frameBytes ??= buf.length;
      validate(this, buf.toString(), n);
    }
  }

  onControl(buf) {
    if (SIO) return this.onSioControl(buf.toString());
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

  onSioControl(text) {
    // Engine.IO 4 packets: 0 open, 2 ping (answered with 3), 4 message; inside a
    // message, Socket.IO 5 packets: 0 connect, 2 event, 3 ack, 4 connect error.
    if (text === "2") this.ws.send("3");
    else if (text[0] === "0") this.ws.send("40"); // open: connect to namespace "/"
    else if (text.startsWith("40")) {
      this.joinRef = String(++this.ref);
      this.ws.send(`42${this.joinRef}${JSON.stringify(["join", this.topic])}`);
    } else if (text.startsWith(`43${this.joinRef}[`)) {
      const ok = JSON.parse(text.slice(2 + this.joinRef.length))[0]?.status === "ok";
      this.joined?.(ok ? null : new Error(`join refused: ${text.slice(0, 200)}`));
    } else if (text.startsWith("44")) {
      this.joined?.(new Error(`connect refused: ${text.slice(0, 200)}`));
    } else {
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
      const i = next++;
      const sub = new Sub(topicOf(i), URLS[i % URLS.length]);
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
if (cfg.publish !== "rest" && cfg.mode !== "idle") {
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

const PUBLISH_URLS = [].concat(cfg.publishHttp ?? []);
let publishes = 0;

function send(records, table = cfg.table) {
  if (publisher) {
    // A list of records for the default table, or {table, records}.
    const line = table === cfg.table ? records : { table, records };
    return new Promise((resolve) => {
      acks.push(resolve);
      publisher.stdin.write(`${JSON.stringify(line)}\n`);
    });
  }
  const items = records.map((record) => ({ table, type: "INSERT", record }));
  // Spread over the servers in turn, as a load balancer would.
  const url = PUBLISH_URLS[publishes++ % PUBLISH_URLS.length];
  return fetch(`${url}/api/changes`, {
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
  if (Array.isArray(pid)) {
    // Several server processes: their sum.
    const each = pid.map(cpuSeconds);
    return each.length && each.every((v) => v !== null) ? each.reduce((a, b) => a + b, 0) : null;
  }
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
    server: cpuSeconds(SERVER_PIDS),
    publisher: SERVER_PIDS.includes(cfg.publisherPid) ? null : cpuSeconds(cfg.publisherPid),
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

// ---- soak ------------------------------------------------------------------------------

class Soak {
  // Per change: how many sockets of its stream were joined when it was
  // published (expected) and how many got it; a change settles `settleMs`
  // after its publish, and whatever it still lacks then counts as missing.
  constructor(capacity) {
    this.expected = new Int32Array(capacity);
    this.got = new Int32Array(capacity);
    this.publishedAt = new Float64Array(capacity);
    this.joined = new Int32Array(cfg.streams); // joined sockets per stream
    this.settled = 0; // changes [0, settled) are settled
    this.missing = 0;
    this.extra = 0; // frames beyond the expected count (a socket that joined late)
    this.reconnects = 0;
    this.reconnectFailures = 0;
    this.firstCloseCode = null;
    this.lat = new Float64Array(2_000_000); // this tick's latencies (ms), capped
    this.latLen = 0;
    this.settleMs = cfg.settleSeconds * 1000;
    this.postMs = []; // this tick's publish times, until acknowledged
  }

  delivered(n, t) {
    if (n < 0 || n >= nextN) return void totals.stray++;
    if (++this.got[n] > this.expected[n]) this.extra++;
    if (this.latLen < this.lat.length) this.lat[this.latLen++] = now() - t / 1000;
  }

  published(n, stream) {
    this.expected[n] = this.joined[stream];
    this.publishedAt[n] = now();
  }

  settle(all = false) {
    const before = now() - this.settleMs;
    while (this.settled < nextN && (all || this.publishedAt[this.settled] < before)) {
      const n = this.settled++;
      this.missing += Math.max(0, this.expected[n] - this.got[n]);
    }
  }

  closed(sub, code) {
    // The server closed a joined socket: count it, and open it again.
    this.joined[sub.stream]--;
    this.firstCloseCode ??= code;
    this.retry(sub);
  }

  retry(sub) {
    if (closing || sub.reconnects >= cfg.maxReconnects) return;
    sub.reconnects++;
    this.reconnects++;
    setTimeout(() => this.reopen(sub), 500 + Math.random() * 1000);
  }

  async reopen(sub) {
    if (closing) return;
    const again = new Sub(sub.topic, sub.url, sub.table);
    Object.assign(again, { stream: sub.stream, index: sub.index, reconnects: sub.reconnects });
    soakSubs[sub.index] = again;
    try {
      await again.open();
      this.joined[again.stream]++;
    } catch {
      this.reconnectFailures++;
      again.ws?.terminate();
      this.retry(again);
    }
  }

  percentiles() {
    const sorted = this.lat.subarray(0, this.latLen).sort();
    const at = (q) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] : null);
    const out = { p50_ms: at(0.5), p99_ms: at(0.99), max_ms: sorted.length ? sorted[sorted.length - 1] : null };
    this.latLen = 0;
    out.publish_ms = spread(Float64Array.from(this.postMs));
    this.postMs = [];
    return out;
  }
}

let soakSubs = [];

async function soakMode() {
  const { streams, rate, soakSeconds, tickSeconds } = cfg;
  const tableOf = (s) => `${cfg.table}${s}`;
  soak = new Soak(Math.ceil(rate * (soakSeconds + 60)) + 1000);
  // Opened as openAll does, each socket knowing its stream and its slot.
  const errors = [];
  let next = 0;
  const started = now();
  async function worker() {
    while (next < cfg.count) {
      const i = next++;
      const stream = i % streams;
      const sub = new Sub(`realtime:soak-${stream}`, URLS[i % URLS.length], tableOf(stream));
      Object.assign(sub, { stream, index: i, reconnects: 0 });
      soakSubs[i] = sub;
      try {
        await sub.open();
        soak.joined[stream]++;
      } catch (e) {
        errors.push(String(e));
      }
    }
  }
  await Promise.all(Array.from({ length: cfg.connectConcurrency ?? 64 }, worker));
  const joinedAll = soak.joined.reduce((a, b) => a + b, 0);
  emit({ event: "ready", open: joinedAll, failed: errors.length, first_error: errors[0] ?? null, connect_s: (now() - started) / 1000 });
  const beats = setInterval(() => {
    // Every socket beats every 25 s, spread over the period (see startHeartbeats).
    const slot = beats.slot = ((beats.slot ?? -1) + 1) % 100;
    for (let i = slot; i < soakSubs.length; i += 100) if (soakSubs[i]?.live) soakSubs[i].heartbeat();
  }, HEARTBEAT_MS / 100);

  // Steady publishing: `rate` changes a second, one stream after the other, on
  // a fixed 50 ms schedule whatever the server does (open loop).
  const t0 = now();
  const tick = 50;
  const total = Math.round(rate * soakSeconds);
  let last = { t: t0, received: totals.received, published: 0 };
  let nextTick = t0 + tickSeconds * 1000;
  const failed = { count: 0, first: null };
  for (let k = 1; nextN < total && k <= total * 20 + 1; k++) {
    const due = Math.min(total, Math.round((rate * k * tick) / 1000));
    while (nextN < due) {
      const n = nextN++;
      const stream = n % streams;
      soak.published(n, stream);
      const record = { id: n, bench_n: n, bench_t: Math.round(now() * 1000), site_id: 42, status: "published", body: PAD };
      posts.inFlight++;
      const sent = now();
      send([record], tableOf(stream))
        .then(() => {
          posts.ok++;
          soak.postMs.push(now() - sent);
        }, (e) => {
          posts.failed++;
          posts.firstError ??= String(e);
        })
        .finally(() => posts.inFlight--);
    }
    if (now() >= nextTick) {
      soakTick(last, "tick");
      last = { t: now(), received: totals.received, published: nextN };
      nextTick += tickSeconds * 1000;
    }
    await sleep(t0 + k * tick - now());
  }
  // Let the last changes arrive, then settle everything.
  await sleep(soak.settleMs);
  soakTick(last, "done", true);
  // Hold the sockets until the caller has read the servers (or a minute).
  const lines = createInterface({ input: process.stdin });
  await Promise.race([new Promise((r) => lines.once("line", r)), sleep(60_000)]);
  lines.close();
  clearInterval(beats);
  closeAll(soakSubs.filter((s) => s?.ws));
  publisher?.stdin.end();
}

function soakTick(last, event, all = false) {
  soak.settle(all);
  const t = now();
  const open = soakSubs.filter((s) => s?.ws?.readyState === WebSocket.OPEN).length;
  emit({
    event,
    seconds: (t - last.t) / 1000,
    open,
    joined: soak.joined.reduce((a, b) => a + b, 0),
    published: nextN,
    published_in_tick: nextN - last.published,
    received: totals.received,
    deliveries_per_s: ((totals.received - last.received) * 1000) / (t - last.t),
    missing: soak.missing,
    settled: soak.settled,
    extra: soak.extra,
    reconnects: soak.reconnects,
    reconnect_failures: soak.reconnectFailures,
    first_close_code: soak.firstCloseCode,
    posts: { ok: posts.ok, failed: posts.failed, in_flight: posts.inFlight, first_error: posts.firstError },
    invalid: totals.invalid,
    invalid_sample: totals.invalidSample,
    unexpected: totals.unexpected,
    ...soak.percentiles(),
  });
}

const deadline = setTimeout(() => {
  emit({ event: "error", error: `loadgen ran past ${cfg.maxSeconds}s` });
  process.exit(2);
}, cfg.maxSeconds * 1000);

try {
  const modes = { idle: idleMode, stream: streamMode, soak: soakMode };
  await modes[cfg.mode]();
} catch (e) {
  emit({ event: "error", error: String(e?.stack ?? e) });
  process.exitCode = 1;
}
clearTimeout(deadline);
process.exit();
