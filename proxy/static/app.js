// The playground: threads, models, a streaming chat and a Stop button, against the proxy's own HTTP API.
//
// Stop follows the cancel endpoint's "Frontend Integration": close the stream first (abort the
// fetch) for instant feedback, then POST the cancel endpoint; on `quick_edit` the message goes back
// into the input and both bubbles disappear, on `keep_partial` the partial answer stays, marked
// as stopped.
//
// Model output is markdown: marked turns it into HTML and DOMPurify sanitises that HTML before it
// reaches the page (never one without the other); user messages are shown as text. The message
// list is the only thing that scrolls: it follows the stream unless the user scrolls up.

import { copyText, renderMarkdown } from "./markdown.js";

const KEY_STORAGE = "lmstudio-proxy.api-key";
const MODEL_STORAGE = "lmstudio-proxy.model";
const DEFAULT_MODEL_STORAGE = "lmstudio-proxy.default-model";
const ORGANIZATION = "org_local";
const PHONE = window.matchMedia("(max-width: 760px)");

const $ = (id) => document.getElementById(id);
const ui = {
  app: $("app"),
  keyScreen: $("key-screen"),
  keyForm: $("key-form"),
  keyInput: $("key-input"),
  keyError: $("key-error"),
  keySave: $("key-save"),
  keyCancel: $("key-cancel"),
  changeKey: $("change-key"),
  model: $("model"),
  modelPicker: $("model-picker"),
  toggleThreads: $("toggle-threads"),
  threadsPanel: $("threads"),
  scrim: $("scrim"),
  newThread: $("new-thread"),
  threads: $("thread-list"),
  messages: $("messages"),
  empty: $("empty"),
  jump: $("jump"),
  status: $("status"),
  errorBanner: $("error-banner"),
  errorText: $("error-text"),
  errorAction: $("error-action"),
  errorClose: $("error-close"),
  composer: $("composer"),
  attachments: $("attachments"),
  attach: $("attach"),
  fileInput: $("file-input"),
  prompt: $("prompt"),
  send: $("send"),
  stop: $("stop"),
};

const state = {
  key: localStorage.getItem(KEY_STORAGE) || "",
  threadId: null, // the thread shown, null for a new chat
  turn: null, // the streaming turn, if any
  models: [], // [{value, label, vision}]
  filesSupported: null, // null: not probed yet; false: the files API answers 404
  attachments: [], // [{file_id, name, url}]
  follow: true, // the message list sticks to the bottom
  lastScrollTop: 0,
};

class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message || body?.detail || `The proxy answered HTTP ${status}.`);
    this.status = status;
    this.code = body?.error?.code;
  }
}

// -- HTTP ----------------------------------------------------------------------------------

async function api(path, { method = "GET", body, form, signal, key = state.key } = {}) {
  const headers = { "X-API-Key": key };
  let payload;
  if (form !== undefined) payload = form;
  else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  return fetch(path, { method, headers, body: payload, signal });
}

async function apiJson(path, options) {
  const response = await api(path, options);
  const body = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) {
    const error = new ApiError(response.status, body);
    if (response.status === 401) keyRejected(error);
    throw error;
  }
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

// -- scrolling: the message list follows the stream unless the user scrolled up ------------

function nearBottom() {
  const m = ui.messages;
  return m.scrollHeight - m.scrollTop - m.clientHeight < 48;
}

function scrollToBottom() {
  ui.messages.scrollTop = ui.messages.scrollHeight;
  state.lastScrollTop = ui.messages.scrollTop;
}

function contentGrew() {
  if (state.follow) scrollToBottom();
  ui.jump.hidden = state.follow || nearBottom();
}

ui.messages.addEventListener("scroll", () => {
  const top = ui.messages.scrollTop;
  // Moving up is the user (content only grows at the bottom); reaching the bottom again re-attaches.
  if (top < state.lastScrollTop - 2) state.follow = false;
  if (nearBottom()) state.follow = true;
  state.lastScrollTop = top;
  ui.jump.hidden = state.follow || nearBottom();
});

ui.jump.addEventListener("click", () => {
  state.follow = true;
  scrollToBottom();
  ui.jump.hidden = true;
});

// -- rendering -----------------------------------------------------------------------------

function bubble(role, text = "", { id } = {}) {
  const item = document.createElement("li");
  item.className = `message ${role}`;
  item.dataset.role = role;
  if (id) item.dataset.messageId = id;
  item.setAttribute("data-testid", "message");
  const head = document.createElement("div");
  head.className = "head";
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = role === "user" ? "You" : role === "tool" ? "Tool" : "Assistant";
  head.append(who);
  const content = document.createElement("div");
  content.className = role === "assistant" ? "content markdown" : "content";
  content.setAttribute("data-testid", "message-content");
  item.append(head, content);
  setContent(item, text);
  ui.messages.append(item);
  ui.empty.hidden = true;
  contentGrew();
  return item;
}

function setContent(item, text, options) {
  const content = contentOf(item);
  if (item.dataset.role === "assistant") renderMarkdown(content, text, options);
  else {
    content.dataset.source = text;
    content.textContent = text;
  }
}

function contentOf(item) {
  return item.querySelector(".content");
}

function collapsible(item, kind, summary, body) {
  const details = document.createElement("details");
  details.className = `extra ${kind}`;
  details.setAttribute("data-testid", kind);
  const title = document.createElement("summary");
  title.textContent = summary;
  const pre = document.createElement("pre");
  pre.className = "extra-body";
  pre.textContent = body;
  details.append(title, pre);
  contentOf(item).before(details);
  return details;
}

// A call shows where it runs: on an MCP server (the proxy runs it) or in the client.
function showToolBlock(item, block) {
  const where = block.server_label ? ` (MCP: ${block.server_label})` : "";
  if (block.type === "tool_call") {
    const args = typeof block.tool_arguments === "string" ? block.tool_arguments : JSON.stringify(block.tool_arguments, null, 2);
    collapsible(item, "tool-call", `Tool call: ${block.tool_name}${where}`, args ?? "");
  } else if (block.type === "tool_result") {
    const result = typeof block.tool_result === "string" ? block.tool_result : JSON.stringify(block.tool_result, null, 2);
    const details = collapsible(item, "tool-result", `Tool result: ${block.tool_name}${where}${block.is_error ? " (error)" : ""}`, result ?? "");
    if (block.is_error) details.classList.add("error");
  }
}

// A function call the client would run: here, the user answers it by hand.
function answerForm(item, call) {
  const form = document.createElement("form");
  form.className = "tool-answer";
  form.setAttribute("data-testid", "tool-answer");
  const label = document.createElement("label");
  label.textContent = `Result of ${call.tool_name}`;
  const input = document.createElement("textarea");
  input.rows = 2;
  input.placeholder = "What the tool returned (text or JSON)";
  input.setAttribute("data-testid", "tool-answer-input");
  label.append(input);
  const button = document.createElement("button");
  button.type = "submit";
  button.textContent = "Send result";
  button.setAttribute("data-testid", "tool-answer-send");
  form.append(label, button);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text || state.turn) return;
    form.remove();
    send(text, { toolCallId: call.id });
  });
  contentOf(item).after(form);
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

function addActions(item) {
  item.querySelector(".actions-row")?.remove();
  if (!state.threadId) return;
  const row = document.createElement("div");
  row.className = "actions-row";
  if (item.dataset.role === "user" && item.dataset.messageId) {
    row.append(smallButton("Edit", "edit-message", () => startEdit(item)));
  }
  if (item.dataset.role === "assistant") {
    row.append(smallButton("Copy", "copy-message", (event) => copyText(contentOf(item).dataset.source, event.target)));
    const user = previousUser(item);
    if (user?.dataset.messageId) {
      row.append(smallButton("Regenerate", "regenerate", () => regenerate(user)));
    }
  }
  if (row.childElementCount) item.append(row);
}

function smallButton(label, testid, onClick) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "ghost small";
  button.textContent = label;
  button.setAttribute("data-testid", testid);
  button.addEventListener("click", onClick);
  return button;
}

function previousUser(item) {
  for (let node = item.previousElementSibling; node; node = node.previousElementSibling) {
    if (node.dataset.role === "user") return node;
  }
  return null;
}

function refreshActions() {
  for (const item of ui.messages.children) addActions(item);
}

function setStatus(text) {
  ui.status.textContent = text || (state.turn ? "" : "Enter sends · Shift+Enter for a new line · Esc stops an answer");
}

function showError(message, action) {
  ui.errorText.textContent = message;
  ui.errorBanner.hidden = false;
  ui.errorAction.hidden = !action;
  if (action) {
    ui.errorAction.textContent = action.label;
    ui.errorAction.onclick = action.run;
  }
}

function clearError() {
  ui.errorBanner.hidden = true;
  ui.errorText.textContent = "";
}

function describe(err) {
  if (err.code === "MODEL_BACKEND_UNAVAILABLE") return `LM Studio is not reachable: ${err.message}`;
  if (err.status === 401) return `The proxy did not accept this API key: ${err.message}`;
  if (err instanceof TypeError) return `The proxy is not reachable: ${err.message}`;
  return err.message;
}

function setStreaming(on) {
  ui.send.hidden = on;
  ui.stop.hidden = !on;
  ui.stop.disabled = false;
  ui.newThread.disabled = on;
  ui.model.disabled = on;
  ui.changeKey.disabled = on;
  ui.attach.disabled = on;
  // Screen readers announce the answer once it is complete, not token by token.
  ui.messages.setAttribute("aria-busy", String(on));
  for (const button of ui.threads.querySelectorAll("button")) button.disabled = on;
  for (const button of ui.messages.querySelectorAll(".actions-row button")) button.disabled = on;
}

// -- threads -------------------------------------------------------------------------------

function threadTitle(thread) {
  return thread.title?.trim() || "New chat";
}

function renderThreads(threads) {
  const sorted = [...threads.filter((t) => t.is_pinned), ...threads.filter((t) => !t.is_pinned)];
  ui.threads.replaceChildren();
  for (const thread of sorted) {
    const item = document.createElement("li");
    item.className = "thread-row";
    item.setAttribute("data-testid", "thread-row");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "thread";
    button.dataset.threadId = thread.id;
    button.dataset.messageCount = String(thread.message_count);
    button.setAttribute("data-testid", "thread-item");
    if (thread.id === state.threadId) button.setAttribute("aria-current", "true");
    const title = document.createElement("span");
    title.className = "title";
    title.setAttribute("data-testid", "thread-title");
    title.textContent = `${thread.is_pinned ? "📌 " : ""}${threadTitle(thread)}`;
    title.title = threadTitle(thread);
    const meta = document.createElement("span");
    meta.className = "meta";
    const when = thread.last_message_at || thread.updated_at || thread.created_at || "";
    meta.textContent = `${thread.message_count} message${thread.message_count === 1 ? "" : "s"} · ${when.slice(0, 16).replace("T", " ")}`;
    button.append(title, meta);
    button.addEventListener("click", () => openThread(thread.id));

    const tools = document.createElement("div");
    tools.className = "thread-tools";
    tools.append(
      smallButton("Rename", "thread-rename", () => startRename(item, thread)),
      smallButton(thread.is_pinned ? "Unpin" : "Pin", "thread-pin", () => togglePin(thread)),
      smallButton("Delete", "thread-delete", (event) => deleteThread(thread, event.target)),
    );
    item.append(button, tools);
    ui.threads.append(item);
  }
  ui.threads.dataset.loaded = "true";
  setStreaming(Boolean(state.turn));
}

async function refreshThreads() {
  try {
    const page = await apiJson("v1/threads?limit=100&order=desc");
    renderThreads(page.data);
  } catch (err) {
    if (err.status !== 401) showError(`Could not list chats: ${describe(err)}`);
  }
}

function startRename(item, thread) {
  const input = document.createElement("input");
  input.className = "rename";
  input.value = thread.title || "";
  input.setAttribute("data-testid", "thread-rename-input");
  input.setAttribute("aria-label", "Chat title");
  item.replaceChildren(input);
  input.focus();
  input.select();
  let done = false;
  const finish = async (save) => {
    if (done) return;
    done = true;
    const title = input.value.trim();
    if (save && title && title !== thread.title) {
      try {
        await apiJson(`v1/threads/${encodeURIComponent(thread.id)}`, { method: "PATCH", body: { title } });
      } catch (err) {
        showError(`Could not rename the chat: ${describe(err)}`);
      }
    }
    refreshThreads();
  };
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter") finish(true);
    else if (event.key === "Escape") {
      event.stopPropagation();
      finish(false);
    }
  });
  input.addEventListener("blur", () => finish(true));
}

async function togglePin(thread) {
  try {
    await apiJson(`v1/threads/${encodeURIComponent(thread.id)}/${thread.is_pinned ? "unpin" : "pin"}`, { method: "POST" });
  } catch (err) {
    showError(`Could not ${thread.is_pinned ? "unpin" : "pin"} the chat: ${describe(err)}`);
  }
  refreshThreads();
}

async function deleteThread(thread, button) {
  // Two clicks: the first arms the button, so a stray tap deletes nothing.
  if (button.dataset.armed !== "true") {
    button.dataset.armed = "true";
    button.textContent = "Delete?";
    button.classList.add("armed");
    return;
  }
  try {
    await apiJson(`v1/threads/${encodeURIComponent(thread.id)}`, { method: "DELETE" });
    if (state.threadId === thread.id) newChat();
  } catch (err) {
    showError(`Could not delete the chat: ${describe(err)}`);
  }
  refreshThreads();
}

// A new thread gets a title once its first answer is in: the server's generateName (which stores
// it), else the start of the first message, stored with a PATCH.
async function nameThread(threadId, firstMessage) {
  try {
    const response = await api(`v1/threads/${encodeURIComponent(threadId)}/generateName`, { method: "POST", body: {} });
    if (response.ok) return;
    // No generateName here (404), or it failed: the start of the message is a better title than none.
    const words = firstMessage.replace(/\[tokens=\d+\]/g, "").trim().split(/\s+/).slice(0, 6).join(" ");
    const title = words.length > 48 ? `${words.slice(0, 47)}…` : words;
    if (title) await apiJson(`v1/threads/${encodeURIComponent(threadId)}`, { method: "PATCH", body: { title } });
  } catch {
    // A title is a nicety: the list shows "New chat" without one.
  }
}

// -- models --------------------------------------------------------------------------------

function modelEntries(listing) {
  // v5's shape {models:[{id, key, name, capabilities}]} or the older {data:[{id, display_name, loaded}]};
  // when both are there, the older one still says which models are loaded.
  const older = new Map((listing?.data || []).map((m) => [m.id, m]));
  const vision = (m) => (m.capabilities || []).includes("vision") || m.vision === true;
  if (Array.isArray(listing?.models)) {
    return listing.models.map((m) => {
      const value = m.key || m.id;
      return {
        value,
        label: m.name || value,
        loaded: m.loaded ?? m.is_loaded ?? older.get(value)?.loaded,
        vision: vision(m) || vision(older.get(value) || {}),
        is_default: m.is_default === true,
      };
    });
  }
  return [...older.values()].map((m) => ({
    value: m.id,
    label: m.display_name || m.id,
    loaded: m.loaded,
    vision: vision(m),
    is_default: m.is_default === true,
  }));
}

function defaultModelName(listing, entries) {
  const named = listing?.default_model || entries.find((m) => m.is_default)?.value;
  const learned = localStorage.getItem(DEFAULT_MODEL_STORAGE);
  const guess = named || (entries.some((m) => m.value === learned) ? learned : null) || entries.find((m) => m.loaded)?.value;
  return entries.find((m) => m.value === guess)?.label || guess || null;
}

async function refreshModels() {
  try {
    const listing = await apiJson("v1/models");
    const entries = modelEntries(listing);
    state.models = entries;
    state.defaultModel = defaultModelName(listing, entries);
    const wanted = localStorage.getItem(MODEL_STORAGE) || "";
    const options = [new Option(state.defaultModel ? `Default (${state.defaultModel})` : "Default model", "")];
    for (const model of entries) options.push(new Option(`${model.label}${model.loaded ? " · loaded" : ""}`, model.value));
    for (const [alias, target] of Object.entries(listing.aliases || {})) {
      options.push(new Option(`${alias} → ${target}`, alias));
    }
    ui.model.replaceChildren(...options);
    ui.model.value = options.some((o) => o.value === wanted) ? wanted : "";
  } catch (err) {
    if (err.status !== 401) showError(`Could not list models: ${describe(err)}`);
  }
  updateAttach();
}

// The server names the model it used: the "Default" option says which one from then on.
function learnDefaultModel(model) {
  localStorage.setItem(DEFAULT_MODEL_STORAGE, model);
  const label = state.models.find((m) => m.value === model)?.label || model;
  if (state.defaultModel === label) return;
  state.defaultModel = label;
  ui.model.options[0].text = `Default (${label})`;
  updateAttach();
}

function chosenModel() {
  const value = ui.model.value;
  if (value) return state.models.find((m) => m.value === value);
  return state.models.find((m) => m.label === state.defaultModel || m.value === state.defaultModel);
}

function updateAttach() {
  const vision = Boolean(chosenModel()?.vision);
  ui.attach.hidden = !(vision && state.filesSupported);
  if (ui.attach.hidden && state.attachments.length) clearAttachments();
}

async function probeFiles() {
  try {
    const response = await api(`v1/organizations/${ORGANIZATION}/files?limit=1`);
    state.filesSupported = response.ok;
  } catch {
    state.filesSupported = false;
  }
  updateAttach();
}

// -- attachments ---------------------------------------------------------------------------

async function uploadImage(file) {
  const form = new FormData();
  form.append("files", file, file.name);
  const response = await api(`v1/organizations/${ORGANIZATION}/files/upload`, { method: "POST", form });
  const body = await response.json().catch(() => null);
  if (response.status === 404) {
    state.filesSupported = false;
    updateAttach();
  }
  if (!response.ok) throw new ApiError(response.status, body);
  const stored = body?.files?.[0] || body;
  if (!stored?.id) throw new Error("The upload answered without a file id.");
  return stored.id;
}

function renderAttachments() {
  ui.attachments.replaceChildren();
  for (const attachment of state.attachments) {
    const chip = document.createElement("span");
    chip.className = "chip";
    chip.setAttribute("data-testid", "attachment");
    const image = document.createElement("img");
    image.src = attachment.url;
    image.alt = "";
    const name = document.createElement("span");
    name.textContent = attachment.name;
    const remove = smallButton("✕", "remove-attachment", () => {
      state.attachments = state.attachments.filter((a) => a !== attachment);
      URL.revokeObjectURL(attachment.url);
      renderAttachments();
    });
    remove.setAttribute("aria-label", `Remove ${attachment.name}`);
    chip.append(image, name, remove);
    ui.attachments.append(chip);
  }
  ui.attachments.hidden = state.attachments.length === 0;
}

function clearAttachments() {
  for (const a of state.attachments) URL.revokeObjectURL(a.url);
  state.attachments = [];
  renderAttachments();
}

ui.attach.addEventListener("click", () => ui.fileInput.click());
ui.fileInput.addEventListener("change", async () => {
  const file = ui.fileInput.files?.[0];
  ui.fileInput.value = "";
  if (!file) return;
  setStatus(`Uploading ${file.name}…`);
  try {
    const fileId = await uploadImage(file);
    state.attachments.push({ file_id: fileId, name: file.name, url: URL.createObjectURL(file) });
    renderAttachments();
    clearError();
  } catch (err) {
    showError(`Could not attach ${file.name}: ${describe(err)}`);
  }
  setStatus("");
});

// -- loading -------------------------------------------------------------------------------

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

function renderMessages(messages, { keepScroll = false } = {}) {
  const top = ui.messages.scrollTop;
  const follow = !keepScroll || state.follow;
  ui.messages.replaceChildren();
  ui.empty.hidden = messages.length > 0;
  for (const message of messages) {
    if (message.role === "tool") {
      // A tool's result: collapsed under a "Tool" heading, like the call it answers.
      const item = bubble("tool", "", { id: message.id });
      const meta = message.metadata || {};
      showToolBlock(item, {
        type: "tool_result", tool_name: meta.tool_name || "the call", tool_result: message.content,
        server_label: meta.server_label, is_error: meta.is_error,
      });
      continue;
    }
    const item = bubble(message.role, message.content, { id: message.id });
    const reasoning = message.metadata?.reasoning_content || message.reasoning_content;
    if (reasoning) collapsible(item, "reasoning", "Reasoning", reasoning);
    for (const call of message.tool_calls || message.metadata?.tool_calls || []) {
      const fn = call.function || call;
      showToolBlock(item, {
        type: "tool_call", tool_name: fn.name || call.tool_name, tool_arguments: fn.arguments ?? call.tool_arguments,
        server_label: call.server_label,
      });
      const answered = messages.some((m) => m.role === "tool" && (m.tool_call_id || m.metadata?.tool_call_id) === call.id);
      // The proxy runs MCP calls itself: only a function call waits for the user's answer.
      if (!answered && !call.server_label && message === messages[messages.length - 1]) answerForm(item, call);
    }
    if (message.metadata?.cancelled) markStopped(item);
    if (message.metadata?.failed) markFailed(item, message.metadata.error?.message || "failed");
  }
  refreshActions();
  // A re-render of the thread shown leaves a reader who scrolled up where they were.
  state.follow = follow;
  if (follow) scrollToBottom();
  else {
    ui.messages.scrollTop = top;
    state.lastScrollTop = ui.messages.scrollTop;
  }
  ui.jump.hidden = state.follow || nearBottom();
}

async function openThread(threadId) {
  if (state.turn) return;
  state.threadId = threadId;
  closeDrawer();
  clearError();
  for (const button of ui.threads.querySelectorAll("button.thread")) {
    if (button.dataset.threadId === threadId) button.setAttribute("aria-current", "true");
    else button.removeAttribute("aria-current");
  }
  try {
    renderMessages(await loadMessages(threadId));
    setStatus("");
  } catch (err) {
    showError(`Could not load the chat: ${describe(err)}`);
  }
  if (!PHONE.matches) ui.prompt.focus();
}

function newChat() {
  if (state.turn) return;
  state.threadId = null;
  ui.messages.replaceChildren();
  ui.empty.hidden = false;
  for (const button of ui.threads.querySelectorAll("button.thread")) button.removeAttribute("aria-current");
  closeDrawer();
  clearError();
  setStatus("");
  ui.prompt.focus();
}

// -- editing and regenerating (edit_message_id: that message and all later ones are replaced) --

function startEdit(item) {
  if (state.turn) return;
  const content = contentOf(item);
  const original = content.dataset.source;
  const editor = document.createElement("div");
  editor.className = "editor";
  const area = document.createElement("textarea");
  area.value = original;
  area.rows = Math.min(8, original.split("\n").length + 1);
  area.setAttribute("data-testid", "edit-input");
  area.setAttribute("aria-label", "Edit your message");
  const save = smallButton("Send", "edit-save", () => {
    const text = area.value.trim();
    if (text) send(text, { editItem: item });
  });
  save.classList.remove("ghost");
  const cancel = smallButton("Cancel", "edit-cancel", () => {
    editor.remove();
    content.hidden = false;
    addActions(item);
  });
  area.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      save.click();
    } else if (event.key === "Escape") cancel.click();
  });
  editor.append(area, save, cancel);
  content.hidden = true;
  item.querySelector(".actions-row")?.remove();
  content.after(editor);
  area.focus();
}

function regenerate(userItem) {
  if (state.turn) return;
  send(contentOf(userItem).dataset.source, { editItem: userItem });
}

// -- a turn: send, stream, stop ------------------------------------------------------------

async function send(text, { editItem = null, toolCallId = null } = {}) {
  clearError();
  const attachments = editItem || toolCallId ? [] : state.attachments;
  // An edit replaces that message and everything after it, on the server and here.
  const replaced = [];
  if (editItem) {
    for (let node = editItem; node; node = node.nextElementSibling) replaced.push(node);
    for (const node of replaced) node.remove();
  }
  const turn = {
    text,
    threadId: state.threadId,
    newThread: state.threadId === null,
    editMessageId: editItem?.dataset.messageId || null,
    toolCallId,
    replaced,
    attachments,
    controller: new AbortController(),
    user: bubble(toolCallId ? "tool" : "user", text),
    assistant: bubble("assistant"),
    reasoning: null,
    source: "",
    frame: 0,
    stopping: false,
    stopWhenKnown: false,
  };
  turn.assistant.dataset.state = "streaming";
  state.turn = turn;
  state.follow = true;
  scrollToBottom();
  if (!editItem && !toolCallId) {
    ui.prompt.value = "";
    autosize();
    state.attachments = [];
    renderAttachments();
  }
  setStreaming(true);
  setStatus("Waiting for the model…");
  const input = toolCallId ? { role: "tool", tool_call_id: toolCallId, content: text } : { role: "user", content: text };
  if (attachments.length) input.files = attachments.map((a) => ({ file_id: a.file_id }));
  const body = { inputs: [input], stream: true };
  if (turn.threadId) body.thread_id = turn.threadId;
  if (turn.editMessageId) body.edit_message_id = turn.editMessageId;
  if (ui.model.value) body.model = ui.model.value;
  try {
    const response = await api("v1/model/response", { method: "POST", body, signal: turn.controller.signal });
    if (!response.ok) {
      const error = new ApiError(response.status, await response.json().catch(() => null));
      unsend(turn, error);
      return;
    }
    for await (const event of sseEvents(response.body)) {
      onEvent(turn, event);
    }
  } catch (err) {
    if (err.name !== "AbortError") {
      if (turn.threadId && turn.source) failTurn(turn, describe(err));
      else unsend(turn, err);
    }
  } finally {
    // A stop owns the end of its turn (it waits for the cancel endpoint's answer).
    if (!turn.stopping) endTurn(turn);
  }
}

// The request never started: nothing was stored, so take the bubbles back and return the text.
function unsend(turn, error) {
  turn.user.remove();
  turn.assistant.remove();
  for (const node of turn.replaced) ui.messages.append(node);
  ui.empty.hidden = ui.messages.childElementCount > 0;
  if (!turn.editMessageId && !turn.toolCallId) {
    ui.prompt.value = turn.text;
    autosize();
    state.attachments = turn.attachments;
    renderAttachments();
  }
  turn.assistant.dataset.state = "unsent";
  if (error.status === 401) keyRejected(error);
  else showError(describe(error), { label: "Retry", run: () => ui.composer.requestSubmit() });
}

function failTurn(turn, message) {
  flush(turn);
  markFailed(turn.assistant, message);
  setStatus("");
}

function learnThread(turn, threadId) {
  if (!threadId || turn.threadId === threadId) return;
  turn.threadId = threadId;
  if (state.turn === turn) state.threadId = threadId;
  if (turn.stopWhenKnown) stop();
  else if (turn.newThread) refreshThreads();
}

// Re-render the streaming markdown at most once a frame.
function scheduleRender(turn) {
  if (turn.frame) return;
  turn.frame = requestAnimationFrame(() => {
    turn.frame = 0;
    if (turn.assistant.dataset.state !== "streaming") return;
    setContent(turn.assistant, turn.source, { final: false });
    contentGrew();
  });
}

function flush(turn) {
  if (turn.frame) cancelAnimationFrame(turn.frame);
  turn.frame = 0;
  setContent(turn.assistant, turn.source);
  contentGrew();
}

function onEvent(turn, event) {
  switch (event.event) {
    case "response.processing":
      learnThread(turn, event.thread_id);
      break;
    case "response.created":
      learnThread(turn, event.thread_id);
      if (event.user_message_id) turn.user.dataset.messageId = event.user_message_id;
      if (!ui.model.value && event.model) learnDefaultModel(event.model);
      setStatus(`Generating with ${event.model}…`);
      break;
    case "reasoning.started":
      turn.reasoning = collapsible(turn.assistant, "reasoning", "Reasoning…", "");
      break;
    case "reasoning.content":
      if (!turn.reasoning) turn.reasoning = collapsible(turn.assistant, "reasoning", "Reasoning…", "");
      turn.reasoning.querySelector("pre").append(event.content ?? "");
      break;
    case "reasoning.completed":
      if (turn.reasoning) turn.reasoning.querySelector("summary").textContent = "Reasoning";
      break;
    case "response.block":
      showToolBlock(turn.assistant, event.block || {});
      break;
    case "response.content_delta":
      turn.source += event.delta;
      scheduleRender(turn);
      break;
    case "response.completed":
      if (typeof event.response === "string") turn.source = event.response;
      if (event.reasoning_content && !turn.reasoning) collapsible(turn.assistant, "reasoning", "Reasoning", event.reasoning_content);
      turn.assistant.dataset.state = "completed";
      flush(turn);
      setStatus(event.usage ? `Done: ${event.usage.output_tokens} tokens.` : "Done.");
      break;
    case "response.error":
      turn.assistant.dataset.state = "error";
      failTurn(turn, event.code === "MODEL_BACKEND_UNAVAILABLE" ? `LM Studio is not reachable: ${event.message}` : event.message);
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
  if (turn.assistant.dataset.state === "streaming") {
    turn.assistant.dataset.state = "ended";
    flush(turn);
  }
  setStreaming(false);
  const named = turn.newThread && turn.threadId && turn.assistant.dataset.state === "completed";
  if (named) nameThread(turn.threadId, turn.text).then(refreshThreads);
  else refreshThreads();
  refreshActions();
}

function applyCancel(turn, mode) {
  if (turn.frame) cancelAnimationFrame(turn.frame);
  turn.frame = 0;
  if (mode === "quick_edit") {
    turn.user.remove();
    turn.assistant.remove();
    turn.assistant.dataset.state = "cancelled";
    ui.prompt.value = turn.text;
    autosize();
    state.attachments = turn.attachments;
    renderAttachments();
    // The thread that request created is deleted with its last messages: back to a new chat.
    if (turn.newThread && state.turn === turn) state.threadId = null;
    // An edit cancelled early restores the messages it replaced.
    for (const node of turn.replaced) ui.messages.append(node);
    ui.empty.hidden = ui.messages.childElementCount > 0;
    setStatus("Stopped: your message is back in the box to edit.");
  } else {
    flush(turn);
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
    if (result.cancel_mode !== "quick_edit" || turn.editMessageId) await reloadShown(turn.threadId);
  } catch (err) {
    if (err.status === 404) {
      // It finished before the cancel arrived: show what the server stored.
      setStatus("The answer had already finished.");
      await reloadShown(turn.threadId);
    } else {
      markStopped(turn.assistant);
      showError(`Cancel failed: ${describe(err)}`);
    }
  } finally {
    endTurn(turn);
  }
}

// Re-render the shown thread from the store: the bubbles then hold exactly what was saved.
async function reloadShown(threadId) {
  if (state.threadId !== threadId) return;
  try {
    renderMessages(await loadMessages(threadId), { keepScroll: true });
  } catch (err) {
    showError(`Could not reload the chat: ${describe(err)}`);
  }
}

// -- the key, and start-up -----------------------------------------------------------------

function showKeyForm({ message = "", cancellable = false } = {}) {
  ui.app.hidden = true;
  ui.modelPicker.hidden = true;
  ui.changeKey.hidden = true;
  ui.toggleThreads.hidden = true;
  ui.keyScreen.hidden = false;
  ui.keyForm.hidden = false;
  ui.keyCancel.hidden = !cancellable;
  ui.keyInput.value = state.key;
  ui.keyError.textContent = message;
  ui.keyError.hidden = !message;
  ui.keyInput.focus();
  if (message) ui.keyInput.select();
}

function keyRejected(error) {
  // The text in the composer stays where it is (the chat is only hidden).
  showKeyForm({ message: `The proxy did not accept this API key: ${error.message}` });
}

function start() {
  ui.keyScreen.hidden = true;
  ui.keyForm.hidden = true;
  ui.app.hidden = false;
  ui.modelPicker.hidden = false;
  ui.changeKey.hidden = false;
  ui.toggleThreads.hidden = false;
  setStatus("");
  refreshModels();
  refreshThreads();
  probeFiles();
  if (!PHONE.matches) ui.prompt.focus();
}

ui.keyForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const key = ui.keyInput.value.trim();
  if (!key) return;
  ui.keySave.disabled = true;
  ui.keyError.hidden = true;
  try {
    // Check the key before leaving the form: a wrong key is said here, not after.
    const response = await api("v1/threads?limit=1", { key });
    if (response.status === 401) {
      const error = new ApiError(401, await response.json().catch(() => null));
      ui.keyError.textContent = `The proxy did not accept this API key: ${error.message}`;
      ui.keyError.hidden = false;
      ui.keyInput.select();
      return;
    }
  } catch (err) {
    ui.keyError.textContent = describe(err);
    ui.keyError.hidden = false;
    return;
  } finally {
    ui.keySave.disabled = false;
  }
  state.key = key;
  localStorage.setItem(KEY_STORAGE, key);
  start();
});

ui.keyCancel.addEventListener("click", start);
ui.changeKey.addEventListener("click", () => showKeyForm({ cancellable: Boolean(state.key) }));
ui.model.addEventListener("change", () => {
  localStorage.setItem(MODEL_STORAGE, ui.model.value);
  updateAttach();
});
ui.newThread.addEventListener("click", newChat);
ui.stop.addEventListener("click", stop);
ui.errorClose.addEventListener("click", clearError);
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && state.turn) stop();
  else if (event.key === "Escape" && ui.threadsPanel.classList.contains("open")) closeDrawer();
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

// The box grows with its text, up to a limit (then it scrolls).
function autosize() {
  ui.prompt.style.height = "auto";
  ui.prompt.style.height = `${Math.min(ui.prompt.scrollHeight + 2, 200)}px`;
}
ui.prompt.addEventListener("input", autosize);

// -- the chat list as a drawer on a phone -------------------------------------------------------

function openDrawer() {
  ui.threadsPanel.classList.add("open");
  ui.scrim.hidden = false;
  ui.toggleThreads.setAttribute("aria-expanded", "true");
}

function closeDrawer() {
  ui.threadsPanel.classList.remove("open");
  ui.scrim.hidden = true;
  ui.toggleThreads.setAttribute("aria-expanded", "false");
}

ui.toggleThreads.addEventListener("click", () => {
  if (ui.threadsPanel.classList.contains("open")) closeDrawer();
  else openDrawer();
});
ui.scrim.addEventListener("click", closeDrawer);
PHONE.addEventListener("change", closeDrawer);

if (state.key) start();
else showKeyForm();
