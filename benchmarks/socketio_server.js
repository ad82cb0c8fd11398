// Socket.IO on Node, the peer many teams pick, for `make bench-peers`.
//
//   node benchmarks/socketio_server.js PORT REDIS_URL
//
// Socket.IO 4 as its documentation sets it up for several processes: the Redis
// adapter (@socket.io/redis-adapter over the `redis` client), WebSocket
// transport only (no long-polling upgrade), no compression. A client emits
// `join` with a room name and gets an ack once it is in the room. Changes come
// from benchmarks/socketio_publisher.js through @socket.io/redis-emitter: one
// Redis message per change, which every server process receives once and
// broadcasts to its own sockets in the room (the packet is encoded once per
// broadcast). The same Redis path serves one process and two, as with Herald.
// GET /healthz answers once the adapter is connected.

import http from "node:http";
import { createAdapter } from "@socket.io/redis-adapter";
import { createClient } from "redis";
import { Server } from "socket.io";

const [port, redisUrl] = process.argv.slice(2);
const pub = createClient({ url: redisUrl });
const sub = pub.duplicate();
for (const client of [pub, sub]) client.on("error", (e) => console.error(`redis: ${e}`));
await Promise.all([pub.connect(), sub.connect()]);

const httpServer = http.createServer((req, res) => {
  // Socket.IO answers its own path (/socket.io/) before this handler.
  res.writeHead(req.url === "/healthz" ? 200 : 404, { "content-type": "text/plain" });
  res.end(req.url === "/healthz" ? "ok\n" : "not found\n");
});

const io = new Server(httpServer, {
  adapter: createAdapter(pub, sub),
  transports: ["websocket"],
  perMessageDeflate: false,
  serveClient: false,
});

io.on("connection", (socket) => {
  socket.on("join", (room, ack) => {
    socket.join(String(room));
    if (typeof ack === "function") ack({ status: "ok" });
  });
});

process.on("SIGTERM", () => {
  io.close();
  process.exit(0);
});
httpServer.listen(Number(port), "127.0.0.1");
