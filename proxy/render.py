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
    ("json", "A JSON object (LM Studio's structured output)", False),
    ("json_schema", "JSON valid for the request's json_schema (LM Studio's structured output)", False),
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
    """Markdown → typed blocks: heading, paragraph, list, code, quote, rule.

    Blocks nested in a quote become the quote's text, and blocks nested in a list item join
    that item's text, in order: the blocks read in the order the markdown does.
    """
    result: list[dict[str, Any]] = []
    stack: list[dict[str, Any]] = []  # open lists and quotes, innermost last
    new_item = False  # a list item just opened: its first text starts a new item

    def add_text(text: str) -> None:
        nonlocal new_item
        quote = next((b for b in reversed(stack) if b["type"] == "quote"), None)
        if quote is not None:
            quote["text"] = (quote["text"] + "\n" + text).strip("\n")
        elif lists := [b for b in stack if b["type"] == "list"]:
            items = lists[-1]["items"]
            if new_item or not items or not isinstance(items[-1], str):
                items.append(text)
            else:
                items[-1] += "\n\n" + text
            new_item = False
        else:
            result.append({"type": "paragraph", "text": text})

    def add_block(block: dict[str, Any], text: str) -> None:
        (add_text(text) if stack else result.append(block))

    tokens = _md.parse(markdown)
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.type == "heading_open":
            text = _inline_text(tokens[i + 1])
            add_block({"type": "heading", "level": int(tok.tag[1:]), "text": text}, text)
            i += 3
            continue
        if tok.type in ("bullet_list_open", "ordered_list_open"):
            block = {"type": "list", "ordered": tok.type == "ordered_list_open", "items": []}
            if not any(b["type"] == "quote" for b in stack):
                lists = [b for b in stack if b["type"] == "list"]
                (lists[-1]["items"] if lists else result).append(block)
            stack.append(block)
        elif tok.type == "list_item_open":
            new_item = True
        elif tok.type in ("bullet_list_close", "ordered_list_close", "blockquote_close"):
            stack.pop()
        elif tok.type == "blockquote_open":
            if stack:  # nested in a quote or a list item: its text joins that container
                stack.append({"type": "nested"})
            else:
                block = {"type": "quote", "text": ""}
                result.append(block)
                stack.append(block)
        elif tok.type == "inline":
            add_text(_inline_text(tok))
        elif tok.type in ("fence", "code_block"):
            text = tok.content
            add_block({"type": "code", "language": tok.info.strip() or None, "text": text}, text.rstrip("\n"))
        elif tok.type == "hr" and not stack:
            result.append({"type": "rule"})
        i += 1
    return [b for b in result if b["type"] != "quote" or b["text"]]


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
