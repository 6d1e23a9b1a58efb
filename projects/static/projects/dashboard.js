// Dashboard: the live project list (projects_update), creating a project, and a tracked import
// followed through project_progress.
import { Live, ProgressState, SnapshotParts, api, reason } from "../realtime/live.js";
import { $, el, say } from "../realtime/dom.js";

const live = new Live();
window.__live = live;

const list = $("[data-testid=project-list]");
const dashboardError = $("[data-testid=dashboard-error]");
const importError = $("[data-testid=import-error]");


const boardUrl = (id) => `/projects/${id}/`;

// --- The live list --------------------------------------------------------------------------

function renderProjects(projects) {
  const items = projects.map((project) => {
    const meta = [`by ${project.owner}`];
    if (project.pinned) meta.unshift("pinned");
    return el(
      "li",
      { class: "project-item", "data-testid": "project-item", "data-project-id": project.id },
      el("a", { href: boardUrl(project.id), class: "project-link" }, project.title),
      el("span", { class: "muted small" }, meta.join(" · ")),
    );
  });
  if (items.length === 0) items.push(el("li", { class: "muted placeholder" }, "No projects yet — create one."));
  list.replaceChildren(...items);
}

// A list may come in several frames: it is complete, and replaces the shown one, only with its last part.
const listParts = new SnapshotParts();
live.socket.on("connect", () => listParts.clear());
live.on("projects_update", (data) => {
  const projects = listParts.add(data, "projects");
  if (projects) renderProjects(projects);
});
live.want("projects", "subscribe_projects", undefined, (ack) => {
  if (!ack.ok) say(dashboardError, `Could not load the projects: ${ack.error}`);
});

// --- New project ------------------------------------------------------------------------------

const newTitle = $("[data-testid=new-project-title]");
$("form[data-role=new-project]").addEventListener("submit", async (event) => {
  event.preventDefault();
  const title = newTitle.value.trim();
  if (!title) return;
  const { status, data } = await api("POST", "/api/projects/", { title });
  if (status === 201) {
    newTitle.value = "";
    say(dashboardError, "");
  } else {
    say(dashboardError, reason(data));
  }
});

// --- Tracked import -------------------------------------------------------------------------

const panel = $("[data-testid=import-progress]");
const fill = $(".progress-fill", panel);
const bar = $(".progress", panel);
const statusBadge = $("[data-testid=import-status]");
const stepText = $("[data-testid=import-step]");
const percentText = $("[data-testid=import-percentage]");
const logText = $("[data-testid=import-log]");
const result = $("[data-testid=import-result]");
const FINAL = new Set(["completed", "error"]);

let current = null; // {id, progress: ProgressState}

function renderProgress(state) {
  const percentage = Math.floor(state.percentage ?? 0);
  panel.dataset.status = state.status;
  panel.dataset.percentage = String(percentage);
  panel.hidden = false;
  fill.style.width = `${percentage}%`;
  bar.setAttribute("aria-valuenow", String(percentage));
  statusBadge.textContent = state.status;
  statusBadge.dataset.status = state.status;
  stepText.textContent = state.step || "";
  percentText.textContent = `${percentage} %`;
  logText.textContent = state.log || "";
  if (state.status === "completed" && state.project) {
    result.replaceChildren(
      "Created ",
      el("a", { href: boardUrl(state.project.id), "data-testid": "import-project-link" }, state.project.title),
      ".",
    );
    result.hidden = false;
  } else if (state.status === "error") {
    result.replaceChildren(el("span", { class: "error" }, state.error || "the import failed"));
    result.hidden = false;
  }
}

live.on("project_progress", (update) => {
  if (!current || update.progressId !== current.id) return;
  const previous = current.progress.state;
  if (previous && FINAL.has(previous.status) && !FINAL.has(update.status)) return; // ended is ended
  renderProgress(current.progress.apply(update));
  if (FINAL.has(update.status)) live.unwant(`progress:${current.id}`, "unsubscribe_progress", { progress_id: current.id });
});

function follow(progressId) {
  if (current) live.unwant(`progress:${current.id}`, "unsubscribe_progress", { progress_id: current.id });
  current = { id: progressId, progress: new ProgressState() };
  panel.dataset.progressId = progressId;
  result.hidden = true;
  renderProgress(current.progress.apply({ progressId, status: "queued", percentage: 0, step: "waiting to start", log: "" }));
  live.want(`progress:${progressId}`, "subscribe_progress", { progress_id: progressId }, (ack) => {
    if (!ack.ok) say(importError, `Could not follow the import: ${ack.error}`);
  });
}

$("form[data-role=import]").addEventListener("submit", async (event) => {
  event.preventDefault();
  const title = $("[data-testid=import-title]").value.trim();
  const format = $("[data-testid=import-format]").value;
  const content = $("[data-testid=import-content]").value;
  const submit = $("[data-testid=import-submit]");
  submit.disabled = true;
  try {
    const { status, data } = await api("POST", "/api/projects/", { title, import_tasks: { format, content } });
    if (status === 202) {
      say(importError, "");
      follow(data.progress_id);
    } else {
      say(importError, reason(data));
    }
  } finally {
    submit.disabled = false;
  }
});
