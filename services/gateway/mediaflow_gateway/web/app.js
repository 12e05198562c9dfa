// mediaflow's page: sign in, submit links, watch tasks live. Plain JavaScript, no build step.
//
// Live updates come from the event stream (/v1/events). A task the stream has not spoken
// for since it (re)connected is polled instead (GET /v1/tasks/{id} with If-None-Match,
// every 3 s), so a blocked or broken stream costs freshness, never correctness; the
// stream is retried every ~10 s and resumes from the last event id it saw.
"use strict";

const POLL_INTERVAL_MS = 3000;
const STREAM_RETRY_MS = 10000;
const TERMINAL = new Set(["succeeded", "failed", "canceled"]);

const $ = (selector) => document.querySelector(selector);

// id -> {task, etag, live, element}; `live`: the open stream has sent this task.
const tasks = new Map();
let stream = null;
let lastEventId = "";
let streamRetry = null;
let pollTimer = null;
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

// --- signing in and out ---------------------------------------------------------------

async function start() {
  $("#auth-form").addEventListener("submit", onAuthSubmit);
  $("#task-form").addEventListener("submit", onTaskSubmit);
  $("#sign-out").addEventListener("click", onSignOut);
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
}

async function showSignedIn(user) {
  stopWatching();
  $("#who").textContent = user.email;
  $("#account").hidden = false;
  $("#signed-out").hidden = true;
  $("#signed-in").hidden = false;
  showNotice("");
  await Promise.all([refreshCredits(), loadTasks()]);
  openStream();
  pollTimer = setInterval(pollRound, POLL_INTERVAL_MS);
}

// The stream was refused: if that is because the session ended, say so.
async function checkSession() {
  const response = await api("GET", "/v1/auth/session").catch(() => null);
  if (response?.status === 401) showSignedOut(await problemText(response));
}

async function refreshCredits() {
  const response = await api("GET", "/v1/me").catch(() => null);
  if (response?.ok) {
    const balance = (await response.json()).credits.balance;
    $("#credits").textContent = `${balance} credit${balance === 1 ? "" : "s"}`;
  }
}

async function loadTasks() {
  const response = await api("GET", "/v1/tasks?limit=50").catch(() => null);
  if (response === null || !response.ok) {
    showNotice(response ? await problemText(response) : "Your tasks could not be loaded.");
    return;
  }
  // Newest first from the API; each is added on top, so add the oldest first.
  for (const task of (await response.json()).items.reverse()) update(task, { live: false });
}

// --- submitting and canceling -------------------------------------------------------------

async function onTaskSubmit(event) {
  event.preventDefault();
  const form = event.currentTarget;
  showNotice("");
  // One key per submission: a retried request cannot create (and charge) a second task.
  const headers = { "Idempotency-Key": crypto.randomUUID() };
  const response = await api("POST", "/v1/tasks", { body: { url: form.url.value.trim() }, headers })
    .catch(() => null);
  if (response === null) {
    showNotice("The server cannot be reached; try again.");
  } else if (response.status === 202) {
    form.url.value = "";
    update((await response.json()).task, { live: false });
    refreshCredits();
  } else if (response.status === 401) {
    showSignedOut(await problemText(response));
  } else {
    showNotice(await problemText(response));
  }
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
  clearTimeout(streamRetry);
  stream?.close();
  stream = null;
  lastEventId = "";
  tasks.clear();
  $("#tasks").replaceChildren();
}

function setConnection(mode) {
  const words = {
    live: "Live updates on.",
    reconnecting: "Reconnecting… checking your tasks every 3 seconds meanwhile.",
    polling: "Live updates are unavailable; checking your tasks every 3 seconds.",
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
  } else if (response.status === 401) {
    showSignedOut(await problemText(response));
  }
}

// --- showing tasks --------------------------------------------------------------------------

function update(task, { live }) {
  let entry = tasks.get(task.id);
  if (entry === undefined) {
    entry = { task, etag: null, live, element: newTaskElement(task) };
    tasks.set(task.id, entry);
    $("#tasks").prepend(entry.element);
  } else {
    entry.live = entry.live || live;
    // A replay after polling may repeat older states: never move a task backwards.
    if (Date.parse(task.updated_at) < Date.parse(entry.task.updated_at)) return;
    if (TERMINAL.has(task.status) && !TERMINAL.has(entry.task.status)) refreshCredits();
    entry.task = task;
  }
  render(entry);
  $("#empty").hidden = tasks.size > 0;
}

function newTaskElement(task) {
  const element = $("#task-template").content.firstElementChild.cloneNode(true);
  element.dataset.taskId = task.id;
  element.querySelector(".cancel").addEventListener("click", () => cancelTask(task.id));
  return element;
}

function render({ task, element }) {
  element.dataset.status = task.status;
  element.querySelector(".source").textContent = task.source_url;
  const bar = element.querySelector("progress");
  const percent = element.querySelector(".percent");
  bar.setAttribute("aria-label", `Progress of ${task.source_url}`);
  if (task.progress === null) {
    bar.removeAttribute("value"); // an indeterminate bar: the size is not known yet
    percent.textContent = task.bytes_done ? formatBytes(task.bytes_done) : "";
  } else {
    bar.value = task.progress;
    percent.textContent = `${task.progress}%`;
  }
  element.querySelector(".state").textContent = describe(task);
  // Many tasks have these controls: their accessible names say which task they act on.
  const link = element.querySelector(".download");
  link.hidden = task.status !== "succeeded";
  link.setAttribute("aria-label", `Download ${task.source_url}`);
  if (!link.hidden) link.href = `/v1/tasks/${task.id}/download`;
  const cancel = element.querySelector(".cancel");
  cancel.hidden = TERMINAL.has(task.status);
  cancel.setAttribute("aria-label", `Cancel ${task.source_url}`);
}

function describe(task) {
  switch (task.status) {
    case "queued":
      return "Waiting for a worker.";
    case "running": {
      const retry = task.attempt > 1 ? ` (attempt ${task.attempt})` : "";
      const total = task.bytes_total ? ` of ${formatBytes(task.bytes_total)}` : "";
      return `Fetching${retry}: ${formatBytes(task.bytes_done)}${total}.`;
    }
    case "succeeded":
      return `Done: ${formatBytes(task.result?.size ?? task.bytes_done)} stored.`;
    case "failed":
      return `Failed: ${task.error?.message ?? "no reason was given."}`;
    case "canceled":
      return "Canceled.";
    default:
      return task.status;
  }
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
