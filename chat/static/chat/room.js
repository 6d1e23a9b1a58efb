// One chat room: history on (re)join, new messages live, sending over Socket.IO.
import { Live } from "../realtime/live.js";
import { $, say } from "../realtime/dom.js";

const live = new Live();
window.__live = live;

const room = $("[data-testid=chat-room]");
const sessionId = room.dataset.sessionId;
const me = room.dataset.username;
const list = $("[data-testid=chat-messages]");
const empty = $("[data-role=empty]");
const input = $("[data-testid=chat-input]");
const errorLine = $("[data-testid=chat-error]");

const showError = (message) => say(errorLine, message);

const messages = new Map(); // id -> message
const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });

function messageNode(message) {
  const node = document.createElement("li");
  node.className = message.author === me ? "message mine" : "message";
  node.dataset.testid = "chat-message";
  node.dataset.messageId = message.id;
  const author = document.createElement("span");
  author.className = "author";
  author.textContent = message.author;
  const when = document.createElement("time");
  when.dateTime = message.created_at;
  when.textContent = timeFormat.format(new Date(message.created_at));
  const body = document.createElement("p");
  body.className = "body";
  body.textContent = message.body;
  node.append(author, " ", when, body);
  return node;
}

function render() {
  const ordered = [...messages.values()].sort((a, b) => a.created_at.localeCompare(b.created_at) || a.id.localeCompare(b.id));
  list.replaceChildren(...ordered.map(messageNode));
  empty.hidden = ordered.length > 0;
  list.scrollTop = list.scrollHeight; // newest in view
}

// History replaces what we show; merged by id, so a message that arrived live just before it is kept.
live.on("chat_history", (data) => {
  if (data.session_id !== sessionId) return;
  for (const message of data.messages) messages.set(message.id, message);
  render();
});
live.on("chat_message", (message) => {
  if (message.session_id !== sessionId || messages.has(message.id)) return;
  messages.set(message.id, message);
  render();
});

live.want(`chat:${sessionId}`, "join_chat", { session_id: sessionId }, (ack) => {
  if (!ack.ok) showError(`Cannot join this chat: ${ack.error}`);
  else if (errorLine.dataset.source !== "send") showError("");
});

$("form[data-role=send]").addEventListener("submit", async (event) => {
  event.preventDefault();
  const body = input.value.trim();
  if (!body) return;
  const send = $("[data-testid=chat-send]");
  send.disabled = true;
  try {
    const ack = await live.call("chat_message", { session_id: sessionId, body });
    if (ack.ok) {
      input.value = "";
      showError("");
    } else {
      errorLine.dataset.source = "send";
      showError(`Not sent: ${ack.error}`);
    }
  } finally {
    send.disabled = false;
    input.focus();
  }
});
