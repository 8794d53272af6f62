"""A byte-level pushdown automaton that accepts exactly the prefixes of a JSON object (RFC 8259).

`JsonPrefix.feed(byte)` advances it and returns False (leaving it unchanged) when the byte cannot
continue any JSON object; `complete` is True once the top-level object has closed. The sampler's
`response_format: json_object` decoding masks every token whose bytes the automaton refuses
(`JsonConstraint`), so what it generates is always a prefix of a valid JSON object, and a whole one
when the sample ends on a stop token.

Deliberate narrowings, so a model cannot stall forever in a place no max_tokens user expects:
whitespace outside strings comes in runs of at most `MAX_SPACE` bytes, numbers have at most
`MAX_NUMBER` bytes. Inside strings any byte >= 0x20 except `"` and `\\` is accepted (the bytes of
multi-byte UTF-8 characters included; a stray continuation byte decodes as U+FFFD, still valid JSON).
"""

from __future__ import annotations

MAX_SPACE = 16
MAX_NUMBER = 32
_SPACE = frozenset(b" \t\n\r")
_DIGITS = frozenset(b"0123456789")
_HEX = frozenset(b"0123456789abcdefABCDEF")
_ESCAPES = frozenset(b'"\\/bfnrt')

# Modes. VALUE: a value must start; OBJ_FIRST: after "{" (a key or "}"); KEY: a key string must start
# (after ","); COLON: after a key; AFTER: after a value inside a container (",", "}" or "]");
# ARR_FIRST: after "[" (a value or "]"); STRING/ESCAPE/UNICODE: inside a string; NUMBER: inside a
# number (sub-state in `number`); LITERAL: inside true/false/null (rest in `literal`); DONE: finished.
VALUE, OBJ_FIRST, KEY, COLON, AFTER, ARR_FIRST, STRING, ESCAPE, UNICODE, NUMBER, LITERAL, DONE, START = range(13)


class JsonPrefix:
    __slots__ = ("mode", "stack", "space", "number", "count", "literal", "key")

    def __init__(self):
        self.mode = START  # only "{" (after optional whitespace) may open the top level
        self.stack: list[int] = []  # open containers: ord("{") or ord("[")
        self.space = 0  # whitespace bytes in the current run
        self.number = ""  # the number's grammar state: "-", "0", "int", ".", "frac", "e", "esign", "exp"
        self.count = 0  # bytes of the current number, or hex digits of \\u
        self.literal = b""  # the rest of true/false/null still to come
        self.key = False  # the string being read is an object key

    @property
    def complete(self) -> bool:
        return self.mode == DONE

    def copy(self) -> JsonPrefix:
        other = JsonPrefix.__new__(JsonPrefix)
        other.mode, other.stack, other.space = self.mode, list(self.stack), self.space
        other.number, other.count, other.literal, other.key = self.number, self.count, self.literal, self.key
        return other

    def key_state(self) -> tuple:
        """Everything `feed` reads: two states with equal keys accept the same byte strings."""
        return (self.mode, tuple(self.stack), self.space, self.number, self.count, self.literal, self.key)

    def feed_all(self, data: bytes) -> bool:
        """Feed every byte; False at the first refused one (the automaton is then mid-way: copy first)."""
        return all(self.feed(b) for b in data)

    def feed(self, b: int) -> bool:
        mode = self.mode
        if mode == STRING:
            if b == 0x22:  # closing quote
                self._end_string()
            elif b == 0x5C:
                self.mode = ESCAPE
            elif b < 0x20:
                return False
            return True
        if mode == ESCAPE:
            if b == ord("u"):
                self.mode, self.count = UNICODE, 0
            elif b in _ESCAPES:
                self.mode = STRING
            else:
                return False
            return True
        if mode == UNICODE:
            if b not in _HEX:
                return False
            self.count += 1
            if self.count == 4:
                self.mode = STRING
            return True
        if mode == NUMBER:
            if self._number_byte(b):
                return True
            if self.number not in ("0", "int", "frac", "exp"):  # "-", "1.", "1e", "1e+" cannot end here
                return False
            self._end_value()
            return self.feed(b)  # the byte after a number is read in the state after the value
        if mode == LITERAL:
            if b != self.literal[0]:
                return False
            self.literal = self.literal[1:]
            if not self.literal:
                self._end_value()
            return True
        if b in _SPACE:
            if mode == DONE or self.space >= MAX_SPACE:
                return False
            self.space += 1
            return True
        self.space = 0
        if mode == START:
            if b != ord("{"):
                return False
            self.stack.append(b)
            self.mode = OBJ_FIRST
            return True
        if mode in (OBJ_FIRST, KEY):
            if b == 0x22:
                self.mode, self.key = STRING, True
                return True
            if b == ord("}") and mode == OBJ_FIRST:
                return self._close(b)
            return False
        if mode == COLON:
            if b != ord(":"):
                return False
            self.mode = VALUE
            return True
        if mode == AFTER:
            if b == ord(","):
                self.mode = KEY if self.stack[-1] == ord("{") else VALUE
                return True
            if b in (ord("}"), ord("]")):
                return self._close(b)
            return False
        if mode in (VALUE, ARR_FIRST):
            if b == ord("]") and mode == ARR_FIRST:
                return self._close(b)
            return self._start_value(b)
        return False  # DONE: nothing may follow

    # -- helpers ------------------------------------------------------------------------------------

    def _start_value(self, b: int) -> bool:
        if b == 0x22:
            self.mode, self.key = STRING, False
        elif b == ord("{"):
            self.stack.append(b)
            self.mode = OBJ_FIRST
        elif b == ord("["):
            self.stack.append(b)
            self.mode = ARR_FIRST
        elif b == ord("-") or b in _DIGITS:
            self.mode, self.count = NUMBER, 1
            self.number = "-" if b == ord("-") else ("0" if b == ord("0") else "int")
        elif b in b"tfn":
            self.mode = LITERAL
            self.literal = {ord("t"): b"rue", ord("f"): b"alse", ord("n"): b"ull"}[b]
        else:
            return False
        return True

    def _number_byte(self, b: int) -> bool:
        """Advance the number's grammar by `b`; False if `b` cannot extend it (it may still end it)."""
        if self.count >= MAX_NUMBER:
            return False
        state, digit = self.number, b in _DIGITS
        nxt = None
        if state == "-":
            nxt = ("0" if b == ord("0") else "int") if digit else None
        elif state in ("0", "int"):
            if digit and state == "int":
                nxt = "int"
            elif b == ord("."):
                nxt = "."
            elif b in b"eE":
                nxt = "e"
        elif state in (".", "frac"):
            nxt = "frac" if digit else ("e" if b in b"eE" and state == "frac" else None)
        elif state == "e":
            nxt = "exp" if digit else ("esign" if b in b"+-" else None)
        elif state in ("esign", "exp"):
            nxt = "exp" if digit else None
        if nxt is None:
            return False
        self.number, self.count = nxt, self.count + 1
        return True

    def _end_string(self) -> None:
        if self.key:
            self.mode, self.key = COLON, False
        else:
            self._end_value()

    def _end_value(self) -> None:
        self.mode = AFTER if self.stack else DONE
        self.space = 0

    def _close(self, b: int) -> bool:
        if (b == ord("}")) != (self.stack[-1] == ord("{")):
            return False
        self.stack.pop()
        self._end_value()
        return True
