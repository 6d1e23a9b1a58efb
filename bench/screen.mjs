// The second, independent harness (issue 14): the OFFICIAL socket.io-client (websocket transport) for N watchers
// in one Node process, and the same process issuing the REST saves with fetch (keep-alive), so a save's time to
// the screen includes everything a real page pays: the REST round trip, the broadcast, and a full client's decoding.
// Against the reference server (`reference`), each save is a POST /emit instead: the floor of this harness.
// Nothing is shared with bench/loadgen.mjs (the raw-protocol load generator of `make bench`).
//
// argv[2]: JSON {url, token, room, task, order, clients, mode, shape, rate, seconds, warmup, broadcasts, reference, tag,
//                connectConcurrency}
//   mode "save":   `rate` PATCH /api/tasks/<task>/ per second for `seconds`, each with a fresh title; per save, from
//                  just before the request is sent to the moment the LAST watcher has its `task_updated` (matched
//                  by title: the payload is projects.schemas.TaskOut). p50 / p99 / max of every save, and
//                  steady_* of those after the first `warmup` seconds (bench/run.py, WARMUP_SECONDS).
//   mode "fanout": `broadcasts` broadcasts, deliveries per second from the first request to the last delivery, in
//                  one of two shapes, on either side: `shape` "one-request", every broadcast from one request (a REST
//                  reorder of the tasks listed in `order`, in `room`; the reference's POST /emit?n=broadcasts), or
//                  "per-request", one awaited request per broadcast (a REST save; the reference's POST /emit?n=1).
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
    ? await fetch(`${cfg.url}/emit?room=${encodeURIComponent(cfg.room)}&n=1&title=${encodeURIComponent(title)}`, { method: "POST" })
    : await fetch(`${cfg.url}/api/tasks/${cfg.task}/`, { method: "PATCH", headers, body: JSON.stringify({ title }) });
  await r.arrayBuffer(); // drained, so the connection goes back to the keep-alive pool
  if (!r.ok) throw new Error(`${cfg.reference ? "POST /emit" : "PATCH"} ${r.status}`);
}

// The client's own first requests (fetch loads undici and opens its connection lazily: tens of ms) are not the
// server's: made before the clock starts, a read that changes nothing (a 404 from the reference).
async function warmRequests() {
  for (let i = 0; i < 3; i++) {
    const r = await fetch(cfg.reference ? `${cfg.url}/` : `${cfg.url}/api/tasks/${cfg.task}/`, { headers });
    await r.arrayBuffer();
  }
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
  const warmupSaves = Math.round(cfg.rate * (cfg.warmup || 0));
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
  const everything = [];
  const steady = []; // the saves after the warm-up
  let complete = 0;
  [...sent].forEach(([title, t0], i) => {
    const entry = byTitle.get(title);
    if (!entry) return;
    if (entry[0] === cfg.clients) complete += 1;
    everything.push(entry[1] - t0);
    if (i >= warmupSaves) steady.push(entry[1] - t0);
  });
  const max = (values) => (values.length ? Math.max(...values) : null);
  return {
    saves: count, complete, errors, p50_ms: percentile(everything, 50), p99_ms: percentile(everything, 99), max_ms: max(everything),
    warmup_saves: warmupSaves, steady_p50_ms: percentile(steady, 50), steady_p99_ms: percentile(steady, 99), steady_max_ms: max(steady),
  };
}

async function fanout() {
  const start = now();
  if (cfg.shape === "per-request") {
    for (let i = 0; i < cfg.broadcasts; i++) await save(`${cfg.tag}-f${i}`);
  } else if (cfg.reference) {
    const r = await fetch(`${cfg.url}/emit?room=${encodeURIComponent(cfg.room)}&n=${cfg.broadcasts}`, { method: "POST" });
    await r.arrayBuffer();
  } else {
    if (cfg.order.length !== cfg.broadcasts) throw new Error("order must list one task per broadcast");
    const r = await fetch(`${cfg.url}/api/projects/${cfg.room}/tasks/reorder/`, { method: "POST", headers, body: JSON.stringify({ task_ids: cfg.order }) });
    await r.arrayBuffer();
    if (!r.ok) throw new Error(`reorder ${r.status}`);
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
  await warmRequests();
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
