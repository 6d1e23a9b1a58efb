// The reference: a plain Node.js socket.io 4 server with the same room protocol.
// Clients join with `join_project {project_id}` (acked); POST /emit?room=R&n=K&event=E broadcasts K messages
// (with &title=T each carries that title, so a harness can match a request to its deliveries; with &payload=task
// each is a task as the Django path sends it, stamped, instead of a small counter).
import { createServer } from "node:http";
import { Server } from "socket.io";

const port = Number(process.argv[2] || 3000);
const http = createServer((req, res) => {
  const url = new URL(req.url, "http://x");
  if (url.pathname === "/emit") {
    const room = url.searchParams.get("room");
    const n = Number(url.searchParams.get("n") || 1);
    const event = url.searchParams.get("event") || "task_updated";
    const title = url.searchParams.get("title");
    const t0 = Date.now();
    const asTask = url.searchParams.get("payload") === "task";
    for (let seq = 0; seq < n; seq++) {
      const small = title === null ? { seq, t: t0 } : { seq, t: t0, title };
      io.to(room).emit(event, asTask ? stampedTask(room, seq, small) : small);
    }
    res.end("ok");
    return;
  }
  res.statusCode = 404;
  res.end();
});
// A task as projects.schemas.TaskOut serializes it, stamped as realtime.history does: about the size and shape of the
// Django path's task_updated (ids and epoch are placeholders of the same length; `seq` is kept on top, for the load
// generator's count). Built afresh per message, as the server's are.
function stampedTask(room, seq, { t, title }) {
  const at = new Date(t).toISOString().replace("Z", "123Z"); // Django's timestamps carry microseconds: the same length
  return {
    id: "de1f2478-47e5-4062-9a64-f1f01f2a6a3b", project_id: "147712d0-5c63-4ffb-b303-d18473b01063", parent_task_id: null,
    title: title ?? `b${seq}`, description: "", status: "todo", assignee: "User", task_order: 0, feature: "", sources: [],
    code_examples: [], archived: false, archived_at: null, created_at: at, updated_at: at, version: seq + 2,
    _live: { room, epoch: "6f1c2a9e4b7d3a10.1", seq: seq + 1 }, seq,
  };
}

const io = new Server(http, { perMessageDeflate: false, transports: ["websocket", "polling"] });
io.on("connection", (socket) => {
  socket.on("join_project", (data, ack) => {
    socket.join(String(data.project_id));
    if (typeof ack === "function") ack({ ok: true });
  });
});
http.listen(port, "127.0.0.1", () => console.log(`node socket.io on ${port}`));
