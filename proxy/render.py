"""Output modes: the generated markdown as text, as plain text, or as typed blocks."""

from __future__ import annotations

from typing import Any

from markdown_it import MarkdownIt
from markdown_it.token import Token

OUTPUT_MODES = (
    ("text", "Rich text with markdown, as the model generated it", True),
    ("plain", "Plain text with all markdown formatting removed", False),
    ("structured", "Typed blocks (response_blocks) for custom UI rendering", False),
    ("blocks", "Same as structured", False),
)

_md = MarkdownIt("commonmark")


def _inline_text(token: Token) -> str:
    out = []
    for child in token.children or []:
        if child.type in ("text", "code_inline", "html_inline"):
            out.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            out.append("\n")
        elif child.type == "image":
            out.append(child.content)
    return "".join(out)


def blocks(markdown: str) -> list[dict[str, Any]]:
    """Markdown → typed blocks: heading, paragraph, list, code, quote, rule."""
    result: list[dict[str, Any]] = []
    tokens = _md.parse(markdown)
    stack: list[dict[str, Any]] = []  # open lists / quotes
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.type == "heading_open":
            result.append({"type": "heading", "level": int(tok.tag[1:]), "text": _inline_text(tokens[i + 1])})
            i += 3
            continue
        if tok.type in ("bullet_list_open", "ordered_list_open"):
            block = {"type": "list", "ordered": tok.type == "ordered_list_open", "items": []}
            (stack[-1]["items"] if stack and stack[-1]["type"] == "list" else result).append(block)
            stack.append(block)
        elif tok.type in ("bullet_list_close", "ordered_list_close", "blockquote_close"):
            stack.pop()
        elif tok.type == "blockquote_open":
            block = {"type": "quote", "text": ""}
            result.append(block)
            stack.append(block)
        elif tok.type == "inline":
            text = _inline_text(tok)
            if stack and stack[-1]["type"] == "list":
                stack[-1]["items"].append(text)
            elif stack and stack[-1]["type"] == "quote":
                stack[-1]["text"] = (stack[-1]["text"] + "\n" + text).strip("\n")
            else:
                result.append({"type": "paragraph", "text": text})
        elif tok.type in ("fence", "code_block"):
            result.append({"type": "code", "language": tok.info.strip() or None, "text": tok.content})
        elif tok.type == "hr":
            result.append({"type": "rule"})
        i += 1
    return result


def _block_text(block: dict[str, Any]) -> str:
    if block["type"] == "list":
        return "\n".join(i if isinstance(i, str) else _block_text(i) for i in block["items"])
    if block["type"] == "code":
        return str(block["text"]).rstrip("\n")
    return str(block.get("text", ""))


def plain(markdown: str) -> str:
    """Markdown with all formatting removed, block by block."""
    return "\n\n".join(t for t in (_block_text(b) for b in blocks(markdown)) if t)


def render(markdown: str, mode: str) -> tuple[str, list[dict[str, Any]] | None]:
    """(the `response` text, the `response_blocks`) for an output mode."""
    if mode == "plain":
        return plain(markdown), None
    if mode in ("structured", "blocks"):
        return markdown, blocks(markdown)
    return markdown, None
