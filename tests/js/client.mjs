// Line-oriented driver for the official socket.io-client, used by the Python
// tests (see tests/support/node_client.py).
//
// stdin:  one JSON command per line
//   {"op":"connect","url":"http://127.0.0.1:PORT","auth":{...}|null,
//    "extraHeaders":{...}|null,"transports":["websocket"]|null,"reconnection":false|true}
//   {"op":"emit","id":1,"event":"name","args":[...],"timeout":5000}          -> ack / ack_timeout
//   {"op":"emit","id":2,"event":"name","args":[...],"raw":true}              -> sent (no ack)
//   {"op":"disconnect"}
//   {"op":"exit"}                                  (stdin EOF does the same)
// stdout: one JSON object per line, nothing else
//   {"type":"ready"} {"type":"connect","sid":...} {"type":"connect_error","message":...,"data":...}
//   {"type":"disconnect","reason":...} {"type":"event","event":...,"args":[...]}
//   {"type":"ack","id":...,"args":[...]} {"type":"ack_timeout","id":...} {"type":"sent","id":...}
// Diagnostics go to stderr.

import { createInterface } from "node:readline";
import { io } from "socket.io-client";

let socket = null;
let exiting = false;

function out(obj) {
  let line;
  try {
    line = JSON.stringify(obj);
  } catch (err) {
    line = JSON.stringify({ type: "driver_error", message: `unserialisable output: ${err.message}` });
  }
  // Writes to a pipe are synchronous on POSIX, so each line is flushed as written.
  process.stdout.write(line + "\n");
}

function log(...parts) {
  process.stderr.write(`[client.mjs] ${parts.join(" ")}\n`);
}

function closeSocket() {
  if (socket) {
    const s = socket;
    socket = null;
    try {
      s.disconnect();
    } catch (err) {
      log("disconnect failed:", err && err.message);
    }
  }
}

function connect(cmd) {
  closeSocket(); // only ever one socket at a time
  const opts = { forceNew: true };
  for (const key of ["auth", "extraHeaders", "transports", "reconnection"]) {
    if (cmd[key] !== undefined && cmd[key] !== null) opts[key] = cmd[key];
  }
  const s = io(cmd.url, opts);
  socket = s;
  s.on("connect", () => {
    if (s === socket) out({ type: "connect", sid: s.id });
  });
  s.on("connect_error", (err) => {
    if (s === socket) {
      out({ type: "connect_error", message: err && err.message, data: (err && err.data) ?? null });
    }
  });
  s.on("disconnect", (reason) => {
    // Report even for a socket we closed ourselves on purpose.
    out({ type: "disconnect", reason });
  });
  s.onAny((event, ...args) => {
    if (s === socket) out({ type: "event", event, args });
  });
}

function emit(cmd) {
  const id = cmd.id;
  if (!socket) {
    log(`emit ${id} (${cmd.event}) without a socket`);
    if (cmd.raw) out({ type: "sent", id });
    else out({ type: "ack_timeout", id });
    return;
  }
  const args = Array.isArray(cmd.args) ? cmd.args : [];
  if (cmd.raw) {
    socket.emit(cmd.event, ...args);
    out({ type: "sent", id });
    return;
  }
  socket.timeout(cmd.timeout ?? 5000).emit(cmd.event, ...args, (err, ...resp) => {
    if (err) out({ type: "ack_timeout", id });
    else out({ type: "ack", id, args: resp });
  });
}

function exit() {
  if (exiting) return;
  exiting = true;
  closeSocket();
  // Let the disconnect packet reach the socket before leaving.
  setTimeout(() => process.exit(0), 50);
}

function handle(line) {
  line = line.trim();
  if (!line) return;
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch (err) {
    log("bad JSON command:", line);
    return;
  }
  try {
    switch (cmd.op) {
      case "connect":
        connect(cmd);
        break;
      case "emit":
        emit(cmd);
        break;
      case "disconnect":
        closeSocket();
        break;
      case "exit":
        exit();
        break;
      default:
        log("unknown op:", line);
    }
  } catch (err) {
    log(`op ${cmd.op} failed:`, (err && err.stack) || err);
  }
}

process.on("uncaughtException", (err) => log("uncaught:", (err && err.stack) || err));

const rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
rl.on("line", handle);
rl.on("close", exit);

out({ type: "ready" });
