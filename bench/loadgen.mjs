// Lean load generator: many raw Socket.IO (Engine.IO v4, websocket transport) or plain websocket
// clients in one Node process, so that it is not the bottleneck. Driven by bench/run.py over
// stdin/stdout JSON lines.
//
// argv[2]: JSON config {url, kind: "socketio"|"ws", clients, rooms: [...], join: {event, key} | null,
//                       auth: {...} | null, event, idKey, connectConcurrency}
// stdout: {"type":"ready", connectSeconds, failed}  then, per "collect" command on stdin,
//         {"type":"result", received, perId: {id: [count, firstMs, lastMs]}, cpuMs, rssMb}
import { WebSocket } from "ws";
import { performance } from "node:perf_hooks";
import { createInterface } from "node:readline";

const cfg = JSON.parse(process.argv[2]);
const now = () => performance.timeOrigin + performance.now(); // wall-clock ms, sub-ms precision
const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");

let received = 0;
let perId = new Map();

function record(data) {
  received += 1;
  const id = String(data?.[cfg.idKey] ?? "");
  const t = now();
  const entry = perId.get(id);
  if (entry) {
    entry[0] += 1;
    if (t > entry[2]) entry[2] = t;
  } else {
    perId.set(id, [1, t, t]);
  }
}

function socketioClient(room) {
  return new Promise((resolve) => {
    const url = cfg.url.replace(/^http/, "ws") + "/socket.io/?EIO=4&transport=websocket";
    const ws = new WebSocket(url, { perMessageDeflate: false });
    let joined = !cfg.join;
    const done = (ok) => resolve({ ws, ok });
    ws.on("message", (buf) => {
      const msg = buf.toString();
      if (msg === "2") return ws.send("3"); // ping -> pong
      if (msg[0] === "0") return ws.send("40" + (cfg.auth ? JSON.stringify(cfg.auth) : ""));
      if (msg.startsWith("40")) {
        if (cfg.join) ws.send(`421${JSON.stringify([cfg.join.event, { [cfg.join.key]: room }])}`);
        else done(true);
        return;
      }
      if (msg.startsWith("44")) return done(false); // connect_error
      if (msg.startsWith("431")) {
        joined = true;
        return done(JSON.parse(msg.slice(3))[0]?.ok !== false);
      }
      if (msg.startsWith("42") && joined) {
        const [event, data] = JSON.parse(msg.slice(2));
        if (event === cfg.event) record(data);
      }
    });
    ws.on("error", () => done(false));
    ws.on("close", () => done(false));
  });
}

function plainClient(room) {
  return new Promise((resolve) => {
    const ws = new WebSocket(cfg.url.replace(/^http/, "ws") + `/ws/${room}/`, { perMessageDeflate: false });
    ws.on("open", () => resolve({ ws, ok: true }));
    ws.on("message", (buf) => record(JSON.parse(buf.toString())));
    ws.on("error", () => resolve({ ws, ok: false }));
  });
}

const sockets = [];
async function connectAll() {
  const started = now();
  let failed = 0;
  let next = 0;
  const make = cfg.kind === "ws" ? plainClient : socketioClient;
  async function worker() {
    while (next < cfg.clients) {
      const i = next++;
      const room = cfg.rooms.length ? cfg.rooms[i % cfg.rooms.length] : null;
      let result = await make(room);
      for (let attempt = 1; !result.ok && attempt < 3; attempt++) {
        result.ws.terminate(); // a refused connect under a burst (full backlog): try again
        result = await make(room);
      }
      sockets.push(result.ws);
      if (!result.ok) failed += 1;
    }
  }
  await Promise.all(Array.from({ length: cfg.connectConcurrency || 50 }, worker));
  out({ type: "ready", connectSeconds: (now() - started) / 1000, failed, clients: cfg.clients });
}

const lines = createInterface({ input: process.stdin });
lines.on("line", (line) => {
  const cmd = JSON.parse(line);
  if (cmd.op === "collect") {
    const cpu = process.cpuUsage();
    out({ type: "result", received, perId: Object.fromEntries(perId), cpuMs: (cpu.user + cpu.system) / 1000, rssMb: process.memoryUsage().rss / 1e6 });
  } else if (cmd.op === "reset") {
    received = 0;
    perId = new Map();
    out({ type: "reset" });
  } else if (cmd.op === "exit") {
    for (const ws of sockets) ws.terminate();
    process.exit(0);
  }
});

connectAll();
