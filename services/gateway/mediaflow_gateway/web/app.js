// mediaflow's page: sign in, submit links, watch and manage downloads. Plain JavaScript, no
// build step.
//
// Live updates come from the event stream (/v1/events). A task the stream has not spoken
// for since it (re)connected is polled instead (GET /v1/tasks/{id} with If-None-Match,
// every 3 s), so a blocked or broken stream costs freshness, never correctness; the
// stream is retried every ~10 s and resumes from the last event id it saw.
"use strict";

const POLL_INTERVAL_MS = 3000;
const STREAM_RETRY_MS = 10000;
const PAGE_SIZE = 20;
const TERMINAL = new Set(["succeeded", "failed", "canceled"]);
const DEFAULT_OPTIONS = { quality: "best", mode: "auto", audio_format: "original" };
const OPTIONS_KEY = "mediaflow.options";
const APP_NAME = "mediaflow";

const $ = (selector) => document.querySelector(selector);

// id -> {task, etag, live, element, quarter}; `live`: the open stream has sent this task;
// `quarter`: the last quarter of progress announced to screen readers.
const tasks = new Map();
// Deleted here: a late event or poll answer about one must not bring it back.
const deleted = new Set();
let credits = null; // {balance, task_cost} from /v1/me
let nextCursor = null;
let pagesLoaded = 0;
let stream = null;
let lastEventId = "";
let streamRetry = null;
let pollTimer = null;
let clockTimer = null;
let polling = false;

// --- HTTP ---------------------------------------------------------------------------

async function api(method, path, { body, headers = {} } = {}) {
  const init = { method, headers: { Accept: "application/json", ...headers } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  return fetch(path, init);
}

// The problem's `detail` (API.md: every error is problem+json), else the status line.
async function problemText(response) {
  try {
    const problem = await response.json();
    if (problem && typeof problem.detail === "string") return problem.detail;
  } catch {
    // not JSON: fall through
  }
  return `The server answered ${response.status} ${response.statusText}.`.trim();
}

function showNotice(text) {
  const notice = $("#notice");
  notice.textContent = text;
  notice.hidden = !text;
}

// Said once by screen readers (the region is polite: it waits for a pause).
function announce(text) {
  $("#live").textContent = text;
}

// --- signing in and out ---------------------------------------------------------------

async function start() {
  $("#auth-form").addEventListener("submit", onAuthSubmit);
  $("#task-form").addEventListener("submit", onTaskSubmit);
  $("#url").addEventListener("input", onUrlInput);
  $("#task-form").addEventListener("change", onOptionsChange);
  $("#sign-out").addEventListener("click", onSignOut);
  $("#more").addEventListener("click", loadMore);
  restoreOptions();
  let response;
  try {
    response = await api("GET", "/v1/auth/session");
  } catch {
    showNotice("The server cannot be reached. Check your connection and reload the page.");
    return;
  }
  if (response.ok) {
    await showSignedIn((await response.json()).user);
  } else if (response.status === 401) {
    showSignedOut("");
  } else {
    showNotice(await problemText(response));
  }
}

async function onAuthSubmit(event) {
  event.preventDefault();
  const action = event.submitter?.value === "sign-up" ? "sign-up" : "sign-in";
  const form = event.currentTarget;
  const body = { email: form.email.value.trim(), password: form.password.value };
  showNotice("");
  const response = await api("POST", `/v1/auth/${action}`, { body }).catch(() => null);
  if (response === null) {
    showNotice("The server cannot be reached; try again.");
  } else if (response.ok) {
    form.password.value = "";
    await showSignedIn((await response.json()).user);
  } else {
    showNotice(await problemText(response));
  }
}

async function onSignOut() {
  const response = await api("POST", "/v1/auth/sign-out").catch(() => null);
  if (response === null) {
    // The session may still be valid: do not claim otherwise.
    showNotice("The server cannot be reached, so you are still signed in; try again.");
  } else if (response.ok || response.status === 401) {
    showSignedOut("You are signed out."); // 401: the session had already ended
  } else {
    showNotice(`Signing out failed: ${await problemText(response)}`);
  }
}

function showSignedOut(message) {
  stopWatching();
  $("#account").hidden = true;
  $("#signed-in").hidden = true;
  $("#signed-out").hidden = false;
  showNotice(message);
  $("#email").focus();
}

async function showSignedIn(user) {
  stopWatching();
  $("#who").textContent = user.email;
  $("#account").hidden = false;
  $("#signed-out").hidden = true;
  $("#signed-in").hidden = false;
  showNotice("");
  // Submitting a link is what the page is for: be ready for a paste at once.
  $("#url").focus();
  await Promise.all([refreshCredits(), loadFirstPage()]);
  openStream();
  pollTimer = setInterval(pollRound, POLL_INTERVAL_MS);
  clockTimer = setInterval(refreshTimes, 30000);
}

// The stream was refused: if that is because the session ended, say so.
async function checkSession() {
  const response = await api("GET", "/v1/auth/session").catch(() => null);
  if (response?.status === 401) showSignedOut(await problemText(response));
}

// --- credits ----------------------------------------------------------------------------

function plural(count, word) {
  return `${count} ${word}${count === 1 ? "" : "s"}`;
}

async function refreshCredits() {
  const response = await api("GET", "/v1/me").catch(() => null);
  if (!response?.ok) return;
  credits = (await response.json()).credits;
  renderCredits();
}

function renderCredits() {
  const line = $("#credits");
  const cost = credits.task_cost;
  line.replaceChildren();
  if (cost === 0) {
    line.textContent = "Downloads cost no credits here.";
  } else {
    const balance = document.createElement("strong");
    balance.textContent = plural(credits.balance, "credit");
    const rest =
      credits.balance < cost
        ? `, not enough for a new download: each costs ${plural(cost, "credit")}.`
        : `. Each download costs ${plural(cost, "credit")}, charged when it starts.`;
    line.append("You have ", balance, rest, " A download that fails or is canceled is refunded.");
  }
  line.hidden = false;
}

// --- the history: first page, "more", and keeping it in order -----------------------

async function loadFirstPage() {
  nextCursor = null;
  pagesLoaded = 0;
  await loadPage(null);
  $("#empty").hidden = tasks.size > 0;
}

async function loadMore() {
  const button = $("#more");
  button.disabled = true;
  const before = tasks.size;
  await loadPage(nextCursor);
  button.disabled = false;
  const added = tasks.size - before;
  announce(added ? `${plural(added, "older download")} shown.` : "No older downloads.");
  if (button.hidden) $("#tasks-title").focus();
}

async function loadPage(cursor) {
  const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (cursor) query.set("cursor", cursor);
  const response = await api("GET", `/v1/tasks?${query}`).catch(() => null);
  if (response === null || !response.ok) {
    showNotice(response ? await problemText(response) : "Your downloads could not be loaded.");
    return;
  }
  const page = await response.json();
  for (const task of page.items) update(task, { live: false });
  nextCursor = page.next_cursor;
  pagesLoaded += 1;
  $("#more").hidden = !nextCursor;
  $("#all-shown").hidden = Boolean(nextCursor) || pagesLoaded < 2;
}

// Newest first, as the API lists them; a task from the stream lands in its place.
function newerThan(a, b) {
  return a.created_at === b.created_at ? a.id > b.id : Date.parse(a.created_at) > Date.parse(b.created_at);
}

function place(entry) {
  const list = $("#tasks");
  for (const other of list.children) {
    const task = tasks.get(other.dataset.taskId)?.task;
    if (task && newerThan(entry.task, task)) {
      list.insertBefore(entry.element, other);
      return;
    }
  }
  list.append(entry.element);
}

// --- submitting, retrying, canceling, deleting -----------------------------------------

function chosenOptions() {
  const form = $("#task-form");
  const mode = form.mode.value;
  const options = { mode };
  if (mode !== "audio") options.quality = form.quality.value === "best" ? "best" : Number(form.quality.value);
  if (mode === "audio") options.audio_format = form.audio_format.value;
  return options;
}

function onOptionsChange() {
  const audio = $("#task-form").mode.value === "audio";
  $("#quality-field").hidden = audio;
  $("#audio-format-field").hidden = !audio;
  try {
    localStorage.setItem(OPTIONS_KEY, JSON.stringify(chosenOptions()));
  } catch {
    // storage refused (private mode): the choice lasts for this page only
  }
}

function restoreOptions() {
  let saved = {};
  try {
    saved = JSON.parse(localStorage.getItem(OPTIONS_KEY) ?? "{}") ?? {};
  } catch {
    saved = {};
  }
  const form = $("#task-form");
  const options = { ...DEFAULT_OPTIONS, ...saved };
  for (const radio of form.querySelectorAll('input[name="mode"]')) radio.checked = radio.value === options.mode;
  if ([...form.quality.options].some((o) => o.value === String(options.quality))) form.quality.value = String(options.quality);
  if ([...form.audio_format.options].some((o) => o.value === options.audio_format)) form.audio_format.value = options.audio_format;
  onOptionsChange();
}

function isWebUrl(text) {
  try {
    const url = new URL(text);
    return url.protocol === "http:" || url.protocol === "https:";
  } catch {
    return false;
  }
}

// Paste-and-go: a pasted link that is the whole field starts at once.
function onUrlInput(event) {
  if (event.inputType !== "insertFromPaste") return;
  const field = event.currentTarget;
  field.value = field.value.trim();
  if (isWebUrl(field.value)) field.form.requestSubmit();
}

async function onTaskSubmit(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const button = form.querySelector('button[type="submit"]');
  if (button.disabled) return; // a paste and a click at once: one task
  button.disabled = true;
  try {
    if (await submitTask(form.url.value.trim(), chosenOptions())) form.url.value = "";
  } finally {
    button.disabled = false;
    form.url.focus();
  }
}

// POST /v1/tasks; true when the task was accepted (and is now listed).
async function submitTask(url, options) {
  showNotice("");
  // One key per submission: a retried request cannot create (and charge) a second task.
  const headers = { "Idempotency-Key": crypto.randomUUID() };
  const response = await api("POST", "/v1/tasks", { body: { url, ...options }, headers }).catch(() => null);
  if (response === null) {
    showNotice("The server cannot be reached; try again.");
  } else if (response.status === 202) {
    const task = (await response.json()).task;
    update(task, { live: false });
    $("#empty").hidden = true;
    announce(`${taskName(task)}: download added.`);
    refreshCredits();
    return true;
  } else if (response.status === 401) {
    showSignedOut(await problemText(response));
  } else if (response.status === 402 && credits) {
    showNotice(
      `A download costs ${plural(credits.task_cost, "credit")} and you have ${credits.balance}: ` +
        "no new download can start.",
    );
  } else {
    showNotice(await problemText(response));
  }
  return false;
}

function retryTask(task) {
  // The same link with the same options, as a new task (and a new charge).
  const { quality, mode, audio_format } = task.options;
  return submitTask(task.source_url, mode === "audio" ? { mode, audio_format } : { mode, quality });
}

async function cancelTask(id) {
  const response = await api("POST", `/v1/tasks/${id}/cancel`).catch(() => null);
  if (response?.status === 202) {
    update((await response.json()).task, { live: false });
    refreshCredits();
  } else if (response && response.status !== 409) {
    showNotice(await problemText(response));
  }
}

function confirmDelete(task) {
  const dialog = $("#confirm-delete");
  const running = !TERMINAL.has(task.status) ? " It is stopped first, and its credit refunded." : "";
  $("#delete-text").textContent =
    `“${taskName(task)}” is removed from your downloads, and its stored file deleted. ` +
    `This cannot be undone.${running}`;
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "delete"), { once: true });
    dialog.showModal();
    dialog.querySelector('button[value="keep"]').focus();
  });
}

async function deleteTask(id) {
  const entry = tasks.get(id);
  if (!entry || !(await confirmDelete(entry.task))) return;
  const response = await api("DELETE", `/v1/tasks/${id}`).catch(() => null);
  if (response === null) {
    showNotice("The server cannot be reached; the download was not deleted.");
  } else if (response.status === 204 || response.status === 404) {
    // 404: already gone (deleted from another tab or client).
    const next = entry.element.nextElementSibling ?? entry.element.previousElementSibling;
    forget(id);
    announce(`${taskName(entry.task)} deleted.`);
    (next?.querySelector(".task-actions .button:not([hidden])") ?? $("#tasks-title")).focus();
    refreshCredits();
  } else if (response.status === 401) {
    showSignedOut(await problemText(response));
  } else {
    showNotice(`Deleting failed: ${await problemText(response)}`);
  }
}

function forget(id) {
  deleted.add(id);
  tasks.get(id)?.element.remove();
  tasks.delete(id);
  $("#empty").hidden = tasks.size > 0 || Boolean(nextCursor);
  updateTitle();
}

// --- the live stream and the polling fallback -----------------------------------------------

function openStream() {
  clearTimeout(streamRetry);
  const query = lastEventId ? `?last_event_id=${encodeURIComponent(lastEventId)}` : "";
  const source = new EventSource(`/v1/events${query}`);
  stream = source;
  // A new connection has not spoken for any task yet: poll them until it does.
  for (const entry of tasks.values()) entry.live = false;
  source.addEventListener("open", () => setConnection("live"));
  source.addEventListener("task", (event) => {
    if (event.lastEventId) lastEventId = event.lastEventId;
    update(JSON.parse(event.data), { live: true });
  });
  source.addEventListener("error", () => {
    if (stream !== source) return;
    for (const entry of tasks.values()) entry.live = false;
    if (source.readyState === EventSource.CONNECTING) {
      // The browser reconnects by itself (sending Last-Event-ID); poll meanwhile.
      setConnection("reconnecting");
      return;
    }
    // Refused (an error status, or a proxy that blocks streaming): poll and try later.
    source.close();
    stream = null;
    setConnection("polling");
    checkSession();
    const jitter = 0.75 + Math.random() / 2; // spread many pages' retries apart
    streamRetry = setTimeout(openStream, STREAM_RETRY_MS * jitter);
    pollRound();
  });
}

function stopWatching() {
  clearInterval(pollTimer);
  clearInterval(clockTimer);
  clearTimeout(streamRetry);
  stream?.close();
  stream = null;
  lastEventId = "";
  tasks.clear();
  deleted.clear();
  nextCursor = null;
  $("#tasks").replaceChildren();
  $("#more").hidden = true;
  $("#all-shown").hidden = true;
  updateTitle();
}

function setConnection(mode) {
  const words = {
    live: "Live updates on",
    reconnecting: "Reconnecting… checking every 3 seconds meanwhile",
    polling: "Live updates unavailable; checking every 3 seconds",
  };
  const line = $("#connection");
  line.dataset.mode = mode;
  line.textContent = words[mode];
}

async function pollRound() {
  if (polling) return; // a slow round is still running
  polling = true;
  try {
    const due = [...tasks.values()].filter((entry) => !entry.live && !TERMINAL.has(entry.task.status));
    await Promise.all(due.map(pollTask));
  } finally {
    polling = false;
  }
}

async function pollTask(entry) {
  const headers = entry.etag ? { "If-None-Match": entry.etag } : {};
  const response = await api("GET", `/v1/tasks/${entry.task.id}`, { headers }).catch(() => null);
  if (response === null || response.status === 304) return;
  if (response.ok) {
    entry.etag = response.headers.get("ETag");
    update((await response.json()).task, { live: entry.live });
  } else if (response.status === 404) {
    forget(entry.task.id); // deleted elsewhere
  } else if (response.status === 401) {
    showSignedOut(await problemText(response));
  }
}

// --- showing tasks --------------------------------------------------------------------------

function update(task, { live }) {
  if (deleted.has(task.id)) return;
  let entry = tasks.get(task.id);
  if (entry === undefined) {
    entry = { task, etag: null, live, element: newTaskElement(task), quarter: quarterOf(task) };
    tasks.set(task.id, entry);
    place(entry);
  } else {
    entry.live = entry.live || live;
    // A replay after polling may repeat older states: never move a task backwards.
    if (Date.parse(task.updated_at) < Date.parse(entry.task.updated_at)) return;
    const before = entry.task;
    entry.task = task;
    if (TERMINAL.has(task.status) && !TERMINAL.has(before.status)) refreshCredits();
    announceChange(entry, before);
  }
  render(entry);
  updateTitle();
}

function quarterOf(task) {
  return task.progress === null ? 0 : Math.floor(task.progress / 25);
}

function announceChange(entry, before) {
  const { task } = entry;
  const name = taskName(task);
  if (task.status !== before.status) {
    const words = {
      running: `${name}: downloading.`,
      succeeded: `${name} is ready to download.`,
      failed: `${name} failed: ${task.error?.message ?? "no reason was given."}`,
      canceled: `${name} was canceled.`,
    };
    if (words[task.status]) announce(words[task.status]);
  } else if (task.status === "running" && quarterOf(task) > entry.quarter && task.progress < 100) {
    announce(`${name}: ${task.progress}%.`);
  }
  entry.quarter = quarterOf(task);
}

function newTaskElement(task) {
  const element = $("#task-template").content.firstElementChild.cloneNode(true);
  element.dataset.taskId = task.id;
  element.querySelector(".cancel").addEventListener("click", () => cancelTask(task.id));
  element.querySelector(".delete").addEventListener("click", () => deleteTask(task.id));
  element.querySelector(".retry").addEventListener("click", async (event) => {
    const button = event.currentTarget;
    button.disabled = true;
    await retryTask(tasks.get(task.id)?.task ?? task);
    button.disabled = false;
  });
  return element;
}

// What the user calls the download: its file name once known, else the link's last part.
function taskName(task) {
  if (task.result?.filename) return task.result.filename;
  try {
    const url = new URL(task.source_url);
    const last = url.pathname.split("/").filter(Boolean).pop();
    return last ? decodeURIComponent(last) : url.host;
  } catch {
    return task.source_url;
  }
}

function sourceHost(task) {
  try {
    return new URL(task.source_url).host;
  } catch {
    return "";
  }
}

// "audio" or "video": from the stored file once there is one, else from the options.
function kindOf(task) {
  const type = task.result?.content_type ?? "";
  if (type.startsWith("audio/")) return "audio";
  if (type) return "video";
  return task.options?.mode === "audio" ? "audio" : "video";
}

function extensionOf(task) {
  const name = task.result?.filename ?? "";
  const dot = name.lastIndexOf(".");
  return dot > 0 ? name.slice(dot + 1).toUpperCase() : "";
}

function optionsSummary(options) {
  if (!options) return "";
  if (options.mode === "audio") {
    return options.audio_format === "original" ? "Sound only" : `Sound only, as ${options.audio_format === "mp3" ? "MP3" : "Opus"}`;
  }
  const parts = [];
  if (options.mode === "mute") parts.push("Video only");
  if (options.quality !== "best") parts.push(`Up to ${options.quality}p`);
  return parts.join(", ");
}

const STATUS_WORDS = {
  queued: "Waiting",
  running: "Downloading",
  succeeded: "Ready",
  failed: "Failed",
  canceled: "Canceled",
};

function render(entry) {
  const { task, element } = entry;
  const name = taskName(task);
  const kind = kindOf(task);
  const finished = TERMINAL.has(task.status);
  element.dataset.status = task.status;
  element.dataset.kind = kind;
  element.querySelector(".kind").textContent = extensionOf(task) || (kind === "audio" ? "AUDIO" : "VIDEO");
  const title = element.querySelector(".name");
  title.textContent = name;
  title.title = task.source_url;
  element.querySelector(".status").textContent = STATUS_WORDS[task.status] ?? task.status;
  element.querySelector(".meta").replaceChildren(...metaItems(task));

  // Only unfinished work has a bar: a failed or canceled task must not look busy.
  const meter = element.querySelector(".meter");
  meter.hidden = finished;
  if (!finished) {
    const bar = meter.querySelector("progress");
    bar.setAttribute("aria-label", `Progress of ${name}`);
    const percent = meter.querySelector(".percent");
    if (task.progress === null) {
      bar.removeAttribute("value"); // an indeterminate bar: the size is not known yet
      percent.textContent = task.bytes_done ? formatBytes(task.bytes_done) : "";
    } else {
      bar.value = task.progress;
      percent.textContent = `${task.progress}%`;
    }
  }
  const detail = element.querySelector(".detail");
  detail.textContent = describe(task);
  detail.hidden = !detail.textContent;

  // Many tasks have these controls: their accessible names say which task they act on.
  const link = element.querySelector(".download");
  link.hidden = task.status !== "succeeded";
  link.setAttribute("aria-label", `Download ${name}`);
  if (!link.hidden) link.href = `/v1/tasks/${task.id}/download`;
  const retry = element.querySelector(".retry");
  retry.hidden = !(task.status === "failed" || task.status === "canceled");
  retry.setAttribute("aria-label", `Retry ${name}`);
  const cancel = element.querySelector(".cancel");
  cancel.hidden = finished;
  cancel.setAttribute("aria-label", `Cancel ${name}`);
  element.querySelector(".delete").setAttribute("aria-label", `Delete ${name}`);
}

function metaItems(task) {
  const items = [];
  const add = (text, className = "", title = "") => {
    if (!text) return;
    const item = document.createElement("li");
    if (className) item.className = className;
    if (title) item.title = title;
    if (text instanceof Node) item.append(text);
    else item.textContent = text;
    items.push(item);
  };
  const result = task.result;
  const media = result?.media;
  const extension = extensionOf(task);
  if (result) add(`${extension ? `${extension} ` : ""}${kindOf(task)}`, "type");
  if (result) add(formatBytes(result.size), "size");
  else if (task.bytes_total) add(formatBytes(task.bytes_total), "size");
  if (media?.duration_seconds) add(formatDuration(media.duration_seconds), "duration", "Duration");
  if (media?.height && kindOf(task) === "video") add(`${media.height}p`, "resolution");
  add(optionsSummary(task.options), "choice");
  add(sourceHost(task), "host", task.source_url);
  const time = document.createElement("time");
  time.dateTime = task.created_at;
  time.title = new Date(task.created_at).toLocaleString("en");
  time.textContent = relativeTime(task.created_at);
  add(time, "time");
  return items;
}

function describe(task) {
  const refund = credits?.task_cost === 0 ? "" : " Its credit was refunded.";
  switch (task.status) {
    case "queued":
      return "Waiting for a free worker…";
    case "running": {
      const retry = task.attempt > 1 ? ` (attempt ${task.attempt})` : "";
      const total = task.bytes_total ? ` of ${formatBytes(task.bytes_total)}` : "";
      return `${formatBytes(task.bytes_done)}${total}${retry}`;
    }
    case "failed":
      return `${task.error?.message ?? "No reason was given."}${refund}`;
    case "canceled":
      return `Canceled.${refund}`;
    default:
      return "";
  }
}

// Progress in the tab's title, so a download can be followed from another tab.
function updateTitle() {
  const active = [...tasks.values()].map((entry) => entry.task).filter((task) => !TERMINAL.has(task.status));
  if (active.length === 0) {
    document.title = APP_NAME;
    return;
  }
  const known = active.filter((task) => task.progress !== null);
  const percent = known.length
    ? `${Math.floor(known.reduce((sum, task) => sum + task.progress, 0) / known.length)}%`
    : "…";
  const what = active.length === 1 ? taskName(active[0]) : `${active.length} downloads`;
  document.title = `${percent} · ${what} · ${APP_NAME}`;
}

function refreshTimes() {
  for (const time of document.querySelectorAll("#tasks time")) time.textContent = relativeTime(time.dateTime);
}

const RELATIVE = new Intl.RelativeTimeFormat("en", { numeric: "auto" });

function relativeTime(iso) {
  const seconds = (Date.parse(iso) - Date.now()) / 1000;
  const ago = Math.abs(seconds);
  if (ago < 45) return "just now";
  if (ago < 3600) return RELATIVE.format(Math.round(seconds / 60), "minute");
  if (ago < 86400) return RELATIVE.format(Math.round(seconds / 3600), "hour");
  if (ago < 7 * 86400) return RELATIVE.format(Math.round(seconds / 86400), "day");
  return new Date(iso).toLocaleDateString("en", { day: "numeric", month: "short", year: "numeric" });
}

function formatDuration(total) {
  const seconds = Math.round(total);
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = String(seconds % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

function formatBytes(count) {
  const units = ["bytes", "KB", "MB", "GB", "TB"];
  let value = count;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return unit === 0 ? `${value} bytes` : `${value.toFixed(1)} ${units[unit]}`;
}

start();
