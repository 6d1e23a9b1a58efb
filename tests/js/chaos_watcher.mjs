// Many watchers in one Node process, for the chaos test (tests/realtime/test_chaos.py, tests/support/chaos.py).
//
// Each watcher is one official socket.io-client socket watching a few projects' tasks, and does only what the
// documented protocol asks (README "Event reference" / "Recovering after a reconnect"):
//   - join every watched project on every connect, naming `since` (null until a room's first marker);
//   - `realtime:joined` markers: stamped broadcasts before the marker are held; `missed` (a list) is applied,
//     else the snapshot that follows is; held ones past marker.seq are then applied in order;
//   - afterwards per stamped broadcast: another epoch -> rejoin with since; seq <= last -> drop;
//     seq == last + 1 -> apply; seq > last + 1 -> a gap: rejoin with since;
//   - `realtime:resync {}` -> rejoin every room without since (a full snapshot);
//   - tasks applied by `version` (higher wins), deleted ids stay deleted, snapshots (`initial_tasks`, in parts)
//     authoritative for what was not touched live since the join.
//
// stdin: one JSON command per line
//   {"op":"add","id":"w1","url":"http://127.0.0.1:PORT","token":"…","projects":["<uuid>",…],"transports":["websocket"]|null,
//    "basic":false}   basic: a client of the basic protocol only (no since, markers, seq or resync: joins get snapshots,
//                     and a server that cannot tell it to resync closes its connection instead)
//   {"op":"drop","id":"w1"}        the transport is cut under the socket (as a network drop); socket.io reconnects
//   {"op":"reset","id":"w1"}       forget everything and start again (a fresh page), used after a divergence is counted
//   {"op":"trace","req":8,"id":"w1"} -> {"type":"trace","req":8,"entries":[…]}: what the watcher saw and did, last ones
//   {"op":"clock","req":9} -> {"type":"clock","req":9,"ms":…}: the clock traces are stamped by (ms since 1970)
//   {"op":"state","req":7}         -> {"type":"state","req":7,"watchers":{id:{connected, projects:{pid:{tid:[version,title,status,order]}}, joining:[pid…]}}, "counters":{…}}
//   {"op":"exit"}
// stdout: one JSON object per line ({"type":"ready"}, {"type":"state",…}, {"type":"log",…}); diagnostics on stderr.

import { createInterface } from "node:readline";
import { io } from "socket.io-client";

const JOIN_TIMEOUT_MS = 10_000;
const TRACE = 3000; // entries kept per watcher, to explain a divergence
const RETRY_MS = 250; // a refused or timed-out join is tried again (while connected)

const counters = {
  connects: 0,
  joins: 0,
  markers: 0,
  recovered: 0, // joins answered with `missed` (no snapshot)
  snapshots: 0, // joins answered with a snapshot (missed null, or no marker at all)
  missedEvents: 0,
  gaps: 0,
  epochChanges: 0,
  resyncs: 0,
  dropped: 0, // stamped broadcasts dropped as already had
  held: 0,
  unstamped: 0, // task broadcasts without _live (a server without recovery)
  joinFailures: 0,
  serverDisconnects: 0,
  unexpectedMarkers: 0, // a marker for a room with no join under way (a protocol breach: should stay 0)
};

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

function log(...parts) {
  process.stderr.write(`[chaos_watcher] ${parts.join(" ")}\n`);
}

/** One project's tasks as this watcher sees them: by id, higher version wins, deletions final. */
class TaskStore {
  constructor() {
    this.items = new Map();
    this.deleted = new Set();
    this.liveSinceJoin = new Set();
    this.parts = new Map(); // snapshot id -> {parts, frames: Map(part -> tasks)}
  }

  joining() {
    this.liveSinceJoin = new Set();
    this.parts.clear(); // a snapshot cut off by a disconnect never completes
  }

  apply(task, live = true) {
    if (this.deleted.has(task.id)) return;
    if (live) this.liveSinceJoin.add(task.id);
    const current = this.items.get(task.id);
    if (current && current.version >= task.version) return;
    this.items.set(task.id, task);
  }

  remove(id) {
    this.deleted.add(id);
    this.liveSinceJoin.add(id);
    this.items.delete(id);
  }

  snapshotFrame(frame) {
    const tasks = Array.isArray(frame.tasks) ? frame.tasks : [];
    const parts = Number(frame.parts) || 1;
    let all = tasks;
    if (parts > 1) {
      const id = String(frame.snapshot ?? "");
      let entry = this.parts.get(id);
      if (!entry) this.parts.set(id, (entry = { parts, frames: new Map() }));
      entry.frames.set(Number(frame.part) || 1, tasks);
      if (entry.frames.size < entry.parts) {
        for (const task of tasks) this.apply(task, false);
        return false;
      }
      this.parts.delete(id);
      all = [...entry.frames.keys()].sort((a, b) => a - b).flatMap((p) => entry.frames.get(p));
    }
    const present = new Set(all.map((t) => t.id));
    for (const id of [...this.items.keys()]) {
      if (!present.has(id) && !this.liveSinceJoin.has(id)) this.items.delete(id);
    }
    for (const task of all) this.apply(task, false);
    return true;
  }

  view() {
    const view = {};
    for (const [id, t] of this.items) if (!t.archived) view[id] = [t.version, t.title, t.status, t.task_order];
    return view;
  }
}

/**
 * Where one room's stamped broadcasts stand. state: "idle" (not joined on this connection), "joining" (join sent,
 * no marker yet: stamped broadcasts are held), "joined".
 */
class Room {
  constructor(projectId) {
    this.projectId = projectId;
    this.store = new TaskStore();
    this.state = "idle";
    this.epoch = null; // from the last marker; null: none yet (or forgotten by a resync)
    this.token = null;
    this.last = 0;
    this.held = [];
    this.inFlight = false;
    this.again = null; // a rejoin wanted while a join is in flight: "since" | "fresh"
    this.markerSeen = false; // this join got its marker
    // The marker said a snapshot follows, and the join's ack (after it) has not come: the position is not ours yet.
    this.snapshotPending = false;
  }
}

class Watcher {
  constructor(cmd) {
    this.id = cmd.id;
    this.cmd = cmd;
    this.generation = 0; // +1 per connect: answers to an older connection's joins are ignored
    this.rooms = new Map(cmd.projects.map((p) => [p, new Room(p)]));
    this.traced = [];
    this.open();
  }

  trace(...entry) {
    this.traced.push([Date.now(), ...entry]);
    if (this.traced.length > TRACE) this.traced.splice(0, this.traced.length - TRACE);
  }

  open() {
    const opts = {
      forceNew: true,
      auth: { token: this.cmd.token },
      reconnectionDelay: 200,
      reconnectionDelayMax: 1500,
      timeout: 5000,
    };
    if (this.cmd.transports) opts.transports = this.cmd.transports;
    const s = io(this.cmd.url, opts);
    this.socket = s;
    s.on("connect", () => {
      if (s !== this.socket) return;
      counters.connects++;
      this.generation++;
      this.trace("connect", s.id);
      for (const room of this.rooms.values()) {
        room.inFlight = false;
        room.again = null;
        this.join(room, "since");
      }
    });
    s.on("disconnect", (reason) => {
      if (s !== this.socket) return;
      this.trace("disconnect", reason);
      for (const room of this.rooms.values()) {
        room.state = "idle";
        room.held = [];
      }
      if (reason === "io server disconnect") {
        // The server closed us (e.g. a client it could not tell to resync): the protocol says rejoin on reconnect.
        counters.serverDisconnects++;
        setTimeout(() => s === this.socket && !s.connected && s.connect(), 200);
      }
    });
    s.on("connect_error", () => {
      // socket.io retries by itself unless the server refused the handshake (then s.active is false).
      if (s === this.socket && !s.active) setTimeout(() => s === this.socket && !s.connected && s.connect(), 500);
    });
    if (!this.cmd.basic) {
      s.on("realtime:joined", (marker) => s === this.socket && this.marker(marker));
      s.on("realtime:resync", () => s === this.socket && this.resync());
    }
    s.on("initial_tasks", (frame) => {
      if (s !== this.socket) return;
      const room = this.rooms.get(String(frame.project_id));
      if (!room) return;
      this.trace("snapshot", room.projectId, `${frame.part}/${frame.parts}`, (frame.tasks || []).map((t) => `${t.id.slice(0, 8)}v${t.version}`).join(" "));
      if (room.store.snapshotFrame(frame)) counters.snapshots++;
    });
    for (const event of ["task_created", "task_updated", "task_deleted"]) {
      s.on(event, (data) => s === this.socket && this.broadcast(event, data));
    }
  }

  close() {
    const s = this.socket;
    this.socket = null;
    if (s) s.disconnect();
  }

  /** Join `room` on this connection: "since" names the last broadcast applied (null when none), "fresh" does not. */
  join(room, mode) {
    const s = this.socket;
    if (!s || !s.connected) return;
    if (room.inFlight) {
      if (room.again !== "fresh") room.again = mode;
      return;
    }
    const generation = this.generation;
    room.inFlight = true;
    room.again = null;
    room.state = "joining";
    room.held = [];
    room.markerSeen = false;
    room.store.joining();
    let since = null;
    if (mode === "since" && room.epoch !== null && !room.snapshotPending) {
      since = { [room.projectId]: { epoch: room.epoch, seq: room.last, token: room.token } };
    }
    counters.joins++;
    this.trace("join", room.projectId, mode, since && since[room.projectId]);
    const payload = this.cmd.basic ? { project_id: room.projectId } : { project_id: room.projectId, since };
    s.timeout(JOIN_TIMEOUT_MS)
      .emitWithAck("join_project", payload)
      .then(
        (ack) => this.joined(room, generation, ack),
        (err) => this.joined(room, generation, { ok: false, error: String(err && err.message) }),
      );
  }

  joined(room, generation, ack) {
    if (generation !== this.generation || this.socket === null) return; // an older connection's join
    room.inFlight = false;
    this.trace("ack", room.projectId, ack && ack.ok, room.markerSeen);
    if (!ack || !ack.ok) {
      counters.joinFailures++;
      log(`${this.id}: join ${room.projectId} failed: ${JSON.stringify(ack)}`);
      room.state = "idle";
      setTimeout(() => generation === this.generation && this.join(room, "since"), RETRY_MS);
      return;
    }
    room.snapshotPending = false; // the snapshot came before this ack
    if (!room.markerSeen) {
      // No marker: a server without recovery. The snapshot came; broadcasts are applied as they come.
      room.state = "joined";
      room.epoch = null;
      for (const [event, data] of room.held) this.apply(room, event, data);
      room.held = [];
    }
    if (room.again) {
      const mode = room.again;
      room.again = null;
      this.join(room, mode);
    }
  }

  marker(marker) {
    const projectId = String((marker.join && marker.join.project_id) ?? marker.room);
    const room = this.rooms.get(projectId);
    if (!room || room.state !== "joining") {
      counters.unexpectedMarkers++;
      log(`${this.id}: unexpected marker ${JSON.stringify(marker).slice(0, 200)}`);
      return;
    }
    counters.markers++;
    this.trace("marker", room.projectId, marker.epoch, marker.seq, marker.token ?? null,
      Array.isArray(marker.missed) ? marker.missed.map(([e, d]) => describe(e, d)) : null);
    room.markerSeen = true;
    room.epoch = marker.epoch;
    room.token = marker.token ?? null;
    if (Array.isArray(marker.missed)) {
      counters.recovered++;
      for (const [event, data] of marker.missed) {
        counters.missedEvents++;
        this.apply(room, event, data);
      }
    }
    // else: the snapshot (initial_tasks) follows, before the ack; cut off by a disconnect, the next join asks for it again
    room.snapshotPending = !Array.isArray(marker.missed) || room.snapshotPending; // a list never brings a snapshot awaited
    room.last = marker.seq;
    room.state = "joined";
    const held = room.held.sort((a, b) => a[1]._live.seq - b[1]._live.seq);
    room.held = [];
    for (const [event, data] of held) this.stamped(room, event, data);
  }

  resync() {
    counters.resyncs++;
    this.trace("resync");
    for (const room of this.rooms.values()) {
      room.epoch = null; // the history we had may be wrong: no since, a full snapshot
      this.join(room, "fresh");
    }
  }

  broadcast(event, data) {
    const stamp = data && data._live;
    const projectId = String(stamp ? stamp.room : data.project_id);
    const room = this.rooms.get(projectId);
    if (!room) return; // not a room this watcher is in
    this.trace("event", describe(event, data), room.state, room.epoch, room.last);
    if (this.cmd.basic || !stamp) {
      if (!stamp) counters.unstamped++;
      this.apply(room, event, data);
      return;
    }
    if (room.state !== "joined") {
      counters.held++;
      room.held.push([event, data]);
      return;
    }
    this.stamped(room, event, data);
  }

  /** A stamped broadcast after the room's marker: the epoch and seq decide. */
  stamped(room, event, data) {
    if (room.state !== "joined") {
      room.held.push([event, data]);
      return;
    }
    const { epoch, seq } = data._live;
    if (room.epoch === null) {
      this.apply(room, event, data); // joined without a marker: nothing to judge by
      return;
    }
    if (epoch !== room.epoch) {
      counters.epochChanges++;
      this.trace("epoch-change", room.projectId, epoch, seq);
      room.held.push([event, data]);
      this.join(room, "since");
      return;
    }
    if (seq <= room.last) {
      counters.dropped++;
      this.trace("drop", room.projectId, seq);
      return;
    }
    if (seq > room.last + 1) {
      counters.gaps++;
      this.trace("gap", room.projectId, room.last, seq);
      room.held.push([event, data]);
      this.join(room, "since");
      return;
    }
    room.last = seq;
    this.apply(room, event, data);
  }

  apply(room, event, data) {
    if (event === "task_deleted") room.store.remove(String(data.task_id));
    else room.store.apply(data);
  }

  view() {
    const projects = {};
    const joining = [];
    for (const [pid, room] of this.rooms) {
      projects[pid] = room.store.view();
      if (room.state !== "joined") joining.push(pid);
    }
    return { connected: Boolean(this.socket && this.socket.connected), projects, joining };
  }
}

/** A broadcast in a trace line: event, task id (8), version, and its stamp. */
function describe(event, data) {
  const id = String(data.task_id ?? data.id ?? "").slice(0, 8);
  const stamp = data._live ? `${data._live.epoch}#${data._live.seq}` : "unstamped";
  return `${event} ${id} v${data.version ?? "-"} ${stamp}`;
}

const watchers = new Map();

function handle(line) {
  line = line.trim();
  if (!line) return;
  const cmd = JSON.parse(line);
  switch (cmd.op) {
    case "add":
      watchers.set(cmd.id, new Watcher(cmd));
      break;
    case "drop": {
      const w = watchers.get(cmd.id);
      // Closing the engine (not socket.disconnect()) is what a network drop looks like: socket.io reconnects.
      if (w && w.socket && w.socket.io.engine) w.socket.io.engine.close();
      break;
    }
    case "reset": {
      const old = watchers.get(cmd.id);
      if (old) old.close();
      watchers.set(cmd.id, new Watcher(old ? old.cmd : cmd));
      break;
    }
    case "clock":
      out({ type: "clock", req: cmd.req, ms: Date.now() });
      break;
    case "trace": {
      const w = watchers.get(cmd.id);
      out({ type: "trace", req: cmd.req, entries: w ? w.traced : [] });
      break;
    }
    case "state": {
      const all = {};
      for (const [id, w] of watchers) all[id] = w.view();
      out({ type: "state", req: cmd.req, watchers: all, counters });
      break;
    }
    case "exit":
      for (const w of watchers.values()) w.close();
      setTimeout(() => process.exit(0), 50);
      break;
    default:
      log("unknown op:", line);
  }
}

process.on("uncaughtException", (err) => log("uncaught:", (err && err.stack) || err));
const rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
rl.on("line", (line) => {
  try {
    handle(line);
  } catch (err) {
    log("bad command:", line, (err && err.stack) || err);
  }
});
rl.on("close", () => handle('{"op":"exit"}'));
out({ type: "ready" });
