// The playground: threads, models, a streaming chat and a Stop button, against the proxy's own HTTP API.
//
// Stop follows the cancel endpoint's "Frontend Integration": close the stream first (abort the
// fetch) for instant feedback, then POST the cancel endpoint; on `quick_edit` the message goes back
// into the input and both bubbles disappear, on `keep_partial` the partial answer stays, marked
// as stopped. Rendering uses textContent only: model output is never parsed as HTML.

const KEY_STORAGE = "lmstudio-proxy.api-key";
const MODEL_STORAGE = "lmstudio-proxy.model";

const $ = (id) => document.getElementById(id);
const ui = {
  app: $("app"),
  keyForm: $("key-form"),
  keyInput: $("key-input"),
  changeKey: $("change-key"),
  model: $("model"),
  modelPicker: $("model-picker"),
  newThread: $("new-thread"),
  threads: $("thread-list"),
  messages: $("messages"),
  status: $("status"),
  composer: $("composer"),
  prompt: $("prompt"),
  send: $("send"),
  stop: $("stop"),
};

const state = {
  key: localStorage.getItem(KEY_STORAGE) || "",
  threadId: null, // the thread shown, null for a new chat
  turn: null, // the streaming turn, if any
};

class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message || `HTTP ${status}`);
    this.status = status;
    this.code = body?.error?.code;
  }
}

// -- HTTP ----------------------------------------------------------------------------------

async function api(path, { method = "GET", body, signal } = {}) {
  const headers = { "X-API-Key": state.key };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
  });
  if (response.status === 401) askForKey("The proxy did not accept this API key.");
  return response;
}

async function apiJson(path, options) {
  const response = await api(path, options);
  const body = response.status === 204 ? null : await response.json();
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

// SSE frames from a fetch body: each `data:` line holds JSON with an `event` field; `[DONE]` ends.
async function* sseEvents(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let data = [];
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      const lines = buffer.split("\n");
      buffer = lines.pop();
      for (const raw of lines) {
        const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
        if (line.startsWith("data:")) {
          data.push(line.slice(5).replace(/^ /, ""));
        } else if (line === "" && data.length) {
          const payload = data.join("\n");
          data = [];
          if (payload === "[DONE]") return;
          yield JSON.parse(payload);
        }
      }
    }
  } finally {
    reader.releaseLock();
  }
}

// -- rendering -----------------------------------------------------------------------------

function bubble(role, text = "") {
  const item = document.createElement("li");
  item.className = `message ${role}`;
  item.dataset.role = role;
  item.setAttribute("data-testid", "message");
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = role === "user" ? "You" : "Assistant";
  const content = document.createElement("div");
  content.className = "content";
  content.setAttribute("data-testid", "message-content");
  content.textContent = text;
  item.append(who, content);
  ui.messages.append(item);
  item.scrollIntoView({ block: "end" });
  return item;
}

function contentOf(item) {
  return item.querySelector(".content");
}

function markStopped(item, label = "stopped") {
  item.classList.add("stopped");
  item.dataset.state = "stopped";
  if (!item.querySelector(".badge")) {
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.setAttribute("data-testid", "stopped-label");
    badge.textContent = label;
    item.querySelector(".who").after(badge);
  }
}

function markFailed(item, message) {
  item.classList.add("error");
  item.dataset.state = "error";
  const note = document.createElement("p");
  note.className = "error-note";
  note.setAttribute("data-testid", "error-note");
  note.textContent = message;
  item.append(note);
}

function setStatus(text) {
  ui.status.textContent = text;
}

function setStreaming(on) {
  ui.send.disabled = on;
  ui.stop.hidden = !on;
  ui.newThread.disabled = on;
  ui.model.disabled = on;
  ui.changeKey.disabled = on;
  // Screen readers announce the answer once it is complete, not token by token.
  ui.messages.setAttribute("aria-busy", String(on));
  for (const button of ui.threads.querySelectorAll("button")) button.disabled = on;
}

function renderThreads(threads) {
  ui.threads.replaceChildren();
  for (const thread of threads) {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "thread";
    button.dataset.threadId = thread.id;
    button.dataset.messageCount = String(thread.message_count);
    button.setAttribute("data-testid", "thread-item");
    if (thread.id === state.threadId) button.setAttribute("aria-current", "true");
    const title = document.createElement("span");
    title.className = "title";
    title.textContent = thread.title || thread.id;
    const meta = document.createElement("span");
    meta.className = "meta";
    const when = thread.last_message_at || thread.updated_at || thread.created_at || "";
    meta.textContent = `${thread.message_count} message${thread.message_count === 1 ? "" : "s"} · ${when.slice(0, 16).replace("T", " ")}`;
    button.append(title, meta);
    button.addEventListener("click", () => openThread(thread.id));
    item.append(button);
    ui.threads.append(item);
  }
  ui.threads.dataset.loaded = "true";
  setStreaming(Boolean(state.turn));
}

// -- loading -------------------------------------------------------------------------------

async function refreshThreads() {
  try {
    const page = await apiJson("v1/threads?limit=100&order=desc");
    renderThreads(page.data);
  } catch (err) {
    setStatus(`Could not list threads: ${err.message}`);
  }
}

async function refreshModels() {
  try {
    const listing = await apiJson("v1/models");
    const wanted = localStorage.getItem(MODEL_STORAGE) || "";
    const options = [new Option("Default model", "")];
    for (const model of listing.data) {
      const label = `${model.display_name || model.id}${model.loaded ? " (loaded)" : ""}`;
      options.push(new Option(label, model.id));
    }
    for (const [alias, target] of Object.entries(listing.aliases || {})) {
      options.push(new Option(`${alias} → ${target}`, alias));
    }
    ui.model.replaceChildren(...options);
    ui.model.value = options.some((o) => o.value === wanted) ? wanted : "";
  } catch (err) {
    setStatus(`Could not list models: ${err.message}`);
  }
}

async function loadMessages(threadId) {
  const messages = [];
  let after = "";
  for (;;) {
    const query = `limit=100&order=asc${after ? `&after=${encodeURIComponent(after)}` : ""}`;
    const page = await apiJson(`v1/threads/${encodeURIComponent(threadId)}/messages?${query}`);
    messages.push(...page.data);
    if (!page.has_more || !page.last_id) return messages;
    after = page.last_id;
  }
}

function renderMessages(messages) {
  ui.messages.replaceChildren();
  for (const message of messages) {
    const item = bubble(message.role, message.content);
    if (message.metadata?.cancelled) markStopped(item);
    if (message.metadata?.failed) markFailed(item, message.metadata.error?.message || "failed");
  }
}

async function openThread(threadId) {
  if (state.turn) return;
  state.threadId = threadId;
  for (const button of ui.threads.querySelectorAll("button.thread")) {
    if (button.dataset.threadId === threadId) button.setAttribute("aria-current", "true");
    else button.removeAttribute("aria-current");
  }
  try {
    renderMessages(await loadMessages(threadId));
    setStatus("");
  } catch (err) {
    setStatus(`Could not load the thread: ${err.message}`);
  }
  ui.prompt.focus();
}

function newChat() {
  if (state.turn) return;
  state.threadId = null;
  ui.messages.replaceChildren();
  for (const button of ui.threads.querySelectorAll("button.thread")) button.removeAttribute("aria-current");
  setStatus("");
  ui.prompt.focus();
}

// -- a turn: send, stream, stop ------------------------------------------------------------

async function send(text) {
  const turn = {
    text,
    threadId: state.threadId,
    newThread: state.threadId === null,
    controller: new AbortController(),
    user: bubble("user", text),
    assistant: bubble("assistant"),
    stopping: false,
    stopWhenKnown: false,
  };
  turn.assistant.dataset.state = "streaming";
  state.turn = turn;
  ui.prompt.value = "";
  setStreaming(true);
  setStatus("Waiting for the model…");
  const body = { inputs: [{ role: "user", content: text }], stream: true };
  if (turn.threadId) body.thread_id = turn.threadId;
  if (ui.model.value) body.model = ui.model.value;
  try {
    const response = await api("v1/model/response", { method: "POST", body, signal: turn.controller.signal });
    if (!response.ok) {
      const error = new ApiError(response.status, await response.json().catch(() => null));
      markFailed(turn.assistant, error.message);
      setStatus(`Error: ${error.message}`);
      return;
    }
    for await (const event of sseEvents(response.body)) {
      onEvent(turn, event);
    }
  } catch (err) {
    if (err.name !== "AbortError") {
      markFailed(turn.assistant, err.message);
      setStatus(`Error: ${err.message}`);
    }
  } finally {
    // A stop owns the end of its turn (it waits for the cancel endpoint's answer).
    if (!turn.stopping) endTurn(turn);
  }
}

function learnThread(turn, threadId) {
  if (!threadId || turn.threadId === threadId) return;
  turn.threadId = threadId;
  if (state.turn === turn) state.threadId = threadId;
  if (turn.stopWhenKnown) stop();
  else if (turn.newThread) refreshThreads();
}

function onEvent(turn, event) {
  switch (event.event) {
    case "response.processing":
      learnThread(turn, event.thread_id);
      if (event.message) setStatus(event.message);
      break;
    case "response.created":
      learnThread(turn, event.thread_id);
      setStatus(`Generating with ${event.model}…`);
      break;
    case "response.content_delta":
      contentOf(turn.assistant).append(event.delta);
      break;
    case "response.completed":
      if (typeof event.response === "string") contentOf(turn.assistant).textContent = event.response;
      turn.assistant.dataset.state = "completed";
      setStatus(event.usage ? `Done: ${event.usage.output_tokens} tokens.` : "Done.");
      break;
    case "response.error":
      markFailed(turn.assistant, event.message);
      setStatus(`Error: ${event.message}`);
      break;
    case "response.cancelled":
      // Someone else cancelled this stream (another tab, an SDK): same outcome as our Stop.
      applyCancel(turn, event.cancel_mode);
      break;
    default:
      break;
  }
}

function endTurn(turn) {
  if (state.turn !== turn) return;
  state.turn = null;
  if (turn.assistant.dataset.state === "streaming") turn.assistant.dataset.state = "ended";
  setStreaming(false);
  refreshThreads();
}

function applyCancel(turn, mode) {
  if (mode === "quick_edit") {
    turn.user.remove();
    turn.assistant.remove();
    ui.prompt.value = turn.text;
    // The thread that request created is deleted with its last messages: back to a new chat.
    if (turn.newThread && state.turn === turn) state.threadId = null;
    setStatus("Stopped: your message is back in the box to edit.");
  } else {
    markStopped(turn.assistant);
    setStatus("Stopped: the partial answer was kept.");
  }
}

async function stop() {
  const turn = state.turn;
  if (!turn || turn.stopping) return;
  if (!turn.threadId) {
    // Nothing to cancel by id yet: stop as soon as the stream names its thread.
    turn.stopWhenKnown = true;
    setStatus("Stopping…");
    return;
  }
  turn.stopping = true;
  ui.stop.disabled = true;
  turn.controller.abort(); // close the stream first: instant feedback, no more tokens
  setStatus("Stopping…");
  try {
    const result = await apiJson(`v1/model/response/${encodeURIComponent(turn.threadId)}/cancel`, {
      method: "POST",
    });
    applyCancel(turn, result.cancel_mode);
    if (result.cancel_mode !== "quick_edit") await reloadShown(turn.threadId);
  } catch (err) {
    if (err.status === 404) {
      // It finished before the cancel arrived: show what the server stored.
      setStatus("The answer had already finished.");
      await reloadShown(turn.threadId);
    } else {
      markStopped(turn.assistant);
      setStatus(`Cancel failed: ${err.message}`);
    }
  } finally {
    ui.stop.disabled = false;
    endTurn(turn);
  }
}

// Re-render the shown thread from the store: the bubbles then hold exactly what was saved.
async function reloadShown(threadId) {
  if (state.threadId !== threadId) return;
  try {
    renderMessages(await loadMessages(threadId));
  } catch (err) {
    setStatus(`Could not reload the thread: ${err.message}`);
  }
}

// -- the key, and start-up -----------------------------------------------------------------

function askForKey(message) {
  ui.app.hidden = true;
  ui.modelPicker.hidden = true;
  ui.keyForm.hidden = false;
  ui.keyInput.value = state.key;
  if (message) setStatus(message);
  ui.keyInput.focus();
}

function start() {
  ui.keyForm.hidden = true;
  ui.app.hidden = false;
  ui.modelPicker.hidden = false;
  refreshModels();
  refreshThreads();
  ui.prompt.focus();
}

ui.keyForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const key = ui.keyInput.value.trim();
  if (!key) return;
  state.key = key;
  localStorage.setItem(KEY_STORAGE, key);
  setStatus("");
  start();
});

ui.changeKey.addEventListener("click", () => askForKey(""));
ui.model.addEventListener("change", () => localStorage.setItem(MODEL_STORAGE, ui.model.value));
ui.newThread.addEventListener("click", newChat);
ui.stop.addEventListener("click", stop);
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && state.turn) stop();
});

ui.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = ui.prompt.value.trim();
  if (text && !state.turn) send(text);
});

ui.prompt.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    ui.composer.requestSubmit();
  }
});

if (state.key) start();
else askForKey("");
