// Chat sessions: the user's sessions (REST) and a form to start one.
import { Live, api, reason } from "../realtime/live.js";

const live = new Live(); // the connection indicator, like every page
window.__live = live;

const $ = (selector, root = document) => root.querySelector(selector);
const list = $("[data-testid=chat-list]");
const errorLine = $("[data-testid=chat-error]");

function showError(message) {
  errorLine.textContent = message || "";
  errorLine.hidden = !message;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child);
  return node;
}

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
