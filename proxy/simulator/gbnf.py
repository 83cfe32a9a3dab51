"""A small GBNF reader and generator: one deterministic string that a llama.cpp grammar accepts.

Covers literals, character classes (with ranges, negation and escapes), rule references,
groups, alternation and the `* + ? {m,n}` repetitions. Recursion is cut off by depth: past
it, repetitions take their minimum and alternatives the first one that terminates.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_DEPTH = 12
REPEAT = 3  # how many times `*`/`+` repeat while shallow
BUDGET = 400  # characters; past it, generation winds down as if too deep (output stays small)


class GrammarError(ValueError):
    """A grammar that does not parse (LM Studio refuses it too)."""


@dataclass(frozen=True, slots=True)
class Lit:
    text: str


@dataclass(frozen=True, slots=True)
class Cls:
    ranges: tuple[tuple[str, str], ...]
    negated: bool


@dataclass(frozen=True, slots=True)
class Ref:
    name: str


@dataclass(frozen=True, slots=True)
class Alt:
    options: tuple[tuple[Node, ...], ...]


@dataclass(frozen=True, slots=True)
class Rep:
    node: Node
    low: int
    high: int | None


Node = Lit | Cls | Ref | Alt | Rep

_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "[": "[", "]": "]", "-": "-", "^": "^"}
_RULE = re.compile(r"^([A-Za-z][A-Za-z0-9_-]*)\s*::=", re.M)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def error(self, message: str) -> GrammarError:
        return GrammarError(f"{message} at offset {self.pos}")

    def skip(self, newlines: bool) -> None:
        while self.pos < len(self.text):
            c = self.text[self.pos]
            if c == "#":
                while self.pos < len(self.text) and self.text[self.pos] != "\n":
                    self.pos += 1
            elif c in " \t" or (newlines and c in "\r\n"):
                self.pos += 1
            else:
                break

    def char(self) -> str:
        c = self.text[self.pos]
        self.pos += 1
        if c != "\\":
            return c
        e = self.text[self.pos]
        self.pos += 1
        if e == "x":
            code, self.pos = self.text[self.pos : self.pos + 2], self.pos + 2
            return chr(int(code, 16))
        if e == "u":
            code, self.pos = self.text[self.pos : self.pos + 4], self.pos + 4
            return chr(int(code, 16))
        return _ESCAPES.get(e, e)

    def alternatives(self, depth: int) -> Alt:
        options = [self.sequence(depth)]
        while self.pos < len(self.text) and self.text[self.pos] == "|":
            self.pos += 1
            options.append(self.sequence(depth))
        return Alt(tuple(options))

    def sequence(self, depth: int) -> tuple[Node, ...]:
        items: list[Node] = []
        while True:
            # Inside a group newlines are whitespace; at the top a newline may end the rule.
            self.skip(newlines=depth > 0)
            if depth == 0 and self.pos < len(self.text) and self.text[self.pos] in "\r\n":
                rest = self.text[self.pos :].lstrip()
                if not rest or _RULE.match(rest):
                    return tuple(items)
                self.skip(newlines=True)
            if self.pos >= len(self.text) or self.text[self.pos] in "|)":
                return tuple(items)
            items.append(self.postfix(self.atom(depth)))

    def atom(self, depth: int) -> Node:
        c = self.text[self.pos]
        if c == '"':
            self.pos += 1
            chars = []
            while self.pos < len(self.text) and self.text[self.pos] != '"':
                chars.append(self.char())
            if self.pos >= len(self.text):
                raise self.error("unterminated literal")
            self.pos += 1
            return Lit("".join(chars))
        if c == "[":
            self.pos += 1
            negated = self.text[self.pos] == "^"
            self.pos += negated
            ranges = []
            while self.pos < len(self.text) and self.text[self.pos] != "]":
                low = self.char()
                high = low
                if self.text[self.pos] == "-" and self.text[self.pos + 1] != "]":
                    self.pos += 1
                    high = self.char()
                ranges.append((low, high))
            if self.pos >= len(self.text):
                raise self.error("unterminated character class")
            self.pos += 1
            return Cls(tuple(ranges), negated)
        if c == "(":
            self.pos += 1
            alt = self.alternatives(depth + 1)
            self.skip(newlines=True)
            if self.pos >= len(self.text) or self.text[self.pos] != ")":
                raise self.error("unclosed group")
            self.pos += 1
            return alt
        match = re.compile(r"[A-Za-z][A-Za-z0-9_-]*").match(self.text, self.pos)
        if match is None:
            raise self.error(f"unexpected {c!r}")
        self.pos = match.end()
        return Ref(match.group())

    def postfix(self, node: Node) -> Node:
        if self.pos >= len(self.text):
            return node
        c = self.text[self.pos]
        if c in "*+?":
            self.pos += 1
            return Rep(node, 1 if c == "+" else 0, 1 if c == "?" else None)
        match = re.compile(r"\{(\d+)(,(\d*))?\}").match(self.text, self.pos)
        if match is not None:
            self.pos = match.end()
            low = int(match.group(1))
            high = low if match.group(2) is None else (int(match.group(3)) if match.group(3) else None)
            return Rep(node, low, high)
        return node


def parse(grammar: str) -> dict[str, Alt]:
    """Rules by name; raises GrammarError. `root` must exist."""
    rules: dict[str, Alt] = {}
    starts = list(_RULE.finditer(grammar))
    if not starts:
        raise GrammarError("no rules (expected `root ::= ...`)")
    for i, match in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(grammar)
        body = grammar[match.end() : end]
        parser = _Parser(body)
        try:
            alt = parser.alternatives(1)
        except IndexError as exc:
            raise GrammarError(f"rule {match.group(1)!r} ends early") from exc
        parser.skip(newlines=True)
        if parser.pos != len(body):
            raise GrammarError(f"rule {match.group(1)!r}: unexpected {body[parser.pos]!r}")
        rules[match.group(1)] = alt
    if "root" not in rules:
        raise GrammarError("the grammar has no `root` rule")
    for alt in rules.values():
        for name in _refs(alt):
            if name not in rules:
                raise GrammarError(f"undefined rule {name!r}")
    return rules


def _refs(node: Node | tuple[Node, ...]) -> list[str]:
    if isinstance(node, tuple):
        return [n for item in node for n in _refs(item)]
    if isinstance(node, Ref):
        return [node.name]
    if isinstance(node, Alt):
        return [n for option in node.options for n in _refs(option)]
    if isinstance(node, Rep):
        return _refs(node.node)
    return []


def _pick(cls: Cls) -> str:
    def inside(c: str) -> bool:
        return any(low <= c <= high for low, high in cls.ranges)

    if not cls.negated:
        return cls.ranges[0][0]
    return next(
        c for c in "abcdefghijklmnopqrstuvwxyz0123456789 " + "".join(map(chr, range(128, 4096))) if not inside(c)
    )


def generate(grammar: str) -> str:
    """One string the grammar accepts (raises GrammarError for a grammar that does not parse)."""
    rules = parse(grammar)
    out: list[str] = []
    size = 0

    def deep(depth: int) -> bool:
        return depth > MAX_DEPTH or size > BUDGET

    def emit(node: Node | tuple[Node, ...], depth: int) -> None:
        nonlocal size
        if isinstance(node, tuple):
            for item in node:
                emit(item, depth)
        elif isinstance(node, Lit):
            out.append(node.text)
            size += len(node.text)
        elif isinstance(node, Cls):
            out.append(_pick(node))
            size += 1
        elif isinstance(node, Ref):
            if depth > MAX_DEPTH * 4:
                raise GrammarError("the grammar does not terminate")
            emit(rules[node.name], depth + 1)
        elif isinstance(node, Alt):
            option = node.options[0]
            if deep(depth):  # prefer an option with no rule references
                option = next((o for o in node.options if not _refs(o)), option)
            emit(option, depth)
        else:
            count = node.low if deep(depth) else max(node.low, REPEAT if node.high is None else node.high)
            for _ in range(count if node.high is None else min(count, node.high)):
                emit(node.node, depth + 1)

    emit(rules["root"], 0)
    return "".join(out)
