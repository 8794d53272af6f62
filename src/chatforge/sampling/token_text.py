"""A token's bytes and its string as OpenAI's `logprobs` objects show it.

OpenAI gives each token as `token` (its text) and `bytes` (the UTF-8 bytes, because a token can be a
fragment of a multi-byte character). The bytes come from the tokenizer's vocabulary, not from
decoding the token alone (which would turn a fragment into U+FFFD):
- byte-level BPE (GPT-2, Llama 3, chatforge's own tokenizers): each vocabulary character stands for
  one byte through GPT-2's printable-byte table (`byte_level_table`), inverted here;
- SentencePiece byte fallback: pieces `<0xNN>` are that byte, `▁` is a space;
- special (added) tokens are their content in UTF-8.
`token` is the bytes as UTF-8 when they decode, else `bytes:\\xNN...` (OpenAI's spelling).
"""

from __future__ import annotations

import re

_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def byte_level_table() -> dict[int, str]:
    """GPT-2's byte -> printable character map: printable Latin-1 bytes stand for themselves, the
    other 68 bytes (controls, space, ...) take the characters from U+0100 on, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _is_byte_level(tokenizer) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = getattr(backend, "decoder", None)
    return type(decoder).__name__ == "ByteLevel"


class TokenText:
    """Cached `bytes` and `token` string of each token id of one tokenizer."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.byte_level = _is_byte_level(tokenizer)
        self.char_to_byte = {c: b for b, c in byte_level_table().items()}
        self.special = set(getattr(tokenizer, "all_special_ids", []) or [])
        self.special |= {int(i) for i in (getattr(tokenizer, "added_tokens_decoder", None) or {})}
        self._cache: dict[int, bytes] = {}

    def bytes_of(self, token_id: int) -> bytes:
        cached = self._cache.get(token_id)
        if cached is None:
            cached = self._cache[token_id] = self._bytes(token_id)
        return cached

    def _bytes(self, token_id: int) -> bytes:
        piece = self.tokenizer.convert_ids_to_tokens(token_id)
        if piece is None:
            return b""
        if token_id in self.special:
            return piece.encode("utf-8")
        if self.byte_level and all(c in self.char_to_byte for c in piece):
            return bytes(self.char_to_byte[c] for c in piece)
        match = _BYTE_PIECE.fullmatch(piece)
        if match:
            return bytes([int(match.group(1), 16)])
        if "\u2581" in piece:  # SentencePiece's word boundary
            return piece.replace("\u2581", " ").encode("utf-8")
        return self.tokenizer.decode([token_id]).encode("utf-8")

    def string_of(self, token_id: int) -> str:
        raw = self.bytes_of(token_id)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return "bytes:" + "".join(f"\\x{b:02x}" for b in raw)

    def entry(self, token_id: int, logprob: float) -> dict:
        """`{"token", "logprob", "bytes"}` as in a chat `top_logprobs` item."""
        return {"token": self.string_of(token_id), "logprob": logprob, "bytes": list(self.bytes_of(token_id))}
