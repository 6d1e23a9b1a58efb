// Chat sessions: the user's sessions (REST) and a form to start one.
import { Live, api, reason } from "../realtime/live.js";
import { $, el, say } from "../realtime/dom.js";

const live = new Live(); // the connection indicator, like every page
window.__live = live;

const list = $("[data-testid=chat-list]");
const errorLine = $("[data-testid=chat-error]");

const showError = (message) => say(errorLine, message);

async function load() {
  const { status, data } = await api("GET", "/api/chat/");
  if (status !== 200) {
    showError(`Cannot list the sessions: ${reason(data)}`);
    return;
  }
  const items = data.map((session) =>
    el(
      "li",
      { class: "session-item", "data-testid": "chat-item", "data-session-id": session.id },
      el("a", { href: `/chat/${session.id}/` }, session.title),
      el("span", { class: "muted small" }, session.participants.join(", ")),
    ),
  );
  if (items.length === 0) items.push(el("li", { class: "muted placeholder" }, "No sessions yet."));
  list.replaceChildren(...items);
}

$("form[data-role=new-session]").addEventListener("submit", async (event) => {
  event.preventDefault();
  const title = $("[data-testid=chat-new-title]").value.trim();
  const participants = $("[data-testid=chat-new-participants]")
    .value.split(",")
    .map((name) => name.trim())
    .filter(Boolean);
  const { status, data } = await api("POST", "/api/chat/", { title, participants });
  if (status === 201) {
    showError("");
    event.target.reset();
    await load();
  } else {
    showError(reason(data));
  }
});

load();
