// Before Socket.IO is measured, the official client checks the server and the
// publishing path: socket.io-client joins the benchmark's room, one change is
// published through @socket.io/redis-emitter, and it must arrive intact.
// (The load generator speaks the same protocol over `ws` for the load itself.)
//
//   node benchmarks/socketio_check.mjs HTTP_URL REDIS_URL

import { readFileSync } from "node:fs";
import { Emitter } from "@socket.io/redis-emitter";
import { createClient } from "redis";
import { io } from "socket.io-client";

const [url, redisUrl] = process.argv.slice(2);
const ROOM = "realtime:bench";
const version = JSON.parse(readFileSync(new URL("./node_modules/socket.io-client/package.json", import.meta.url))).version;
const fail = (why) => {
  console.error(`socket.io-client check: ${why}`);
  process.exit(1);
};
setTimeout(() => fail("no change within 15 s"), 15_000).unref();

const redis = createClient({ url: redisUrl });
await redis.connect();
const socket = io(url, { transports: ["websocket"], reconnection: false });
socket.on("connect_error", (e) => fail(`connect: ${e.message}`));
socket.on("postgres_changes", async (data) => {
  if (data?.record?.check !== 1 || data.table !== "bench") fail(`bad change ${JSON.stringify(data)}`);
  console.log(`socket.io-client ${version}: joined, received the published change`);
  socket.close();
  await redis.quit();
  process.exit(0);
});
const reply = await socket.timeout(10_000).emitWithAck("join", ROOM);
if (reply?.status !== "ok") fail(`join: ${JSON.stringify(reply)}`);
new Emitter(redis).to(ROOM).emit("postgres_changes", { schema: "public", table: "bench", record: { check: 1 } });
