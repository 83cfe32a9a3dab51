"""Deterministic, prompt-seeded text for simulated predictions (one string per token)."""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterator

DEFAULT_ANSWER_TOKENS = 24
REASONING_TOKENS = 8
_LENGTH_HOOK = re.compile(r"\[tokens=(\d+)\]")
_TOKEN = re.compile(r"\w+|[^\w\s]")

_WORDS = (
    *("lantern", "river", "quiet", "model", "token", "answer", "simple", "window", "garden", "signal"),
    *("paper", "orange", "harbor", "circuit", "meadow", "pocket", "silver", "thunder", "velvet"),
    *("marble", "compass", "engine", "ribbon", "canyon", "falcon", "summit", "cobalt", "maple", "prism"),
)


def requested_length(text: str) -> int | None:
    """The test hook: `[tokens=N]` in the last user message makes the answer N tokens long."""
    match = _LENGTH_HOOK.search(text)
    return int(match.group(1)) if match else None


_GREETING = re.compile(r"^\W*(hello|hi|hey|good (morning|afternoon|evening))\b", re.I)


def is_greeting(text: str) -> bool:
    """A prompt that opens with a greeting gets one back (a question, as a chat model's would be)."""
    return _GREETING.match(text) is not None


def count_tokens(text: str) -> int:
    """A simple deterministic token count (words and punctuation)."""
    return len(_TOKEN.findall(text))


def tokenize(text: str) -> list[int]:
    """Deterministic token ids for `tokenize` (stable hash of each word-ish token)."""
    return [int(hashlib.sha256(t.encode()).hexdigest()[:4], 16) for t in _TOKEN.findall(text)]


def _rng(prompt: str, salt: str) -> random.Random:
    seed = hashlib.sha256(f"{salt}\0{prompt}".encode()).digest()
    return random.Random(int.from_bytes(seed[:8], "big"))


def answer_tokens(prompt: str) -> Iterator[str]:
    """Endless answer tokens seeded by the prompt: a heading, **bold**, `code`, then list items."""
    rng = _rng(prompt, "answer")

    def word() -> str:
        return rng.choice(_WORDS)

    yield "## "
    yield word().capitalize()
    yield f" {word()}"
    yield "\n\n"
    yield word().capitalize()
    yield f" **{word()}**"
    yield f" {word()}"
    yield f" `{word()}()`"
    yield "."
    while True:
        yield "\n- "
        yield word().capitalize()
        for _ in range(rng.randint(2, 5)):
            yield f" {word()}"


def reasoning_tokens(prompt: str) -> list[str]:
    """The thinking text a reasoning model emits between `<think>` and `</think>`."""
    rng = _rng(prompt, "reasoning")
    words = [rng.choice(_WORDS) for _ in range(REASONING_TOKENS)]
    return [words[0].capitalize()] + [f" {w}" for w in words[1:-1]] + [f" {words[-1]}."]
