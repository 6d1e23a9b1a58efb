// Board: one project's tasks in four columns, kept live through a TaskStore.
// The DOM is only ever drawn from the store; REST answers go through the store too (idempotent by version).
// Every edit says which version it was made from (If-Match): if someone else changed the task first, the
// server refuses it (409) with the task as it is now, which the board shows along with a conflict notice.
import { Live, api, reason } from "../realtime/live.js";
import { TaskStore } from "./tasks.js";
import { $, say } from "../realtime/dom.js";

const STATUSES = ["todo", "doing", "review", "done"];
const LABELS = { todo: "To do", doing: "Doing", review: "Review", done: "Done" };

const board = $("[data-testid=board]");
const projectId = board.dataset.projectId;
const errorLine = $("[data-testid=board-error]");
const conflictLine = $("[data-testid=conflict]");

const showError = (message) => say(errorLine, message);

// --- Rendering ------------------------------------------------------------------------------

const cards = new Map(); // task id -> {el, title, select, renaming}
let renderQueued = false;

function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  queueMicrotask(() => {
    renderQueued = false;
    render();
  });
}

function makeCard(task) {
  const node = document.createElement("article");
  node.className = "task-card";
  node.dataset.testid = "task";
  node.dataset.taskId = task.id;

  const title = document.createElement("p");
  title.className = "task-title";
  title.dataset.testid = "task-title";

  const meta = document.createElement("p");
  meta.className = "task-meta";

  const actions = document.createElement("div");
  actions.className = "task-actions";

  const select = document.createElement("select");
  select.dataset.testid = "task-move";
  select.setAttribute("aria-label", "Status");
  for (const status of STATUSES) select.append(new Option(LABELS[status], status));

  const rename = document.createElement("button");
  rename.type = "button";
  rename.className = "small-button";
  rename.dataset.testid = "task-rename";
  rename.textContent = "Rename";

  const remove = document.createElement("button");
  remove.type = "button";
  remove.className = "small-button danger";
  remove.dataset.testid = "task-delete";
  remove.textContent = "Delete";

  actions.append(select, rename, remove);
  node.append(title, meta, actions);
  const card = { el: node, title, meta, select, renaming: null };

  select.addEventListener("change", () => move(card, select.value));
  rename.addEventListener("click", () => startRename(card));
  remove.addEventListener("click", () => destroy(card));
  return card;
}

function updateCard(card, task) {
  card.task = task;
  card.el.dataset.version = String(task.version);
  card.el.dataset.status = task.status;
  if (card.title.textContent !== task.title) card.title.textContent = task.title;
  if (!card.pending) card.select.value = task.status;
  const meta = [task.assignee, task.feature].filter(Boolean).join(" · ");
  if (card.meta.textContent !== meta) card.meta.textContent = meta;
}

function render() {
  const seen = new Set();
  for (const status of STATUSES) {
    const column = $(`[data-testid=column-${status}]`, board);
    const list = $("[data-role=cards]", column);
    const tasks = store.column(status);
    tasks.forEach((task, index) => {
      seen.add(task.id);
      let card = cards.get(task.id);
      if (!card) {
        card = makeCard(task);
        cards.set(task.id, card);
      }
      updateCard(card, task);
      if (list.children[index] !== card.el) list.insertBefore(card.el, list.children[index] || null);
    });
    $("[data-role=count]", column).textContent = String(tasks.length);
  }
  for (const [id, card] of cards) {
    if (!seen.has(id)) {
      card.el.remove();
      cards.delete(id);
    }
  }
}

// --- Live -------------------------------------------------------------------------------------

const store = new TaskStore(scheduleRender);
const live = new Live();
window.__live = live;

live.on("initial_tasks", (data) => {
  if (data.project_id === projectId) store.snapshotFrame(data); // one frame of a snapshot, or all of it
});
const applyTask = (task) => {
  if (task.project_id === projectId) store.apply(task);
};
live.on("task_created", (task) => {
  if (task.project_id === projectId) store.created(task); // a task moved back into this project comes back
});
live.on("task_updated", applyTask);
live.on("task_deleted", (data) => {
  if (data.project_id === projectId) store.remove(data.task_id);
});

// Every (re)join (a reconnect, a resync): events from then on are newer than a snapshot it may bring.
const onJoin = () => store.joining();
live.want(`project:${projectId}`, "join_project", { project_id: projectId }, (ack) => {
  if (ack.ok) {
    if (errorLine.dataset.source === "join") showError("");
  } else {
    errorLine.dataset.source = "join";
    showError(`Cannot follow this project: ${ack.error}`);
  }
}, { onJoin });

// --- Actions (REST) -------------------------------------------------------------------------

/** A REST write; `version` (the task version the user saw) goes as If-Match, so a stale edit is refused, not applied. */
async function write(method, url, body, version) {
  const headers = version === undefined ? {} : { "If-Match": `"${version}"` };
  const answer = await api(method, url, body, headers);
  if (answer.status === 409 && answer.data && answer.data.current) {
    conflict(answer.data.current);
  } else if (answer.status >= 400) {
    errorLine.dataset.source = "rest";
    showError(reason(answer.data));
  } else {
    if (errorLine.dataset.source === "rest") showError("");
    say(conflictLine, "");
  }
  return answer;
}

/** Someone else changed the task first: show it as it is now, and say that this user's change was not applied. */
function conflict(current) {
  store.apply(current);
  conflictLine.dataset.taskId = current.id;
  say(conflictLine, `“${current.title}” was changed by someone else; your change was not applied — review and retry.`);
}

const newTitle = $("[data-testid=new-task-title]");
$("form[data-role=new-task]").addEventListener("submit", async (event) => {
  event.preventDefault();
  const title = newTitle.value.trim();
  if (!title) return;
  const { status, data } = await write("POST", `/api/projects/${projectId}/tasks/`, { title });
  if (status === 201) {
    newTitle.value = "";
    store.apply(data);
  }
});

async function move(card, status) {
  card.pending = true;
  try {
    const answer = await write("PATCH", `/api/tasks/${card.task.id}/`, { status }, card.task.version);
    if (answer.status === 200) store.apply(answer.data);
  } finally {
    card.pending = false;
    if (card.task) card.select.value = card.task.status; // the store decides where it is
  }
}

async function destroy(card) {
  const { status } = await write("DELETE", `/api/tasks/${card.task.id}/`, undefined, card.task.version);
  if (status === 204) store.remove(card.task.id);
}

function startRename(card) {
  if (card.renaming) {
    card.renaming.focus();
    return;
  }
  const input = document.createElement("input");
  input.type = "text";
  input.maxLength = 255;
  input.className = "rename-input";
  input.dataset.testid = "task-rename-input";
  input.value = card.task.title;
  input.setAttribute("aria-label", "New title");
  // The version the user started from: a change arriving while they type makes their rename a conflict.
  const version = card.task.version;
  card.renaming = input;
  card.title.hidden = true;
  card.title.after(input);
  input.focus();
  input.select();

  const finish = () => {
    input.remove();
    card.renaming = null;
    card.title.hidden = false;
  };
  input.addEventListener("keydown", async (event) => {
    if (event.key === "Escape") {
      finish();
    } else if (event.key === "Enter") {
      event.preventDefault();
      const title = input.value.trim();
      if (!title || title === card.task.title) return finish();
      input.disabled = true;
      const answer = await write("PATCH", `/api/tasks/${card.task.id}/`, { title }, version);
      if (answer.status === 200) {
        store.apply(answer.data);
        finish();
      } else if (answer.status === 409) {
        finish(); // the card now shows the other user's title; Rename again to retry
      } else {
        input.disabled = false;
        input.focus();
      }
    }
  });
}
