// Load generator for `make bench`; benchmarks/run.py starts it once per workload.
//
// The main thread publishes and keeps the clock; in stream mode the sockets
// (ws, no compression) are split over `generators` worker threads, each taking
// every generators-th socket, so that no thread of the generator nears a full
// core and the figures are the server's (each thread's CPU share is reported).
// Each record carries `bench_t`, its publish time in µs, so the receive time
// minus it is the publish-to-receive latency. Changes go through
// benchmarks/publisher.py straight to the channel layer (`publish: "layer"`) or
// with POST /api/changes (`"rest"`). Frames are counted by scanning their bytes
// for `bench_n`/`bench_t`/`seq` instead of JSON-parsing every one (the first
// frame of each socket is checked in full). Per-change delivery counts live in
// shared memory (the closed loop reads them); every loop is bounded in count
// and time.
//
// Per-socket verification: every socket records the cursor (`data.seq`) of
// each change it receives; the publisher records each change's cursor, its
// group (the site it belongs to) and its publish time. A socket of group g
// (or of none: every change) must receive exactly the changes of g published
// after its join and before it closed, each once, in increasing cursor order:
// missing, extra, duplicate, out-of-order and wrong-cursor frames are counted
// per socket, never netted out across sockets.
//
// argv[2] is a JSON config, or the path of a file holding it (see run.py,
// peers.py, soak.py); results are JSON lines on stdout. `ws` is one server URL
// or a list (sockets are spread over them in turn); `protocol` is "phoenix"
// (Herald, the naive design, the ceiling) or "socketio" (Socket.IO 4 spoken
// over `ws` with the same frame scan, so every design costs the generator the
// same per delivery). With `tokens` (one per socket), socket i joins with its
// own user token as `access_token`; with `sites`, socket i belongs to site
// i mod sites (and, with `filterColumn`, binds `column=eq.site`), and change n
// to site n mod sites.
// mode "idle":   open `count` joined sockets, print {"event":"ready"}, hold them
//                (heartbeating) until a line arrives on stdin, then close.
// mode "stream": open `count` sockets on one stream, run the throughput phase
//                (unless `tputSeconds` is 0), then one latency phase per entry
//                of `latRates`, verify every socket, print results.
// mode "soak":   open `count` sockets over `streams` tables, reconnecting any
//                the server closes; publish `rate` changes/s for `soakSeconds`,
//                print a "tick" every `tickSeconds` (deliveries, per-socket
//                verification of the changes settled so far, reconnects,
//                latency), then "done". One process: its rate is low.

import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { Worker, isMainThread, parentPort, workerData } from "node:worker_threads";
import WebSocket from "ws";

function loadConfig(arg) {
  return JSON.parse(arg.trimStart().startsWith("{") ? arg : readFileSync(arg, "utf8"));
}

const cfg = isMainThread ? loadConfig(process.argv[2]) : workerData.cfg;
const V2 = cfg.vsn.startsWith("2.");
const KEY_N = Buffer.from('"bench_n":');
const KEY_T = Buffer.from('"bench_t":');
const KEY_S = Buffer.from('"seq":');
const HEARTBEAT_MS = 25_000; // realtime-js's interval
const JOIN_TIMEOUT_MS = 20_000;
const PAD = "x".repeat(cfg.padBytes ?? 120);
const URLS = [].concat(cfg.ws);
const SIO = cfg.protocol === "socketio";
const SERVER_PIDS = [].concat(cfg.serverPid ?? []);
const SITES = cfg.sites ?? 0; // 0: every change goes to every socket
const FIXED_SITE = 42; // the site of every change when there are no sites

const now = () => performance.timeOrigin + performance.now(); // ms, fractional
const sleep = (ms) => new Promise((r) => setTimeout(r, Math.max(0, ms)));
const emit = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);
const siteOfSocket = (i) => (SITES ? i % SITES : null);
const siteOfChange = (n) => (SITES ? n % SITES : FIXED_SITE);

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

// ---- counters of this thread's sockets ----------------------------------------

const totals = {
  received: 0,
  stray: 0,
  invalid: 0,
  invalidSample: null,
  unexpected: 0,
  closedMidRun: 0,
  frameBytes: null, // the size of the first delivery frame, to compare designs
};
let closing = false; // set once the run is over: closes are expected then
let soak = null; // the soak run's state
let shared = null; // stream mode: the phase counters, shared by every thread

// Shared memory of stream mode. ctrl: the running phase, as the workers read it.
const C_ON = 0; // 1 while a phase counts deliveries
const C_NBASE = 1; // the first change of the phase
const C_CAP = 2; // changes the phase may publish
const C_LAT = 3; // 1: record latencies from change C_FROM on
const C_FROM = 4;
const C_LATLEN = 5;
const C_RECEIVED = 6; // deliveries, every thread, whole run
const C_STRAY = 7;
const PHASE_CAP = 1_000_000;
const LAT_CAP = 4_000_000;

function sharedMemory() {
  const i32 = (n) => new Int32Array(new SharedArrayBuffer(4 * n));
  const f64 = (n) => new Float64Array(new SharedArrayBuffer(8 * n));
  return {
    ctrl: i32(16),
    counts: i32(PHASE_CAP), // per change of the phase: deliveries so far
    expected: i32(PHASE_CAP), // per change: sockets due it (set before publishing)
    first: f64(PHASE_CAP), // per change: ms to its first socket
    last: f64(PHASE_CAP), // ms to its last due socket
    lat: f64(LAT_CAP), // every measured delivery's ms
  };
}

function onDelivery(sub, n, t, seq) {
  totals.received++;
  sub.record(n, seq);
  if (soak) return soak.delivered(n, t);
  if (!shared) return;
  const { ctrl, counts, expected, first, last, lat } = shared;
  Atomics.add(ctrl, C_RECEIVED, 1);
  const k = n - Atomics.load(ctrl, C_NBASE);
  if (!Atomics.load(ctrl, C_ON) || k < 0 || k >= Atomics.load(ctrl, C_CAP)) {
    Atomics.add(ctrl, C_STRAY, 1); // a late frame of an earlier phase
    return;
  }
  const c = Atomics.add(counts, k, 1) + 1;
  if (Atomics.load(ctrl, C_LAT) && k >= Atomics.load(ctrl, C_FROM)) {
    const ms = now() - t / 1000;
    const i = Atomics.add(ctrl, C_LATLEN, 1);
    if (i < lat.length) lat[i] = ms;
    if (c === 1) first[k] = ms;
    if (c === Atomics.load(expected, k)) last[k] = ms;
  }
}

// ---- per-socket verification ------------------------------------------------------

const verdict = {
  sockets: 0, // sockets checked
  bad_sockets: 0, // sockets with any of the below
  missing: 0, // due, never received
  extra: 0, // received, not due (another site's, or published before the join)
  duplicates: 0, // received more than once
  out_of_order: 0, // received after a change of a greater cursor
  wrong_seq: 0, // received with another cursor than the publisher's
  late: 0, // soak: arrived after the change was settled (counted missing then)
};

const badSubs = []; // the first few sockets found wrong, to describe them

function badSocket(sub, kind, count = 1) {
  verdict[kind] += count;
  sub.faults[kind] = (sub.faults[kind] ?? 0) + count;
  if (!sub.bad) {
    sub.bad = true;
    verdict.bad_sockets++;
    if (badSubs.length < 5) badSubs.push(sub);
  }
}

function describeBad(firstJoin) {
  // Which sockets, joined when (ms after this thread's first join), and how.
  return badSubs.map((sub) => ({
    socket: sub.index,
    site: sub.site,
    joined_ms: Math.round(sub.joinedAt - firstJoin),
    ...sub.faults,
  }));
}

class Changes {
  // The publisher's log: per change n, its cursor (-1 while unknown, -2 when
  // its publish failed: nobody is due it), its site, its publish time.
  constructor(capacity) {
    this.seq = new Float64Array(capacity).fill(-1);
    this.site = new Int32Array(capacity);
    this.at = new Float64Array(capacity);
  }
}

// Verify sockets against changes [from, to) of the log; `subsBySite` maps a
// site (or "all") to the sockets due its changes. Each socket's pending frames
// of those changes are consumed: what is left over afterwards is extra.
function settleChanges(log, from, to, subsBySite) {
  for (let n = from; n < to; n++) {
    const seq = log.seq[n];
    const at = log.at[n];
    for (const group of [subsBySite.get("all"), subsBySite.get(log.site[n])]) {
      for (const sub of group ?? []) {
        const got = sub.pending.get(n);
        if (got !== undefined) sub.pending.delete(n);
        const due = seq !== -2 && sub.joinedAt <= at && at < sub.closedAt;
        // Published while the join was on its way: it may come or not.
        const optional = sub.joinSentAt <= at && at < sub.joinedAt;
        if (got === undefined) {
          if (due) badSocket(sub, "missing");
        } else if (!due && !optional) badSocket(sub, "extra");
        else if (seq >= 0 && got !== seq) badSocket(sub, "wrong_seq");
      }
    }
  }
}

function leftovers(subs, settledBelow) {
  // Frames of changes no settled range claimed (another site's; unknown n).
  for (const sub of subs) {
    for (const n of sub.pending.keys()) {
      if (n < settledBelow) {
        sub.pending.delete(n);
        badSocket(sub, "extra");
      }
    }
  }
}

function bySite(subs) {
  const map = new Map();
  for (const sub of subs) {
    const key = sub.site === null ? "all" : sub.site;
    if (!map.has(key)) map.set(key, []);
    map.get(key).push(sub);
  }
  return map;
}

function validate(sub, text, n) {
  // The first delivery of each socket is checked against docs/protocol.md §5 in full.
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
  constructor(topic, url, { table = cfg.table, site = null, token = null } = {}) {
    this.topic = topic;
    this.url = url;
    this.table = table;
    this.site = site; // null: due every change of the table
    this.token = token;
    this.ref = 0;
    this.joinRef = null;
    this.bindingId = null;
    this.checked = false;
    this.ws = null;
    // Verification: frames received, by change (n → cursor), not yet settled.
    this.pending = new Map();
    this.lastSeq = -1;
    this.bad = false;
    this.faults = {};
    this.index = null;
    this.joinSentAt = Infinity;
    this.joinedAt = Infinity;
    this.closedAt = Infinity;
  }

  record(n, seq) {
    if (this.pending.has(n)) return badSocket(this, "duplicates");
    if (soak && n < soak.settled) return badSocket(this, "late");
    if (seq < this.lastSeq) badSocket(this, "out_of_order");
    else this.lastSeq = seq;
    this.pending.set(n, seq);
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
          this.joinedAt = now();
          resolve(this);
        }
      };
      if (!SIO) ws.on("open", () => this.join()); // Socket.IO: once the server says open
      ws.on("message", (data, isBinary) => this.onMessage(data, isBinary));
      ws.on("error", (e) => this.joined?.(e));
      ws.on("close", (code) => {
        if (this.joined) return this.joined(new Error(`closed ${code} before join`));
        if (closing) return;
        this.closedAt = now();
        if (soak && this.live) soak.closed(this, code);
        else onSubscriberClosed(this);
      });
    });
  }

  join() {
    this.joinRef = String(++this.ref);
    const binding = { event: "INSERT", schema: "public", table: this.table };
    if (cfg.filterColumn && this.site !== null) binding.filter = `${cfg.filterColumn}=eq.${this.site}`;
    const config = {
      broadcast: { ack: false, self: false },
      presence: { key: "", enabled: false },
      postgres_changes: [binding],
      private: false,
    };
    const payload = this.token ? { config, access_token: this.token } : { config };
    this.joinSentAt = now();
    this.ws.send(frame(this.joinRef, this.joinRef, this.topic, "phx_join", payload));
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
    const s = buf.indexOf(KEY_S);
    onDelivery(this, n, t, s === -1 ? -1 : readInt(buf, s + KEY_S.length));
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


async function openAll(indices, topicOf, concurrency = cfg.connectConcurrency ?? 64) {
  const subs = [];
  const errors = [];
  let next = 0;
  const started = now();
  async function worker() {
    while (next < indices.length) {
      const i = indices[next++];
      const sub = new Sub(topicOf(i), URLS[i % URLS.length], { site: siteOfSocket(i), token: cfg.tokens?.[i] ?? null });
      sub.index = i;
      try {
        subs.push(await sub.open());
      } catch (e) {
        errors.push(String(e));
      }
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, concurrency) }, worker));
  return { subs, failed: errors.length, firstError: errors[0] ?? null, seconds: (now() - started) / 1000 };
}

function closeAll(subs) {
  closing = true;
  for (const sub of subs) sub.ws.terminate();
}

const range = (count) => Array.from({ length: count }, (_, i) => i);

// ---- publishing (main thread) -------------------------------------------------------

let nextN = 0;
let log = null; // the publisher's Changes
const posts = { ok: 0, failed: 0, firstError: null, inFlight: 0 };

// With `publish: "layer"`, changes go through benchmarks/publisher.py (straight to
// the channel layer, no database); otherwise POST /api/changes to the server.
const acks = [];
let publisher = null;
if (isMainThread && cfg.publish !== "rest" && cfg.mode !== "idle") {
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

// Resolves to the changes' cursors when the server says them (REST), else null.
function send(records, table = cfg.table) {
  if (publisher) {
    // A list of records for the default table, or {table, records}.
    const line = table === cfg.table ? records : { table, records };
    return new Promise((resolve) => {
      acks.push(() => resolve(null));
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
    return JSON.parse(body).changes.map((c) => c.seq);
  });
}

// Publish `k` changes at once (one publish); `site` picks each change's site,
// and `due` is told each change before it is sent.
async function publish(k, { table = cfg.table, site = siteOfChange, due = null, postMs = null } = {}) {
  const t = Math.round(now() * 1000);
  const records = [];
  const from = nextN;
  for (let i = 0; i < k; i++) {
    const n = nextN++;
    const s = site(n);
    log.site[n] = s;
    log.at[n] = now();
    // The layer publishers use bench_n + 1 as the cursor; REST's is the database's.
    log.seq[n] = cfg.publish === "rest" ? -1 : n + 1;
    due?.(n, s);
    records.push({ id: n, bench_n: n, bench_t: t, site_id: SITES ? s : FIXED_SITE, status: "published", body: PAD });
  }
  posts.inFlight++;
  try {
    const seqs = await send(records, table);
    if (seqs) seqs.forEach((seq, i) => (log.seq[from + i] = seq ?? -2));
    postMs?.push(now() - t / 1000);
    posts.ok++;
  } catch (e) {
    for (let n = from; n < from + k; n++) log.seq[n] = -2; // nobody is due it
    posts.failed++;
    posts.firstError ??= String(e);
  } finally {
    posts.inFlight--;
  }
}

// ---- CPU accounting, to show who is busy --------------------------------------------

function statSeconds(path) {
  try {
    const stat = readFileSync(path, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / cfg.clockTicks;
  } catch {
    return null;
  }
}

function cpuSeconds(pid) {
  if (Array.isArray(pid)) {
    // Several server processes: their sum.
    const each = pid.map(cpuSeconds);
    return each.length && each.every((v) => v !== null) ? each.reduce((a, b) => a + b, 0) : null;
  }
  return pid ? statSeconds(`/proc/${pid}/stat`) : null;
}

function machineBusySeconds() {
  // Every core's non-idle time, to show what else ran during a phase.
  const [, ...ticks] = readFileSync("/proc/stat", "utf8").split("\n", 1)[0].trim().split(/\s+/);
  const [user, nice, system, , , irq, softirq, steal] = ticks.map(Number);
  return (user + nice + system + irq + softirq + (steal || 0)) / cfg.clockTicks;
}

// The generator's threads: the main one (publishing) and each socket worker.
let generatorThreads = [];

function snapshot() {
  const own = process.cpuUsage();
  return {
    machine: machineBusySeconds(),
    t: now(),
    received: shared ? Atomics.load(shared.ctrl, C_RECEIVED) : totals.received,
    server: cpuSeconds(SERVER_PIDS),
    publisher: SERVER_PIDS.includes(cfg.publisherPid) ? null : cpuSeconds(cfg.publisherPid),
    redis: cpuSeconds(cfg.redisPid),
    loadgen: (own.user + own.system) / 1e6,
    threads: generatorThreads.map((t) => statSeconds(`/proc/${process.pid}/task/${t.tid}/stat`)),
  };
}

function cpuShares(a, b) {
  // Share of one core each process used between two snapshots.
  const per = (x, y) => (x === null || y === null ? null : (y - x) / ((b.t - a.t) / 1000));
  const share = (key) => per(a[key], b[key]);
  const shares = { server: share("server"), publisher: share("publisher"), redis: share("redis"), loadgen: share("loadgen") };
  // The rest: PostgreSQL, the kernel's softirqs, and anything else on the machine.
  shares.other = share("machine") - Object.values(shares).reduce((sum, v) => sum + (v ?? 0), 0);
  return shares;
}

function threadShares(a, b) {
  // Per generator thread (main first), share of one core between two snapshots.
  return generatorThreads.map((t, i) => ({
    name: t.name,
    share: a.threads[i] === null || b.threads[i] === null ? null : (b.threads[i] - a.threads[i]) / ((b.t - a.t) / 1000),
  }));
}

// ---- stream mode: phases (main thread) ---------------------------------------------------

const open = { all: 0, bySite: new Map(), closedMidRun: 0 };

function dueCount(site) {
  return open.all + (open.bySite.get(site) ?? 0);
}

function fanOut() {
  // Sockets due a change, on average over the sites.
  if (!SITES) return open.all;
  let sum = 0;
  for (const v of open.bySite.values()) sum += v;
  return open.all + sum / SITES;
}

let phase = null;

function newPhase(capacity, latFrom = null) {
  const { ctrl, counts, expected, first, last } = shared;
  const cap = Math.min(capacity, PHASE_CAP, log.at.length - nextN);
  Atomics.store(ctrl, C_ON, 0);
  counts.fill(0, 0, cap);
  expected.fill(0, 0, cap);
  first.fill(Number.NaN, 0, cap);
  last.fill(Number.NaN, 0, cap);
  Atomics.store(ctrl, C_NBASE, nextN);
  Atomics.store(ctrl, C_CAP, cap);
  Atomics.store(ctrl, C_LAT, latFrom === null ? 0 : 1);
  Atomics.store(ctrl, C_FROM, latFrom ?? 0);
  Atomics.store(ctrl, C_LATLEN, 0);
  Atomics.store(ctrl, C_ON, 1);
  const p = {
    nBase: nextN,
    cap,
    done: new Uint8Array(cap),
    completed: 0,
    lowest: 0,
    lastProgress: now(),
    postMs: [],
    due: (n, site) => Atomics.store(expected, n - p.nBase, dueCount(site)),
  };
  return (phase = p);
}

function endPhase() {
  Atomics.store(shared.ctrl, C_ON, 0);
  phase = null;
}

function scan(p) {
  // Changes every due socket has: complete.
  const { counts, expected } = shared;
  const top = nextN - p.nBase;
  for (let k = p.lowest; k < top; k++) {
    if (!p.done[k] && Atomics.load(counts, k) >= Atomics.load(expected, k)) {
      p.done[k] = 1;
      p.completed++;
      p.lastProgress = now();
    }
  }
  while (p.lowest < top && p.done[p.lowest]) p.lowest++;
}

async function progress(p, ms) {
  await sleep(Math.min(ms, 5));
  scan(p);
}

function onWorkerSocketClosed(site) {
  // A change is complete once every socket still open has it: without this, one
  // socket the server closed would stall the closed loop.
  open.closedMidRun++;
  if (site === null) open.all--;
  else open.bySite.set(site, (open.bySite.get(site) ?? 1) - 1);
  const p = phase;
  if (!p) return;
  for (let k = p.lowest; k < nextN - p.nBase; k++) {
    if (!p.done[k] && (site === null || log.site[p.nBase + k] === site)) Atomics.sub(shared.expected, k, 1);
  }
}

function onSubscriberClosed(sub) {
  totals.closedMidRun++;
  if (!isMainThread) parentPort.postMessage({ event: "closed", site: sub.site });
}

async function drain(p, published, ms) {
  const deadline = now() + ms;
  scan(p);
  while (p.completed < published && now() < deadline) await progress(p, 50);
  return (now() - deadline + ms) / 1000;
}

async function throughput(subs) {
  // Closed loop: keep about `windowSeconds` of deliveries (at the rate seen so
  // far, at least two batches) published but not yet delivered everywhere, so
  // the server always has work but never a backlog that could overflow the
  // layer or outlast the phase; count deliveries/s at the receivers.
  const { batch, windowSeconds, tputSeconds, warmupSeconds } = cfg;
  const p = newPhase(PHASE_CAP);
  emit({ event: "phase", name: "throughput", seconds: tputSeconds });
  const t0 = now();
  let first = null;
  setTimeout(() => (first = snapshot()), warmupSeconds * 1000);
  let published = 0;
  let stalled = false;
  let window = 2 * batch;
  const received = () => Atomics.load(shared.ctrl, C_RECEIVED);
  const rate = { t: t0, received: received() };
  while (now() - t0 < tputSeconds * 1000 && published + batch <= p.cap) {
    if (now() - rate.t >= 500) {
      const perSecond = ((received() - rate.received) * 1000) / (now() - rate.t);
      window = Math.max(2 * batch, Math.ceil((perSecond * windowSeconds) / Math.max(1, fanOut())));
      Object.assign(rate, { t: now(), received: received() });
    }
    scan(p);
    if (published - p.completed + batch <= window && posts.inFlight < cfg.maxPosts) {
      published += batch;
      publish(batch, { due: p.due });
      continue;
    }
    await progress(p, 100);
    if (now() - p.lastProgress > 5000) {
      stalled = true;
      break;
    }
  }
  const last = snapshot();
  // Drain before the next phase, so it does not inherit a backlog.
  const drainSeconds = await drain(p, published, 30_000);
  endPhase();
  if (!first) throw new Error(`throughput phase ended before its warm-up (stalled: ${stalled})`);
  const seconds = (last.t - first.t) / 1000;
  return {
    subscribers: subs,
    fan_out: fanOut(),
    seconds,
    deliveries_per_s: (last.received - first.received) / seconds,
    changes_published: published,
    changes_fully_delivered: p.completed,
    stalled,
    drain_s: drainSeconds,
    cpu: cpuShares(first, last),
    generator_threads: threadShares(first, last),
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
  // Open loop: publish at `rate` deliveries/s (rate/fan-out changes/s) on a
  // fixed schedule, whatever the server does, for
  // latSeconds; the first warmupSeconds of changes are not measured.
  const { latSeconds, warmupSeconds, drainSeconds } = cfg;
  const perSecond = rate / Math.max(1, fanOut());
  const tick = Math.max(1000 / perSecond, 20);
  const total = Math.max(1, Math.min(PHASE_CAP, Math.round(perSecond * latSeconds)));
  const measureFromK = Math.min(total - 1, Math.round(perSecond * warmupSeconds));
  const p = newPhase(total, measureFromK);
  emit({ event: "phase", name: "latency", rate, seconds: latSeconds });
  const t0 = now();
  const first = snapshot();
  let published = 0;
  let behind = 0;
  for (let k = 1; published < p.cap && k <= p.cap + 1; k++) {
    const due = Math.min(p.cap, Math.round((perSecond * k * tick) / 1000));
    // The changes due in one tick go out as one publish, or (batch 1: one
    // change per publish, as an application saving rows publishes) one each.
    while (published < due) {
      if (posts.inFlight >= 16) behind++; // the server answers too slowly
      const n = cfg.batch === 1 ? 1 : due - published;
      published += n;
      publish(n, { due: p.due, postMs: p.postMs });
    }
    await sleep(t0 + k * tick - now());
  }
  const publishSeconds = (now() - t0) / 1000;
  const last = snapshot();
  // The drain bound counts from the last publish acknowledged (a slow
  // publisher would otherwise eat it), at most a minute later.
  const acked = now() + 60_000;
  while (posts.inFlight > 0 && now() < acked) await progress(p, 20);
  const waited = await drain(p, published, drainSeconds * 1000);
  endPhase();
  const { expected, first: firsts, last: lasts, lat, ctrl } = shared;
  const latLen = Math.min(Atomics.load(ctrl, C_LATLEN), lat.length);
  const sorted = Float64Array.from(lat.subarray(0, latLen)).sort();
  let measured = 0;
  for (let k = measureFromK; k < published; k++) measured += Atomics.load(expected, k);
  const pct = (q) => percentile(sorted, measured, q);
  let offered = 0;
  for (let k = 0; k < published; k++) offered += Atomics.load(expected, k);
  return {
    subscribers: subs,
    fan_out: fanOut(),
    offered_deliveries_per_s: offered / publishSeconds,
    changes: published,
    measured_deliveries: measured,
    received: latLen,
    drain_s: waited,
    drain_bound_s: drainSeconds,
    posts_behind: behind,
    p50_ms: pct(0.5),
    p95_ms: pct(0.95),
    p99_ms: pct(0.99),
    max_ms: latLen === measured && latLen ? sorted[sorted.length - 1] : null,
    // Per change: publish to its first socket, and to its last one.
    first_socket_ms: spread(Float64Array.from(firsts.subarray(measureFromK, published))),
    last_socket_ms: spread(Float64Array.from(lasts.subarray(measureFromK, published))),
    // Publishing itself, until acknowledged (REST: the change is committed).
    publish_ms: spread(Float64Array.from(p.postMs)),
    cpu: cpuShares(first, last),
    generator_threads: threadShares(first, last),
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
  const opened = await openAll(range(cfg.count), topicOf);
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

const streamTopic = (i) => (cfg.topics === "distinct" ? `realtime:bench-${i}` : "realtime:bench");
const LOG_CAP = 2_000_000;

function sharedChanges(capacity) {
  const log = new Changes(0);
  log.seq = new Float64Array(new SharedArrayBuffer(8 * capacity)).fill(-1);
  log.site = new Int32Array(new SharedArrayBuffer(4 * capacity));
  log.at = new Float64Array(new SharedArrayBuffer(8 * capacity));
  return log;
}

class Generator {
  // One worker thread holding every `of`-th socket from `index` on.
  constructor(index, of) {
    this.name = `sockets ${index + 1}/${of}`;
    this.worker = new Worker(fileURLToPath(import.meta.url), {
      workerData: { cfg, index, of, shared, log: { seq: log.seq, site: log.site, at: log.at } },
    });
    this.waiting = new Map(); // event → resolve
    this.worker.on("message", (m) => {
      if (m.event === "closed") return onWorkerSocketClosed(m.site);
      const resolve = this.waiting.get(m.event);
      this.waiting.delete(m.event);
      resolve?.(m);
    });
    this.worker.on("error", (e) => {
      emit({ event: "error", error: `${this.name}: ${e?.stack ?? e}` });
      process.exit(2);
    });
  }

  next(event, cmd = null) {
    const reply = new Promise((resolve) => this.waiting.set(event, resolve));
    if (cmd) this.worker.postMessage(cmd);
    return reply;
  }
}

async function streamMode() {
  shared = sharedMemory();
  log = sharedChanges(LOG_CAP);
  const count = Math.max(1, Math.min(cfg.generators ?? 1, cfg.count));
  const gens = [new Generator(0, count)];
  // `prime`: socket 0 joins alone, before any other (see workerMain).
  if (cfg.prime) await gens[0].next("primed");
  for (let i = 1; i < count; i++) gens.push(new Generator(i, count));
  const ready = await Promise.all(gens.map((g) => g.next("ready")));
  generatorThreads = [{ name: "main (publishing)", tid: process.pid }, ...gens.map((g, i) => ({ name: g.name, tid: ready[i].tid }))];
  for (const r of ready) {
    open.all += r.all;
    for (const [site, n] of r.bySite) open.bySite.set(site, (open.bySite.get(site) ?? 0) + n);
  }
  const subs = ready.reduce((a, r) => a + r.open, 0);
  const failed = ready.reduce((a, r) => a + r.failed, 0);
  const result = {
    event: "result",
    open: subs,
    failed,
    first_error: ready.find((r) => r.first_error)?.first_error ?? null,
    connect_s: Math.max(...ready.map((r) => r.connect_s)),
    generators: count,
    sites: SITES,
    fan_out: fanOut(),
  };
  if (subs > 0) {
    await sleep(500); // let the joins settle (group memberships)
    // Warm-up publishes, one after the other (REST: the first requests of a
    // fresh process are slow); unmeasured, still verified.
    for (let i = 0; i < (cfg.warmupPublishes ?? 0); i++) await publish(1);
    if (cfg.tputSeconds > 0) result.throughput = await throughput(subs);
    result.latency = [];
    for (const { label, rate } of cfg.latRates) {
      const r = rate === "half" ? (result.throughput?.deliveries_per_s ?? 0) / 2 : rate;
      if (r > 0) result.latency.push({ label, ...(await latency(subs, r)) });
    }
  }
  // Every socket against exactly what it was due, in its own thread.
  const verdicts = await Promise.all(gens.map((g) => g.next("verified", { cmd: "verify", upTo: nextN })));
  result.verification = Object.fromEntries(Object.keys(verdict).map((k) => [k, verdicts.reduce((a, v) => a + v.verdict[k], 0)]));
  result.verification.changes = nextN;
  result.verification.bad_sample = verdicts.flatMap((v) => v.bad).slice(0, 5);
  closing = true;
  const done = await Promise.all(gens.map((g) => g.next("done", { cmd: "close" })));
  await Promise.all(gens.map((g) => g.worker.terminate()));
  publisher?.stdin.end();
  const all = done.map((d) => d.totals);
  const sum = (key) => all.reduce((a, t) => a + t[key], 0);
  Object.assign(totals, {
    received: Atomics.load(shared.ctrl, C_RECEIVED),
    stray: Atomics.load(shared.ctrl, C_STRAY),
    invalid: sum("invalid"),
    invalidSample: all.find((t) => t.invalidSample)?.invalidSample ?? null,
    unexpected: sum("unexpected"),
    closedMidRun: open.closedMidRun,
    frameBytes: all.find((t) => t.frameBytes)?.frameBytes ?? null,
  });
  Object.assign(result, { totals, posts: { ok: posts.ok, failed: posts.failed, first_error: posts.firstError } });
  emit(result);
}

async function workerMain() {
  // A socket worker of stream mode: its share of the sockets, counted into
  // the shared memory, verified on the main thread's word.
  ({ shared, log } = workerData);
  const { index, of } = workerData;
  const indices = range(cfg.count).filter((i) => i % of === index);
  let primed = null;
  if (cfg.prime && index === 0) {
    // Herald loses the sockets that join a stream while its first join there
    // is still joining the layer group (hub.add: two coroutines each make the
    // group's dict, and the second drops the first's members). With `prime`,
    // one socket joins first, so the others never race it: the figures are
    // then those of a working fan-out. run.py --no-prime shows the race.
    primed = await openAll(indices.slice(0, 1), streamTopic, 1);
    parentPort.postMessage({ event: "primed" });
    indices.shift();
  }
  const opened = await openAll(indices, streamTopic, Math.ceil((cfg.connectConcurrency ?? 64) / of));
  if (primed) {
    opened.subs.unshift(...primed.subs);
    opened.failed += primed.failed;
    opened.firstError ??= primed.firstError;
  }
  const beats = startHeartbeats(opened.subs);
  const bySiteCount = new Map();
  let all = 0;
  for (const sub of opened.subs) {
    if (sub.site === null) all++;
    else bySiteCount.set(sub.site, (bySiteCount.get(sub.site) ?? 0) + 1);
  }
  const tid = Number(readFileSync("/proc/thread-self/stat", "utf8").split(" ", 1)[0]);
  parentPort.postMessage({
    event: "ready",
    tid,
    open: opened.subs.length,
    failed: opened.failed,
    first_error: opened.firstError,
    connect_s: opened.seconds,
    all,
    bySite: [...bySiteCount],
  });
  parentPort.on("message", (m) => {
    if (m.cmd === "verify") {
      settleChanges(log, 0, m.upTo, bySite(opened.subs));
      leftovers(opened.subs, Number.POSITIVE_INFINITY);
      verdict.sockets = opened.subs.length;
      const firstJoin = Math.min(...opened.subs.map((sub) => sub.joinedAt));
      parentPort.postMessage({ event: "verified", verdict, bad: describeBad(firstJoin) });
    } else if (m.cmd === "close") {
      clearInterval(beats);
      closeAll(opened.subs);
      parentPort.postMessage({ event: "done", totals });
    }
  });
}

// ---- soak ------------------------------------------------------------------------------

class Soak {
  // Every change settles `settleMs` after its publish: then each socket of its
  // stream that was joined when it was published and lacks it counts one
  // missing (per socket, see settleChanges), and frames no socket was due
  // count extra.
  constructor() {
    this.settled = 0; // changes [0, settled) are settled
    this.subsBySite = new Map(); // stream → every socket ever opened on it
    this.subs = [];
    this.reconnects = 0;
    this.reconnectFailures = 0;
    this.firstCloseCode = null;
    this.lat = new Float64Array(2_000_000); // this tick's latencies (ms), capped
    this.latLen = 0;
    this.settleMs = cfg.settleSeconds * 1000;
    this.postMs = []; // this tick's publish times, until acknowledged
  }

  add(sub) {
    if (!this.subsBySite.has(sub.site)) this.subsBySite.set(sub.site, []);
    this.subsBySite.get(sub.site).push(sub);
    this.subs.push(sub);
  }

  delivered(n, t) {
    if (n < 0 || n >= nextN) return void totals.stray++;
    if (this.latLen < this.lat.length) this.lat[this.latLen++] = now() - t / 1000;
  }

  settle(all = false) {
    const before = now() - this.settleMs;
    let to = this.settled;
    while (to < nextN && (all || log.at[to] < before)) to++;
    settleChanges(log, this.settled, to, this.subsBySite);
    this.settled = to;
    leftovers(this.subs, to);
    verdict.sockets = this.subs.length;
  }

  closed(sub, code) {
    // The server closed a joined socket: count it, and open it again.
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
    const again = new Sub(sub.topic, sub.url, { table: sub.table, site: sub.site });
    Object.assign(again, { index: sub.index, reconnects: sub.reconnects });
    soakSubs[sub.index] = again;
    this.add(again);
    try {
      await again.open();
    } catch {
      this.reconnectFailures++;
      again.closedAt = Math.min(again.closedAt, now());
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
  soak = new Soak();
  log = new Changes(Math.ceil(rate * (soakSeconds + 60)) + 1000);
  // Opened as openAll does, each socket knowing its stream (its "site") and its slot.
  const errors = [];
  let next = 0;
  const started = now();
  async function worker(until = cfg.count) {
    while (next < Math.min(until, cfg.count)) {
      const i = next++;
      const stream = i % streams;
      const sub = new Sub(`realtime:soak-${stream}`, URLS[i % URLS.length], { table: tableOf(stream), site: stream });
      Object.assign(sub, { index: i, reconnects: 0 });
      soakSubs[i] = sub;
      soak.add(sub);
      try {
        await sub.open();
      } catch (e) {
        sub.closedAt = Math.min(sub.closedAt, now());
        errors.push(String(e));
      }
    }
  }
  // `prime`: one socket per stream joins alone first (see workerMain).
  if (cfg.prime) for (let s = 0; s < Math.min(streams, cfg.count); s++) await worker(s + 1);
  await Promise.all(Array.from({ length: cfg.connectConcurrency ?? 64 }, () => worker()));
  const joinedAll = soakSubs.filter((s) => s.live).length;
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
  const total = Math.min(log.at.length, Math.round(rate * soakSeconds));
  let last = { t: t0, received: totals.received, published: 0 };
  let nextTick = t0 + tickSeconds * 1000;
  for (let k = 1; nextN < total && k <= total * 20 + 1; k++) {
    const due = Math.min(total, Math.round((rate * k * tick) / 1000));
    while (nextN < due) {
      const stream = nextN % streams;
      publish(1, { table: tableOf(stream), site: () => stream, postMs: soak.postMs });
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
    joined: soakSubs.filter((s) => s?.live && s.closedAt === Infinity).length,
    published: nextN,
    published_in_tick: nextN - last.published,
    received: totals.received,
    deliveries_per_s: ((totals.received - last.received) * 1000) / (t - last.t),
    settled: soak.settled,
    // Per socket, over the settled changes (see settleChanges).
    ...verdict,
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

if (isMainThread) {
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
} else {
  await workerMain();
}
