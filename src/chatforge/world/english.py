"""Small English helpers shared by the text templates."""

from __future__ import annotations


def article(noun_phrase: str) -> str:
    """ "a" or "an" for a noun phrase (by its first letter, which suits this world's vocabulary)."""
    return "an" if noun_phrase[:1].lower() in "aeiou" else "a"
