"""Independent, reproducible random streams for every part of the world.

Each part (people, documents, web pages, ...) draws from its own stream, derived from the world
seed and a label. Changing how many records one part makes therefore never shifts the numbers
another part sees, and nothing depends on Python's per-process string hashing.
"""

from __future__ import annotations

import hashlib
import random


def derived_int(seed: int, *labels: object) -> int:
    """A 63-bit integer determined by the seed and the labels (stable across processes and platforms)."""
    key = "\x1f".join([str(seed), *(str(label) for label in labels)]).encode("utf-8")
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") >> 1


def rng_for(seed: int, *labels: object) -> random.Random:
    """A `random.Random` stream owned by one part of the world."""
    return random.Random(derived_int(seed, *labels))
