// Crawl console: start a crawl over REST, follow it over Socket.IO (crawl_progress, crawl:stopping,
// crawl:stopped), stop it, and browse past crawls and their pages over REST.
import { Live, ProgressState, api, reason } from "../realtime/live.js";
import { $, el, say } from "../realtime/dom.js";

const live = new Live();
window.__live = live;

const FINAL = new Set(["completed", "cancelled", "failed"]);
const RUNNING = new Set(["queued", "crawling"]);
const LOG_LINES = 500;

const form = $("form[data-role=crawl-form]");
const errorLine = $("[data-testid=crawl-error]");
const panel = $("[data-testid=crawl-progress]");
const bar = $(".progress", panel);
const fill = $(".progress-fill", panel);
const statusBadge = $("[data-testid=crawl-status]");
const percentText = $("[data-testid=crawl-percentage]");
const pagesDone = $("[data-testid=crawl-pages-done]");
const pagesDiscovered = $("[data-testid=crawl-pages-discovered]");
const currentUrl = $("[data-testid=crawl-current-url]");
const startUrl = $("[data-testid=crawl-start-url]");
const logList = $("[data-testid=crawl-log]");
const stopButton = $("[data-testid=crawl-stop]");
const history = $("[data-testid=crawl-history]");
const historyEmpty = $("[data-role=history-empty]");
const pageList = $("[data-testid=crawl-page-list]");
const pagesOf = $("[data-testid=crawl-pages-of]");

const showError = (message) => say(errorLine, message);

// --- The active crawl -------------------------------------------------------------------------

let active = null; // {id, progress: ProgressState, stopping, lastLog}

function render() {
  const state = active.progress.state || {};
  const status = FINAL.has(state.status) ? state.status : active.stopping ? "stopping" : state.status || "queued";
  const percentage = Math.floor(state.percentage ?? 0);
  panel.dataset.status = status;
  panel.dataset.percentage = String(percentage);
  panel.dataset.progressId = active.id;
  fill.style.width = `${percentage}%`;
  bar.setAttribute("aria-valuenow", String(percentage));
  percentText.textContent = `${percentage} %`;
  statusBadge.textContent = status === "stopping" ? "stopping…" : status;
  statusBadge.dataset.status = status;
  pagesDone.textContent = String(state.pagesDone ?? 0);
  pagesDiscovered.textContent = String(state.pagesDiscovered ?? 0);
  currentUrl.textContent = state.currentUrl || "—";
  startUrl.textContent = state.startUrl || "—";
  stopButton.disabled = FINAL.has(status) || active.stopping;
}

function appendLog(line, kind = "") {
  if (!line) return;
  logList.append(el("li", kind ? { class: kind } : {}, line));
  while (logList.children.length > LOG_LINES) logList.firstElementChild.remove();
  logList.scrollTop = logList.scrollHeight;
}

function watch(progressId, { startUrl: url = "" } = {}) {
  if (active && active.id === progressId) return;
  if (active) live.unwant(`crawl:${active.id}`, "crawl_unsubscribe", { progress_id: active.id });
  active = { id: progressId, progress: new ProgressState(), stopping: false, stopped: false, ended: false, lastLog: null };
  active.progress.apply({ progressId, status: "queued", percentage: 0, pagesDone: 0, pagesDiscovered: 0, currentUrl: "", startUrl: url });
  logList.replaceChildren();
  render();
  live.want(`crawl:${progressId}`, "crawl_subscribe", { progress_id: progressId }, (ack) => {
    if (!ack.ok) showError(`Cannot follow this crawl: ${ack.error}`);
  });
}

function finished() {
  const status = active.progress.state?.status;
  if (!active.ended) {
    active.ended = true;
    loadHistory(); // the table shows how it ended
  }
  // A cancelled crawl still says crawl:stopped (maybe after its final progress): stay until then.
  if (status !== "cancelled" || active.stopped) live.unwant(`crawl:${active.id}`, "crawl_unsubscribe", { progress_id: active.id });
}

live.on("crawl_progress", (update) => {
  if (!active || update.progressId !== active.id) return;
  const previous = active.progress.state;
  if (previous && FINAL.has(previous.status)) return; // ended is ended; a repeat changes nothing
  // The same state again (a re-subscribe after a reconnect sends the current one): log it once.
  const logKey = `${update.timestamp}|${update.log}`;
  if (logKey !== active.lastLog) appendLog(update.log, update.status === "failed" ? "error" : "");
  active.lastLog = logKey;
  active.progress.apply(update);
  render();
  if (FINAL.has(update.status)) finished();
});

live.on("crawl:stopping", (data) => {
  if (!active || data.progressId !== active.id || FINAL.has(active.progress.state?.status)) return;
  active.stopping = true;
  appendLog(data.message || "stopping…", "notice");
  render();
});

live.on("crawl:stopped", (data) => {
  if (!active || data.progressId !== active.id || active.stopped) return;
  active.stopped = true; // said once, whether or not the final crawl_progress came first
  if (!FINAL.has(active.progress.state?.status)) active.progress.apply({ status: "cancelled" });
  appendLog(data.message || "stopped", "notice");
  render();
  finished();
});

stopButton.addEventListener("click", async () => {
  if (!active) return;
  stopButton.disabled = true;
  const ack = await live.call("crawl_stop", { progress_id: active.id });
  if (!ack.ok) {
    showError(`Cannot stop: ${ack.error}`);
    render();
  } else {
    showError("");
  }
});

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const url = $("[data-testid=crawl-url]").value.trim();
  const body = {
    url,
    max_pages: Number($("[data-testid=crawl-max-pages]").value),
    max_depth: Number($("[data-testid=crawl-max-depth]").value),
  };
  const submit = $("[data-testid=crawl-start]");
  submit.disabled = true;
  try {
    const { status, data } = await api("POST", "/api/crawls/", body);
    if (status === 202) {
      showError("");
      watch(data.progress_id, { startUrl: url });
      loadHistory();
    } else {
      showError(reason(data));
    }
  } finally {
    submit.disabled = false;
  }
});

// --- Past crawls and their pages ---------------------------------------------------------------

let selected = null;

async function loadHistory() {
  const { status, data } = await api("GET", "/api/crawls/");
  if (status !== 200) {
    showError(`Cannot list crawls: ${reason(data)}`);
    return;
  }
  const rows = data.map((job) => {
    const row = el(
      "tr",
      { "data-testid": "crawl-row", "data-progress-id": job.progressId, "data-status": job.status, tabindex: "0" },
      el("td", { class: "url" }, job.startUrl),
      el("td", {}, el("span", { class: "badge", "data-status": job.status }, job.status)),
      el("td", { class: "num" }, String(job.pagesDone)),
      el("td", { class: "num" }, String(Math.floor(job.percentage))),
    );
    if (job.progressId === selected) row.classList.add("selected");
    row.addEventListener("click", () => pick(job));
    row.addEventListener("keydown", (event) => {
      if (event.key === "Enter") pick(job);
    });
    return row;
  });
  history.replaceChildren(...rows);
  historyEmpty.hidden = rows.length > 0;
  return data;
}

async function pick(job) {
  selected = job.progressId;
  for (const row of history.children) row.classList.toggle("selected", row.dataset.progressId === selected);
  if (RUNNING.has(job.status)) watch(job.progressId, { startUrl: job.startUrl });
  const { status, data } = await api("GET", `/api/crawls/${job.progressId}/`);
  if (selected !== job.progressId) return; // another row was picked meanwhile
  if (status !== 200) {
    showError(`Cannot load the pages: ${reason(data)}`);
    return;
  }
  pagesOf.textContent = `of ${data.startUrl} (${data.pages.length})`;
  const items = data.pages.map((page) => {
    const code = page.status_code ? String(page.status_code) : "error";
    const ok = !page.error && page.status_code && page.status_code < 400;
    return el(
      "li",
      { class: "page-item", "data-testid": "crawl-page", "data-url": page.url },
      el("span", { class: `code ${ok ? "ok" : "bad"}` }, code),
      el("span", { class: "page-main" }, el("strong", {}, page.title || "(untitled)"), el("span", { class: "url small" }, page.final_url || page.url)),
      el("span", { class: "muted small" }, page.error ? page.error : `depth ${page.depth}`),
    );
  });
  if (items.length === 0) items.push(el("li", { class: "muted placeholder" }, "No pages recorded."));
  pageList.replaceChildren(...items);
}

$("[data-role=refresh-history]").addEventListener("click", () => loadHistory());

// On load: the list, and back on the newest crawl still running (e.g. after a reload).
loadHistory().then((jobs) => {
  const running = (jobs || []).find((job) => RUNNING.has(job.status));
  if (running && !active) watch(running.progressId, { startUrl: running.startUrl });
});
