// The browser half of realtime: one Socket.IO connection per tab, rooms re-joined on every
// (re)connect with their snapshots reloaded, and events applied idempotently.
//
//   <script src="/static/vendor/socket.io/socket.io.min.js"></script>   (socket.io-client from npm)
//   import { Live, ItemStore, ProgressState, api } from "/static/realtime/live.js";
//
// After a reconnect the server has a new session with no rooms: `want` remembers what the page
// watches and sends it again on every connect, naming per room the last broadcast it applied
// (`since`), so the server sends just what was missed, or the snapshot (initial_tasks,
// projects_update, the current progress, chat history) when it cannot: nothing stays stale after a
// blip, a restart or a Redis outage (`realtime:resync`). See the README's "Recovering after a reconnect".
// Large snapshots arrive in several frames ({…, part, parts, snapshot}): SnapshotParts puts them together.

const STATES = ["connected", "reconnecting", "offline"];

export class Live {
  constructor({ indicator = document.querySelector("[data-testid=connection]") } = {}) {
    this.indicator = indicator;
    this.wants = new Map(); // key -> {event, payload, onAck}
    this.handlers = new Map(); // event -> [handler]: what live.on registered (missed events are replayed to them)
    this.streams = new Map(); // room -> {want, epoch (null: unknown), seq, token, tokenEpoch, joining, held, snapshotPending}: where each recoverable room stands
    this.retriedAt = 0; // when the last retry after a server-side close was made (see "disconnect")
    // WebSocket first (a websocket-born connection gets the server's fast broadcast path), falling
    // back to long-polling where websockets are blocked. A page (or a test) may pin the transports:
    // window.LIVE_TRANSPORTS = ["polling"].
    const transports = Array.isArray(window.LIVE_TRANSPORTS) ? window.LIVE_TRANSPORTS : ["websocket", "polling"];
    const options = { withCredentials: true, transports, tryAllTransports: true };
    this.socket = window.io(options);
    this.socket.on("realtime:joined", (marker) => this.joined(marker));
    this.socket.on("realtime:resync", () => this.resync());
    this.socket.on("connect", () => {
      this.setState("connected");
      for (const want of this.wants.values()) this.send(want);
    });
    this.socket.on("disconnect", (reason) => {
      // "io server disconnect": the server closed us (access revoked, a logout, a password change);
      // socket.io won't retry by itself. Try once more after a pause: credentials that are still good
      // (the session that changed its password) reconnect and re-join; revoked ones are refused and
      // stay offline. At most one such retry a minute, so a refusal never turns into a loop.
      if (reason === "io server disconnect") {
        this.setState("offline");
        const now = Date.now();
        if (now - this.retriedAt > 60_000) {
          this.retriedAt = now;
          setTimeout(() => this.socket.connect(), 1_000);
        }
      } else {
        this.setState(navigator.onLine ? "reconnecting" : "offline");
      }
    });
    this.socket.on("connect_error", (err) => {
      this.lastError = err.message;
      this.setState(this.socket.active ? "reconnecting" : "offline");
    });
    window.addEventListener("offline", () => this.setState("offline"));
    window.addEventListener("online", () => {
      if (!this.socket.connected) {
        this.setState("reconnecting");
        this.socket.connect();
      }
    });
    this.setState("reconnecting");
  }

  setState(state) {
    if (!STATES.includes(state)) return;
    this.state = state;
    if (this.indicator) {
      this.indicator.textContent = state;
      this.indicator.dataset.state = state;
    }
  }

  /** Handle `event`; broadcasts of recoverable rooms are checked first (in order, once: see `deliver`). */
  on(event, handler) {
    if (!this.handlers.has(event)) {
      this.handlers.set(event, []);
      this.socket.on(event, (data) => this.deliver(event, data));
    }
    this.handlers.get(event).push(handler);
    return this;
  }

  handle(event, data) {
    for (const handler of this.handlers.get(event) || []) handler(data);
  }

  /**
   * A broadcast stamped `_live: {room, epoch, seq}` is applied once and in order. While its room's join is
   * under way it is held (the join's marker says where the room stands). One seen already is dropped; a gap
   * (one never came) or another epoch (the server lost history) re-joins the room, naming the last one held:
   * the server sends what is missing, or a snapshot. After a join that got no marker (epoch null), the first
   * one sets the position.
   */
  deliver(event, data) {
    const stamp = data && data._live;
    const stream = stamp && this.streams.get(stamp.room);
    if (!stream) return this.handle(event, data);
    if (stream.joining) return void stream.held.push([event, data]);
    if (stream.epoch === null) {
      // Position unknown since a join with no marker (see send()): this broadcast sets it; the snapshot had all before it.
      [stream.epoch, stream.seq] = [stamp.epoch, stamp.seq];
      if (stamp.epoch !== stream.tokenEpoch) stream.token = null; // a token names one epoch: without it, no since (a snapshot)
      return void this.handle(event, data);
    }
    if (stamp.epoch !== stream.epoch) {
      this.handle(event, data); // applied by id and version like any event; the re-join settles the rest
      return void this.send(stream.want);
    }
    if (stamp.seq <= stream.seq) return; // had it already
    if (stamp.seq > stream.seq + 1) return void this.send(stream.want); // one in between never came: held from now on
    stream.seq = stamp.seq;
    this.handle(event, data);
  }

  /** `realtime:joined {join, room, epoch, seq, token, missed}`: where one room of a join stands. */
  joined(marker) {
    const want = [...this.wants.values()].find((w) => sameJoin(w, marker.join));
    if (!want) return this.streams.delete(marker.room); // a join since given up (unwant)
    const previous = this.streams.get(marker.room);
    const stream = { want, epoch: marker.epoch, seq: previous?.epoch === marker.epoch ? previous.seq : 0, token: marker.token,
      tokenEpoch: marker.epoch,
      // A snapshot follows: until the join's ok ack (sent after it) the position is not ours; see send(). A list
      // of missed broadcasts (an older join answered late) does not bring a snapshot still awaited.
      snapshotPending: !marker.missed || Boolean(previous?.snapshotPending) };
    this.streams.set(marker.room, stream);
    for (const [event, data] of marker.missed || []) {
      if (data._live.seq > stream.seq) this.handle(event, data);
    }
    stream.seq = marker.seq; // with missed: all of them; without: the snapshot that follows has them
    for (const [event, data] of previous?.held || []) this.deliver(event, data); // newer than the marker: in order
  }

  /** Emit with acknowledgement; resolves to the server's `{ok, ...}` answer. */
  call(event, payload, { timeoutMs = 10000 } = {}) {
    const args = payload === undefined ? [] : [payload];
    const socket = timeoutMs === null ? this.socket : this.socket.timeout(timeoutMs);
    return socket.emitWithAck(event, ...args).catch((err) => ({ ok: false, error: String(err.message || err) }));
  }

  /**
   * Watch something: `event(payload)` is sent now if connected, and again after every reconnect. Joins of
   * recoverable rooms (every room kind with a snapshot) name what they have (`since`): a rejoin is sent just
   * what it missed. `onJoin` runs before each join is sent (a store resets what a coming snapshot overrides).
   */
  want(key, event, payload, onAck, { recoverable = true, onJoin } = {}) {
    const want = { event, payload, onAck, recoverable, onJoin };
    this.wants.set(key, want);
    if (this.socket.connected) this.send(want);
  }

  /** Stop watching `key`; `leaveEvent(payload)` tells the server. */
  unwant(key, leaveEvent, payload) {
    const want = this.wants.get(key);
    this.wants.delete(key);
    for (const [room, stream] of this.streams) if (stream.want === want) this.streams.delete(room);
    if (leaveEvent && this.socket.connected) this.call(leaveEvent, payload);
  }

  /** `realtime:resync`: the server may have missed broadcasts for us: every room is joined again, with its snapshot. */
  resync() {
    this.streams.clear();
    for (const want of this.wants.values()) this.send(want);
  }

  /** Send a want's join, naming for each of its rooms the last broadcast held; broadcasts meanwhile are held. */
  async send(want) {
    let payload = want.payload;
    if (want.recoverable) {
      const since = {};
      for (const [room, stream] of this.streams) {
        if (stream.want !== want) continue;
        if (!stream.joining) [stream.joining, stream.held] = [true, []];
        // A snapshot cut off before its ack was never had: naming its marker's seq would be told "nothing missed".
        // Nor a room with no position yet (epoch null) or no token for its epoch: its join gets the snapshot.
        if (!stream.snapshotPending && stream.epoch !== null && stream.token) {
          since[room] = { epoch: stream.epoch, seq: stream.seq, token: stream.token };
        }
      }
      payload = { ...(want.payload || {}), since };
    }
    if (want.onJoin) want.onJoin();
    want.inFlight = (want.inFlight || 0) + 1;
    // No timeout: a join is over only when answered, or when the connection drops (socket.io-client then rejects
    // it); one given up on while its snapshot still streams would let a later ack clear snapshotPending too soon.
    const ack = await this.call(want.event, payload, { timeoutMs: null });
    want.inFlight -= 1;
    const snapshotsIn = ack.ok && want.inFlight === 0; // this want's snapshots are all in: no other join of it under way
    for (const stream of this.streams.values()) {
      if (stream.want !== want) continue;
      if (snapshotsIn) stream.snapshotPending = false;
      if (!stream.joining) continue;
      stream.joining = false;
      const held = stream.held.splice(0);
      if (ack.ok) {
        // Still joining at an ok ack: no marker came (joined() replaces the stream), so the server could not reach
        // the room's history and sent the snapshot instead. Where the room stands is unknown until its next
        // broadcast (see deliver()); the old position would take every later broadcast for a gap, each gap
        // fetching the snapshot again.
        [stream.epoch, stream.seq] = [null, 0];
        for (const [event, data] of held) this.deliver(event, data);
      } else {
        // Refused, or the connection dropped: nothing held can be judged; it re-joins on connect.
        for (const [event, data] of held) this.handle(event, data);
      }
    }
    if (want.onAck) want.onAck(ack);
  }
}

/** Whether a marker's `join` ({event, <key>: value}) answers `want` (a UUID the same in any spelling). */
function sameJoin(want, join) {
  const norm = (value) => String(value).toLowerCase().replace(/^urn:uuid:|[{}-]/g, "");
  return (
    want.event === join.event &&
    Object.entries(join).every(([k, v]) => k === "event" || norm(want.payload?.[k]) === norm(v))
  );
}

/**
 * Snapshots (`initial_tasks`, `projects_update`) come in frames `{…, part, parts, snapshot}`, part = 1..parts;
 * this collects the frames of each snapshot (by its `snapshot` id) until all have arrived. A frame without
 * `parts` is a whole snapshot on its own.
 */
export class SnapshotParts {
  constructor({ keep = 4 } = {}) {
    this.keep = keep; // unfinished snapshots remembered at most (a dropped connection leaves one behind)
    this.pending = new Map(); // snapshot id -> {parts, frames: Map(part -> items)}
  }

  /** Add one frame; returns all of its snapshot's `key` items, in order, once the last part is in, else null. */
  add(frame, key) {
    const items = Array.isArray(frame[key]) ? frame[key] : [];
    const parts = Number(frame.parts) || 1;
    if (parts <= 1) return items;
    const id = String(frame.snapshot ?? "");
    let entry = this.pending.get(id);
    if (!entry) {
      entry = { parts, frames: new Map() };
      this.pending.set(id, entry);
      while (this.pending.size > this.keep) this.pending.delete(this.pending.keys().next().value); // oldest first
    }
    entry.frames.set(Number(frame.part) || 1, items);
    if (entry.frames.size < entry.parts) return null;
    this.pending.delete(id);
    return [...entry.frames.keys()].sort((a, b) => a - b).flatMap((part) => entry.frames.get(part));
  }

  clear() {
    this.pending.clear();
  }
}

/**
 * Items of one room (tasks, notes…), applied idempotently: by `id`, the higher `version` wins, deletions are
 * final. `key` names the snapshot frames' list (`initial_tasks` frames carry `tasks`).
 */
export class ItemStore {
  constructor(onChange, { key = "items" } = {}) {
    this.key = key;
    this.items = new Map();
    this.deleted = new Set();
    this.liveSinceJoin = new Set();
    this.parts = new SnapshotParts();
    this.onChange = onChange || (() => {});
  }

  /** Call when (re)joining: events from now on are newer than the coming snapshot's read. */
  joining() {
    this.liveSinceJoin = new Set();
    this.parts.clear(); // frames of a snapshot cut off by the disconnect never complete
  }

  apply(item, { live = true } = {}) {
    if (this.deleted.has(item.id)) return false;
    if (live) this.liveSinceJoin.add(item.id);
    const current = this.items.get(item.id);
    if (current && current.version >= item.version) return false;
    this.items.set(item.id, item);
    this.onChange();
    return true;
  }

  /** A `*_created` event: applied even for a deleted id (an item moved back into this room after it left). */
  created(item) {
    this.deleted.delete(item.id);
    return this.apply(item);
  }

  remove(id) {
    this.deleted.add(id);
    this.liveSinceJoin.add(id);
    if (this.items.delete(id)) this.onChange();
  }

  /** A whole snapshot: authoritative for everything not touched live since the join. */
  snapshot(items) {
    const present = new Set(items.map((t) => t.id));
    for (const id of [...this.items.keys()]) {
      if (!present.has(id) && !this.liveSinceJoin.has(id)) this.items.delete(id);
    }
    for (const item of items) this.apply(item, { live: false });
    this.onChange();
  }

  /**
   * One snapshot frame: its items apply at once (idempotently, so parts simply merge); when the
   * snapshot's last part is in, items it does not list (and not touched live since the join) go.
   */
  snapshotFrame(frame) {
    const all = this.parts.add(frame, this.key);
    if (all) {
      this.snapshot(all);
      return;
    }
    for (const item of frame[this.key] || []) this.apply(item, { live: false });
  }
}

/** One operation's progress: status changes are taken, the percentage never moves backwards. */
export class ProgressState {
  constructor() {
    this.state = null;
  }

  apply(update) {
    const previous = this.state;
    const percentage = Math.max(previous ? previous.percentage : 0, update.percentage ?? 0);
    this.state = { ...previous, ...update, percentage };
    return this.state;
  }
}

function cookie(name) {
  const match = document.cookie.split("; ").find((c) => c.startsWith(name + "="));
  return match ? decodeURIComponent(match.split("=")[1]) : "";
}

/** JSON REST call with the session cookie and CSRF token (and any extra `headers`, e.g. If-Match); resolves to `{status, data}`. */
export async function api(method, url, body, headers = {}) {
  const response = await fetch(url, {
    method,
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRFToken": cookie("csrftoken"), ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { detail: text };
  }
  return { status: response.status, data };
}

/** A short readable reason from an API error answer. */
export function reason(data) {
  if (!data) return "request failed";
  if (data.errors) return data.errors.map((e) => `${e.field}: ${e.message}`).join("; ");
  return data.detail || JSON.stringify(data);
}
