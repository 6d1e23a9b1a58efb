// The reference: a plain Node.js socket.io 4 server with the same room protocol.
// Clients join with `join_project {project_id}` (acked); POST /emit?room=R&n=K&event=E broadcasts K messages
// (with &title=T each carries that title, so a harness can match a request to its deliveries).
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
    for (let seq = 0; seq < n; seq++) io.to(room).emit(event, title === null ? { seq, t: t0 } : { seq, t: t0, title });
    res.end("ok");
    return;
  }
  res.statusCode = 404;
  res.end();
});
const io = new Server(http, { perMessageDeflate: false, transports: ["websocket", "polling"] });
io.on("connection", (socket) => {
  socket.on("join_project", (data, ack) => {
    socket.join(String(data.project_id));
    if (typeof ack === "function") ack({ ok: true });
  });
});
http.listen(port, "127.0.0.1", () => console.log(`node socket.io on ${port}`));
