// The browser half of realtime: one Socket.IO connection per tab, rooms re-joined on every
// (re)connect with their snapshots reloaded, and events applied idempotently.
//
//   <script src="/static/vendor/socket.io/socket.io.min.js"></script>   (socket.io-client from npm)
//   import { Live, ItemStore, ProgressState, api } from "/static/realtime/live.js";
//
// After a reconnect the server has a new session with no rooms: `want` remembers what the page
// watches and sends it again on every connect, so snapshots (initial_tasks, projects_update, the
// current progress, chat history) are reloaded and nothing stays stale after a blip or a restart.
// Large snapshots arrive in several frames ({…, part, parts, snapshot}): SnapshotParts puts them together.

const STATES = ["connected", "reconnecting", "offline"];

export class Live {
  constructor({ indicator = document.querySelector("[data-testid=connection]") } = {}) {
    this.indicator = indicator;
    this.wants = new Map(); // key -> {event, payload, onAck}
    this.retriedAt = 0; // when the last retry after a server-side close was made (see "disconnect")
    // WebSocket first (a websocket-born connection gets the server's fast broadcast path), falling
    // back to long-polling where websockets are blocked. A page (or a test) may pin the transports:
    // window.LIVE_TRANSPORTS = ["polling"].
    const transports = Array.isArray(window.LIVE_TRANSPORTS) ? window.LIVE_TRANSPORTS : ["websocket", "polling"];
    const options = { withCredentials: true, transports, tryAllTransports: true };
    this.socket = window.io(options);
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

  on(event, handler) {
    this.socket.on(event, handler);
    return this;
  }

  /** Emit with acknowledgement; resolves to the server's `{ok, ...}` answer. */
  call(event, payload) {
    const args = payload === undefined ? [] : [payload];
    return this.socket.timeout(10000).emitWithAck(event, ...args).catch((err) => ({ ok: false, error: String(err.message || err) }));
  }

  /** Watch something: `event(payload)` is sent now if connected, and again after every reconnect. */
  want(key, event, payload, onAck) {
    const want = { event, payload, onAck };
    this.wants.set(key, want);
    if (this.socket.connected) this.send(want);
  }

  /** Stop watching `key`; `leaveEvent(payload)` tells the server. */
  unwant(key, leaveEvent, payload) {
    this.wants.delete(key);
    if (leaveEvent && this.socket.connected) this.call(leaveEvent, payload);
  }

  async send(want) {
    const ack = await this.call(want.event, want.payload);
    if (want.onAck) want.onAck(ack);
  }
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
