"""Deterministic embedding vectors: unit length, seeded by the text, of the model's dimension."""

from __future__ import annotations

import hashlib
import math
import random


def vector(text: str, dimension: int) -> list[float]:
    """The same text always embeds to the same vector; different texts to (almost surely) others."""
    rng = random.Random(int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big"))
    values = [rng.gauss(0.0, 1.0) for _ in range(dimension)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 6) for v in values]
