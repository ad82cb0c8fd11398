// Publishes the load generator's changes to Socket.IO rooms, for `make bench-peers`.
//
//   node benchmarks/socketio_publisher.js REDIS_URL ROOM TABLE
//
// The counterpart of benchmarks/publisher.py for Socket.IO: each line on stdin
// is a JSON list of records; each record becomes one `postgres_changes` event
// to ROOM through @socket.io/redis-emitter (one Redis PUBLISH per change, which
// every server process receives once). The event carries the same `data`
// Herald sends (schema, table, commit_timestamp, type, columns, errors, seq,
// record). A line is acknowledged on stdout once Redis has taken its messages
// (a PING after them on the same connection). It stops when stdin closes.

import { createInterface } from "node:readline";
import { Emitter } from "@socket.io/redis-emitter";
import { createClient } from "redis";

const [redisUrl, room, table] = process.argv.slice(2);
const client = createClient({ url: redisUrl });
client.on("error", (e) => console.error(`redis: ${e}`));
await client.connect();
const emitter = new Emitter(client);

const PG_TYPES = { number: "int8", string: "text", boolean: "bool", object: "jsonb" };

function data(record) {
  const columns = Object.entries(record).map(([name, v]) => ({
    name,
    type: Number.isInteger(v) ? "int8" : typeof v === "number" ? "float8" : PG_TYPES[typeof v],
  }));
  return {
    schema: "public",
    table,
    commit_timestamp: new Date().toISOString(),
    type: "INSERT",
    columns,
    errors: null,
    seq: record.bench_n + 1,
    record,
  };
}

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  for (const record of JSON.parse(line)) emitter.to(room).emit("postgres_changes", data(record));
  await client.ping();
  process.stdout.write("ok\n");
}
await client.quit();
