// Model output as markdown: marked renders it, DOMPurify sanitises the HTML before it is inserted
// (never one without the other), highlight.js colours fenced code blocks, each with a Copy button.
// The three are classic scripts loaded before this module (static/vendor/, see its README).

/* global marked, DOMPurify, hljs */

// Links open in a new tab and never get the opener.
DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A" && node.getAttribute("href")) {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer");
  }
});

export function renderMarkdown(element, text, { final = true } = {}) {
  element.dataset.source = text;
  const html = marked.parse(text, { gfm: true, breaks: false, async: false });
  element.innerHTML = DOMPurify.sanitize(html, { USE_PROFILES: { html: true } });
  for (const code of element.querySelectorAll("pre > code")) {
    // While streaming, highlight only finished blocks: an open fence changes language mid-way.
    if (final || code.parentElement.nextElementSibling) hljs.highlightElement(code);
    addCopyButton(code.parentElement);
  }
}

function addCopyButton(pre) {
  const wrapper = document.createElement("div");
  wrapper.className = "code-block";
  const lang = [...pre.firstElementChild.classList].find((c) => c.startsWith("language-"));
  const bar = document.createElement("div");
  bar.className = "code-bar";
  const label = document.createElement("span");
  label.textContent = lang ? lang.slice(9) : "code";
  const button = document.createElement("button");
  button.type = "button";
  button.className = "copy ghost small";
  button.setAttribute("data-testid", "copy-code");
  button.textContent = "Copy";
  button.addEventListener("click", () => copyText(pre.textContent.replace(/\n$/, ""), button));
  bar.append(label, button);
  pre.replaceWith(wrapper);
  wrapper.append(bar, pre);
}

export async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = "Copied";
  } catch {
    button.textContent = "Copy failed";
  }
  setTimeout(() => {
    button.textContent = "Copy";
  }, 1500);
}
