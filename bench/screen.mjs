// The second, independent harness (issue 14): the OFFICIAL socket.io-client (websocket transport) for N watchers
// in one Node process, and the same process issuing the REST saves with fetch (keep-alive), so a save's time to
// the screen includes everything a real page pays: the REST round trip, the broadcast, and a full client's decoding.
// Nothing is shared with bench/loadgen.mjs (the raw-protocol load generator of `make bench`).
//
// argv[2]: JSON {url, token, room, task, clients, mode, rate, seconds, warmup, broadcasts, reference, tag, connectConcurrency}
//   mode "save":   `rate` PATCH /api/tasks/<task>/ per second for `seconds`, each with a fresh title; per save, from
//                  just before the request is sent to the moment the LAST watcher has its `task_updated` (matched
//                  by title: the payload is projects.schemas.TaskOut). With `reference`, each save is a
//                  POST /emit?room=&n=1&title= to bench/node_server.mjs instead: the harness's own floor.
//                  The first `warmup` seconds of saves warm both sides (V8 compiling this client's decoding, the
//                  server's first-use paths): p50 / p99 / max are of the saves after it, `all_p99_ms` and
//                  `warmup_max_ms` show what it held.
//   mode "fanout": `broadcasts` saves one after another (each awaited), or with `reference` (bench/node_server.mjs)
//                  one POST /emit?room=&n=broadcasts: deliveries per second, first request to last delivery.
// stdout: one JSON line {type: "result", ...} (or {type: "error", message}).
import { performance } from "node:perf_hooks";
import { io } from "socket.io-client";

const cfg = JSON.parse(process.argv[2]);
const now = () => performance.timeOrigin + performance.now(); // wall-clock ms, sub-ms precision
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const cpuSeconds = () => {
  const c = process.cpuUsage();
  return (c.user + c.system) / 1e6;
};

const byTitle = new Map(); // title -> [count, lastMs]
let received = 0;
let disconnects = 0;

function watcher() {
  return new Promise((resolve) => {
    const socket = io(cfg.url, {
      forceNew: true, transports: ["websocket"], reconnection: false, auth: cfg.token ? { token: cfg.token } : undefined,
    });
    socket.on("task_updated", (data) => {
      const t = now();
      received += 1;
      const key = data?.title ?? "reference";
      const entry = byTitle.get(key);
      if (entry) {
        entry[0] += 1;
        if (t > entry[1]) entry[1] = t;
      } else byTitle.set(key, [1, t]);
    });
    socket.on("disconnect", () => (disconnects += 1));
    socket.once("connect_error", () => resolve({ socket, ok: false }));
    socket.once("connect", async () => {
      try {
        const ack = await socket.timeout(30000).emitWithAck("join_project", { project_id: cfg.room });
        resolve({ socket, ok: ack?.ok !== false });
      } catch {
        resolve({ socket, ok: false });
      }
    });
  });
}

async function connectAll() {
  const sockets = [];
  let failed = 0;
  let next = 0;
  async function worker() {
    while (next < cfg.clients) {
      next += 1;
      const { socket, ok } = await watcher();
      sockets.push(socket);
      if (!ok) failed += 1;
    }
  }
  await Promise.all(Array.from({ length: cfg.connectConcurrency || 100 }, worker));
  return { sockets, failed };
}

const headers = { Authorization: `Bearer ${cfg.token}`, "Content-Type": "application/json" };
async function save(title) {
  const r = cfg.reference
    ? await fetch(`${cfg.url}/emit?room=${encodeURIComponent(cfg.room)}&n=1&event=task_updated&title=${encodeURIComponent(title)}`, { method: "POST" })
    : await fetch(`${cfg.url}/api/tasks/${cfg.task}/`, { method: "PATCH", headers, body: JSON.stringify({ title }) });
  await r.arrayBuffer(); // drained, so the connection goes back to the keep-alive pool
  if (!r.ok) throw new Error(`${cfg.reference ? "POST /emit" : "PATCH"} ${r.status}`);
}

async function waitFor(total, timeoutMs) {
  const deadline = now() + timeoutMs;
  while (received < total && now() < deadline) await sleep(20);
}

function percentile(values, q) {
  const s = [...values].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.round((q / 100) * (s.length - 1)))] : null;
}

async function saveToScreen() {
  const count = Math.round(cfg.rate * cfg.seconds);
  const warm = Math.round(cfg.rate * (cfg.warmup || 0));
  const sent = new Map();
  const pending = [];
  let errors = 0;
  const begin = now();
  for (let i = 0; i < count; i++) {
    const wait = begin + (i * 1000) / cfg.rate - now();
    if (wait > 0) await sleep(wait);
    const title = `${cfg.tag}-s${i}`;
    sent.set(title, now());
    pending.push(save(title).catch(() => (errors += 1)));
  }
  await Promise.all(pending);
  await waitFor(cfg.clients * count, 60000);
  const all = [];
  const latencies = []; // the saves after the warm-up
  const warming = [];
  let complete = 0;
  [...sent].forEach(([title, t0], i) => {
    const entry = byTitle.get(title);
    if (!entry) return;
    if (entry[0] === cfg.clients) complete += 1;
    all.push(entry[1] - t0);
    (i < warm ? warming : latencies).push(entry[1] - t0);
  });
  return {
    saves: count, complete, errors, warmup_saves: warm, p50_ms: percentile(latencies, 50), p99_ms: percentile(latencies, 99),
    max_ms: latencies.length ? Math.max(...latencies) : null, all_p99_ms: percentile(all, 99),
    warmup_max_ms: warming.length ? Math.max(...warming) : null,
  };
}

async function fanout() {
  const start = now();
  if (cfg.reference) {
    const r = await fetch(`${cfg.url}/emit?room=${encodeURIComponent(cfg.room)}&n=${cfg.broadcasts}&event=task_updated`, { method: "POST" });
    await r.arrayBuffer();
  } else {
    for (let i = 0; i < cfg.broadcasts; i++) await save(`${cfg.tag}-f${i}`);
  }
  const expected = cfg.clients * cfg.broadcasts;
  await waitFor(expected, 120000);
  const last = Math.max(...[...byTitle.values()].map((e) => e[1]));
  return { broadcasts: cfg.broadcasts, received, expected, seconds: (last - start) / 1000, deliveries_per_s: received / ((last - start) / 1000) };
}

try {
  const connectStart = now();
  const { sockets, failed } = await connectAll();
  const connectSeconds = (now() - connectStart) / 1000;
  if (failed) throw new Error(`${failed} of ${cfg.clients} watchers failed to connect or join`);
  await sleep(200); // let the joins' snapshots settle before the clock starts
  const cpuBefore = cpuSeconds();
  const result = cfg.mode === "fanout" ? await fanout() : await saveToScreen();
  const loadgenCpu = cpuSeconds() - cpuBefore;
  const lost = disconnects; // before our own disconnects below
  for (const s of sockets) s.disconnect();
  process.stdout.write(JSON.stringify({
    type: "result", mode: cfg.mode, clients: cfg.clients, connect_seconds: connectSeconds, disconnects: lost,
    loadgen_cpu_s: loadgenCpu, loadgen_cpu_total_s: cpuSeconds(), ...result,
  }) + "\n");
  process.exit(0);
} catch (error) {
  process.stdout.write(JSON.stringify({ type: "error", message: String(error?.message || error) }) + "\n");
  process.exit(1);
}
