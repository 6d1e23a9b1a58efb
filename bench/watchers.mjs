// Many project watchers in one Node process, each its own official socket.io-client socket, each following
// the documented protocol (README "Event reference"; the recovery protocol of issue 13): join on every connect,
// apply initial_tasks and task events by `version`, deleted ids stay deleted. With `since` (the default) each
// also follows `_live` stamps: it names the last broadcast it applied when it rejoins, applies the `missed`
// list of `realtime:joined`, rejoins on a gap or a new epoch, and rejoins without history on `realtime:resync`.
// With since: false it is the basic client: it never sends `since`, so every rejoin reloads the snapshot.
//
// Driven by bench/storm.py over stdin/stdout JSON lines.
// argv[2]: {url, token, rooms: [project ids], clients, offset, since, connectConcurrency, reconnectionDelay,
//           reconnectionDelayMax, ackTimeoutMs}; client i watches rooms[(offset + i) % rooms.length].
// stdout: {type: "ready", failed, connectSeconds}, then one answer per command:
//   {op: "mode", since}               -> switch every client between recovery (since) and basic (no since)
//   {op: "mark"}                      -> every client must rejoin (after a restart) before it counts as current
//   {op: "targets", targets, t0}      -> targets: {room: {taskId: version | -1 (deleted)}}: what "current" means
//   {op: "status", t0}                -> {connected, rejoined, current, times: [ms after t0 each current client got current]}
//   {op: "verify", db}                -> db: {room: {taskId: version}}: {divergent, sample}
//   {op: "counters"} / {op: "exit"}
import { createInterface } from "node:readline";
import { io } from "socket.io-client";

const cfg = JSON.parse(process.argv[2]);
let since = Boolean(cfg.since); // follows `_live` and sends `since`; the driver may switch it ({op: "mode"})
const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");
const now = () => Date.now();
const TASK_EVENTS = ["task_created", "task_updated", "task_deleted"];

// What happened across all clients of this process (reported by "counters" and "status").
const counters = {
  connects: 0, disconnects: 0, connectErrors: 0, joins: 0, joinRefused: 0, joinTimeouts: 0,
  snapshots: 0, unmarked: 0, recoveries: 0, missedEvents: 0, snapshotJoins: 0, gaps: 0, epochChanges: 0, duplicates: 0, resyncs: 0,
};
let targets = null; // {room: Map(taskId -> version | -1)} once the driver says what "current" is

class Watcher {
  constructor(room) {
    this.room = room;
    this.tasks = new Map(); // id -> [version, applied at]: only the version is kept (5,000 clients x 200 tasks)
    this.deleted = new Map(); // id -> deleted at
    this.gone = new Map(); // id -> when a snapshot without it came (deleted while this client was away)
    this.liveSinceJoin = new Set(); // touched live since the join: a snapshot read earlier does not undo it
    this.parts = new Map(); // snapshot id -> {parts, frames: Map(part -> tasks)}
    this.stream = null; // {epoch, seq, token}: where this room's broadcasts stand (since mode)
    this.joining = false; // a join sent, its marker not yet in: stamped broadcasts are held
    this.held = [];
    this.forceSnapshot = false;
    this.inFlight = false;
    this.again = false;
    this.joinedOnce = false;
    this.rejoinedAt = null; // set by a successful join after the driver's "mark"
    this.snapshotAt = null; // when the first snapshot completed after the mark
    this.currentAt = null;
    // Reconnection backoff: socket.io-client's defaults (1 s doubling to 5 s, ±50 %), as the pages have, unless configured.
    const backoff = Object.fromEntries(Object.entries({ reconnectionDelay: cfg.reconnectionDelay, reconnectionDelayMax: cfg.reconnectionDelayMax })
      .filter(([, v]) => v != null));
    const socket = io(cfg.url, { forceNew: true, transports: ["websocket"], auth: { token: cfg.token }, ...backoff });
    this.socket = socket;
    socket.on("connect", () => {
      counters.connects += 1;
      this.join();
    });
    socket.on("connect_error", () => (counters.connectErrors += 1));
    socket.on("disconnect", () => {
      counters.disconnects += 1;
      this.joining = false;
      this.held = [];
      this.rejoinedAt = null;
      this.currentAt = null;
    });
    socket.on("initial_tasks", (frame) => this.frame(frame));
    for (const event of TASK_EVENTS) socket.on(event, (data) => this.live(event, data));
    socket.on("realtime:joined", (marker) => since && this.marker(marker));
    socket.on("realtime:resync", () => {
      if (!since) return; // a basic client never hears it: the server disconnects it instead
      counters.resyncs += 1;
      this.forceSnapshot = true;
      this.join();
    });
  }

  /** Join (again); one join in flight at a time, a request meanwhile is carried out after it. */
  async join() {
    if (!this.socket.connected) return; // the connect handler joins; an emit now would be buffered and sent twice
    if (this.inFlight) {
      this.again = true;
      return;
    }
    this.inFlight = true;
    const payload = { project_id: this.room };
    if (since) {
      // A snapshot cut off before its ack was never had: naming its marker's seq would be told "nothing missed".
      const named = this.stream && !this.forceSnapshot && !this.snapshotPending;
      payload.since = named ? { [this.room]: { epoch: this.stream.epoch, seq: this.stream.seq, token: this.stream.token } } : {};
      this.forceSnapshot = false;
      this.joining = true;
      this.held = [];
    }
    this.liveSinceJoin = new Set();
    this.parts.clear(); // frames of a snapshot cut off by a disconnect never complete
    let retry = false;
    try {
      const ack = await this.socket.timeout(cfg.ackTimeoutMs ?? 120000).emitWithAck("join_project", payload);
      if (ack && ack.ok) {
        counters.joins += 1;
        this.snapshotPending = false; // the snapshot, if one was coming, came before this ack
        if (since && this.joining) this.unmarked();
        this.joinedOnce = true;
        if (this.rejoinedAt === null) this.rejoinedAt = now();
        this.check();
      } else {
        counters.joinRefused += 1; // rate limited or busy under the storm: try again shortly
        retry = true;
      }
    } catch {
      counters.joinTimeouts += 1; // disconnected meanwhile (the connect handler rejoins) or no answer in time
      retry = this.socket.connected;
    } finally {
      this.inFlight = false;
    }
    if (retry) setTimeout(() => this.join(), 200 + Math.random() * 300);
    else if (this.again) {
      this.again = false;
      this.join();
    }
  }

  /** `realtime:joined {join, room, epoch, seq, token, missed}`: apply what was missed, or expect the snapshot. */
  marker(marker) {
    if (marker.room !== this.room) return;
    this.stream = { epoch: marker.epoch, seq: marker.seq, token: marker.token };
    if (Array.isArray(marker.missed)) {
      counters.recoveries += 1;
      counters.missedEvents += marker.missed.length;
      for (const [event, data] of marker.missed) this.apply(event, data);
    } else {
      counters.snapshotJoins += 1;
    }
    this.snapshotPending = !Array.isArray(marker.missed) || Boolean(this.snapshotPending); // a list never brings a snapshot awaited
    this.joining = false;
    const held = this.held.sort((a, b) => a[1]._live.seq - b[1]._live.seq);
    this.held = [];
    for (const [event, data] of held) this.live(event, data);
    this.check();
  }

  /**
   * A join answered without its `realtime:joined` marker (protocol rule 3 says there always is one): counted, and
   * survived as a basic client would: the snapshot came, held broadcasts apply by version, and so do the next
   * ones until a marker says where the room stands again.
   */
  unmarked() {
    counters.unmarked += 1;
    this.joining = false;
    this.stream = null;
    const held = this.held;
    this.held = [];
    for (const [event, data] of held) this.apply(event, data);
  }

  /** A broadcast: basic clients apply it; since clients take stamped ones once and in order (protocol rule 4). */
  live(event, data) {
    const stamp = since && data && data._live;
    if (!stamp || stamp.room !== this.room) return this.apply(event, data);
    if (this.joining) {
      this.held.push([event, data]);
      return;
    }
    if (!this.stream) return this.apply(event, data); // no position known (an unmarked join): by version only
    if (stamp.epoch !== this.stream.epoch) {
      counters.epochChanges += 1; // history lost: the rejoin (with since) is answered with a snapshot
      this.rejoin(event, data);
      return;
    }
    if (stamp.seq <= this.stream.seq) {
      counters.duplicates += 1;
      return;
    }
    if (stamp.seq > this.stream.seq + 1) {
      counters.gaps += 1; // something in between never came: the server sends what is missing, or a snapshot
      this.rejoin(event, data);
      return;
    }
    this.stream.seq = stamp.seq;
    this.apply(event, data);
  }

  rejoin(event, data) {
    this.apply(event, data); // versions make it safe to apply now; the stream position waits for the marker
    this.join();
    if (this.joining) this.held.push([event, data]);
  }

  apply(event, data) {
    const at = now();
    if (event === "task_deleted") {
      const id = data.task_id;
      if (!this.deleted.has(id)) this.deleted.set(id, at);
      this.tasks.delete(id);
      this.liveSinceJoin.add(id);
    } else {
      this.liveSinceJoin.add(data.id);
      this.put(data, at);
    }
    this.check();
  }

  put(task, at) {
    if (this.deleted.has(task.id)) return;
    const current = this.tasks.get(task.id);
    if (!current || current[0] < task.version) this.tasks.set(task.id, [task.version, at]);
  }

  /** One initial_tasks frame: tasks apply at once; once all parts are in, tasks it lacks (not touched live) go. */
  frame(frame) {
    if (frame.project_id !== this.room) return;
    const at = now();
    for (const task of frame.tasks || []) this.put(task, at);
    const parts = Number(frame.parts) || 1;
    let all = frame.tasks || [];
    if (parts > 1) {
      const id = String(frame.snapshot ?? "");
      const entry = this.parts.get(id) || { parts, frames: new Map() };
      this.parts.set(id, entry);
      entry.frames.set(Number(frame.part) || 1, (frame.tasks || []).map((t) => t.id));
      if (entry.frames.size < entry.parts) return;
      this.parts.delete(id);
      all = [...entry.frames.values()].flat().map((id) => ({ id }));
    }
    const present = new Set(all.map((t) => t.id));
    for (const id of [...this.tasks.keys()]) {
      if (!present.has(id) && !this.liveSinceJoin.has(id)) {
        this.tasks.delete(id);
        this.gone.set(id, at);
      }
    }
    counters.snapshots += 1;
    if (this.rejoinedAt === null || this.snapshotAt === null) this.snapshotAt = at; // read after the mark (the restart)
    this.check();
  }

  /** Current: rejoined since the mark, and every target write applied; the time is when the last of them was. */
  check() {
    if (this.currentAt !== null || this.rejoinedAt === null || targets === null) return;
    const wanted = targets[this.room];
    let at = this.rejoinedAt;
    if (wanted) {
      for (const [id, version] of wanted) {
        if (version < 0) {
          if (this.tasks.has(id)) return;
          const when = this.deleted.get(id) ?? this.gone.get(id) ?? 0; // a delete missed while away: the snapshot lacks it
          if (when > at) at = when;
        } else if (this.deleted.has(id)) {
          const when = this.deleted.get(id); // deleted since that version (a delete is final): newer still
          if (when > at) at = when;
        } else {
          const have = this.tasks.get(id);
          if (!have && this.snapshotAt !== null) continue; // absent from a snapshot read after the restart: deleted since
          if (!have || have[0] < version) return;
          if (have[1] > at) at = have[1];
        }
      }
    }
    this.currentAt = at;
  }

  /** Why this client is not current (for the driver's report). */
  why() {
    if (!this.socket.connected) return "disconnected";
    if (this.rejoinedAt === null) return "not rejoined";
    for (const [id, version] of targets?.[this.room] || []) {
      const have = this.tasks.get(id);
      if (version < 0 ? have : !have || have[0] < version) return `${id}: has v${have?.[0]}, wants v${version} (deleted ${this.deleted.has(id)})`;
    }
    return "?";
  }

  /** Differences from the database's {taskId: version}, or null when equal. */
  diff(db) {
    const wrong = [];
    for (const [id, version] of Object.entries(db)) {
      const have = this.tasks.get(id);
      if (!have) wrong.push(`missing ${id} v${version}`);
      else if (have[0] !== version) wrong.push(`${id} v${have[0]} != v${version}`);
    }
    for (const id of this.tasks.keys()) if (!(id in db)) wrong.push(`extra ${id}`);
    return wrong.length ? wrong : null;
  }
}

const watchers = [];

async function connectAll() {
  const started = now();
  let next = 0;
  async function worker() {
    while (next < cfg.clients) {
      const i = next++;
      const w = new Watcher(cfg.rooms[(cfg.offset + i) % cfg.rooms.length]);
      watchers.push(w);
      const deadline = now() + 120000;
      while (!w.joinedOnce && now() < deadline) await new Promise((r) => setTimeout(r, 20));
    }
  }
  await Promise.all(Array.from({ length: cfg.connectConcurrency || 100 }, worker));
  out({ type: "ready", failed: watchers.filter((w) => !w.joinedOnce).length, connectSeconds: (now() - started) / 1000 });
}

function status(t0, withTimes) {
  const times = [];
  let connected = 0;
  let rejoined = 0;
  for (const w of watchers) {
    if (w.socket.connected) connected += 1;
    if (w.rejoinedAt !== null) rejoined += 1;
    if (w.currentAt !== null) times.push(w.currentAt - t0);
  }
  times.sort((a, b) => a - b);
  const waiting = watchers.filter((w) => w.currentAt === null).slice(0, 3).map((w) => w.why());
  return { type: "status", clients: watchers.length, connected, rejoined, current: times.length, times: withTimes ? times : [], waiting, counters };
}

function verify(db) {
  let divergent = 0;
  const sample = [];
  for (const w of watchers) {
    const wrong = w.diff(db[w.room] || {});
    if (wrong) {
      divergent += 1;
      if (sample.length < 5) sample.push({ room: w.room, connected: w.socket.connected, wrong: wrong.slice(0, 5), count: wrong.length });
    }
  }
  return { type: "verify", clients: watchers.length, divergent, sample, counters };
}

createInterface({ input: process.stdin }).on("line", (line) => {
  const cmd = JSON.parse(line);
  if (cmd.op === "mode") {
    const was = since;
    since = Boolean(cmd.since);
    for (const w of was === since ? [] : watchers) {
      w.stream = null; // a basic client keeps no stream position: its next join is a plain one
      w.joining = false;
      w.held = [];
    }
    out({ type: "mode", since });
  } else if (cmd.op === "mark") {
    targets = null;
    for (const w of watchers) {
      w.rejoinedAt = null;
      w.snapshotAt = null;
      w.currentAt = null;
    }
    out({ type: "marked" });
  } else if (cmd.op === "targets") {
    targets = Object.fromEntries(Object.entries(cmd.targets).map(([room, t]) => [room, new Map(Object.entries(t))]));
    for (const w of watchers) w.check();
    out(status(cmd.t0, cmd.times));
  } else if (cmd.op === "status") {
    out(status(cmd.t0, cmd.times));
  } else if (cmd.op === "verify") {
    out(verify(cmd.db));
  } else if (cmd.op === "counters") {
    const mem = process.memoryUsage();
    const cpu = process.cpuUsage();
    out({ type: "counters", counters, rssMb: mem.rss / 1e6, cpuMs: (cpu.user + cpu.system) / 1000 });
  } else if (cmd.op === "exit") {
    for (const w of watchers) w.socket.disconnect();
    process.exit(0);
  }
});

connectAll();
