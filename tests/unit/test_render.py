"""Output modes: markdown as text, as plain text, or as typed blocks."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.render import OUTPUT_MODES, blocks, plain, render

MARKDOWN = """# Title

Some **bold**, *italic*, `code` and a [link](https://example.com).

## Steps

1. first
2. second

- a
  - nested
    - deeper
- b

```python
print("hi")
```

> quoted
> still quoted

---

    indented code
"""

BLOCKS: list[dict[str, Any]] = [
    {"type": "heading", "level": 1, "text": "Title"},
    {"type": "paragraph", "text": "Some bold, italic, code and a link."},
    {"type": "heading", "level": 2, "text": "Steps"},
    {"type": "list", "ordered": True, "items": ["first", "second"]},
    {
        "type": "list",
        "ordered": False,
        "items": [
            "a",
            {
                "type": "list",
                "ordered": False,
                "items": ["nested", {"type": "list", "ordered": False, "items": ["deeper"]}],
            },
            "b",
        ],
    },
    {"type": "code", "language": "python", "text": 'print("hi")\n'},
    {"type": "quote", "text": "quoted\nstill quoted"},
    {"type": "rule"},
    {"type": "code", "language": None, "text": "indented code\n"},
]

PLAIN = """Title

Some bold, italic, code and a link.

Steps

first
second

a
nested
deeper
b

print("hi")

quoted
still quoted

indented code"""


def test_blocks() -> None:
    assert blocks(MARKDOWN) == BLOCKS


def test_plain_strips_formatting() -> None:
    assert plain(MARKDOWN) == PLAIN


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("###### six", [{"type": "heading", "level": 6, "text": "six"}]),
        ("Setext\n===", [{"type": "heading", "level": 1, "text": "Setext"}]),
        ("a\nb", [{"type": "paragraph", "text": "a\nb"}]),  # a soft break stays a line break
        ("~~~js\nx\n~~~", [{"type": "code", "language": "js", "text": "x\n"}]),
        ("```\nx\n```", [{"type": "code", "language": None, "text": "x\n"}]),
        ("***", [{"type": "rule"}]),
        ("![alt text](i.png)", [{"type": "paragraph", "text": "alt text"}]),
        ("", []),
    ],
)
def test_block_kinds(markdown: str, expected: list[dict[str, Any]]) -> None:
    assert blocks(markdown) == expected


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("**b** _i_ `c`", "b i c"),
        ("[text](http://x)", "text"),
        ("---", ""),  # a rule has no text
        ("plain text", "plain text"),
    ],
)
def test_plain_text(markdown: str, expected: str) -> None:
    assert plain(markdown) == expected


def test_render_each_mode() -> None:
    assert render(MARKDOWN, "text") == (MARKDOWN, None)
    assert render(MARKDOWN, "plain") == (PLAIN, None)
    assert render(MARKDOWN, "structured") == (MARKDOWN, BLOCKS)
    assert render(MARKDOWN, "blocks") == (MARKDOWN, BLOCKS)


def test_output_modes_have_one_default() -> None:
    assert [m for m, _, _ in OUTPUT_MODES] == ["text", "plain", "structured", "blocks", "json", "json_schema"]
    assert [m for m, _, default in OUTPUT_MODES if default] == ["text"]


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("> # Note\n> body", "Note\n\nbody"),
        ("- a\n\n  ```\n  code in a\n  ```\n- b", "a\n\ncode in a\n\nb"),
        ("> - a\n> - b", "a\nb"),
    ],
)
def test_plain_keeps_the_order_of_nested_blocks(markdown: str, expected: str) -> None:
    text = plain(markdown)
    # The order of the words is the claim, not the exact separators.
    assert text.split() == expected.split()
    assert {"type": "quote", "text": ""} not in blocks(markdown)
