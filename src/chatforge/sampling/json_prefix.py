"""A byte-level pushdown automaton that accepts exactly the prefixes of a JSON object (RFC 8259),
optionally one valid against a schema.

`JsonPrefix.feed(byte)` advances it and returns False (leaving it unchanged) when the byte cannot
continue any JSON object; `complete` is True once the top-level object has closed. The sampler's
`response_format: json_object` decoding masks every token whose bytes the automaton refuses
(`JsonConstraint`), so what it generates is always a prefix of a valid JSON object, and a whole one
when the sample ends on a stop token.

With a compiled schema (`JsonPrefix(compile_schema(...))`, json_schema.py; `response_format:
json_schema` and forced tool calls) every value carries its schema node: a value may start only with
a byte of an allowed type, an integer takes no fraction or exponent, a bounded number only digits that
can still end inside its range, a string stays within minLength/maxLength characters and inside its
pattern/format (json_pattern.py: the characters it decodes drive that automaton), an object's keys are
its declared properties (each once, `}` only after the required ones), an array's length stays within
minItems/maxItems (a uniqueItems array of enum values offers each value once), and an enum/const value
or a declared key is spelled byte by byte as one of its candidates (CHOICE mode). Without a schema
every value's node is "any": plain JSON mode. Whitespace follows the schema's rule: in JSON mode runs
of up to `MAX_SPACE` bytes of any JSON whitespace, under a compiled schema by default one space at
most (json_schema.py says why).

The automaton is a set of deterministic paths (`_Path`). Where an anyOf value's first bytes fit several
alternatives, each alternative is followed as a path of its own; a path is dropped at the first byte
it refuses, and paths that end the value in the same state merge (`_end_value` resets what the value
left behind), so outside unions there is one path. A byte is taken when some path takes it.

Deliberate narrowings, so a model cannot stall forever in a place no max_tokens user expects:
whitespace outside strings comes in runs of at most `MAX_SPACE` bytes, numbers have at most
`MAX_NUMBER` bytes. Inside strings any byte >= 0x20 except `"` and `\\` is accepted (the bytes of
multi-byte UTF-8 characters included; a stray continuation byte decodes as U+FFFD, still valid JSON).
"""

from __future__ import annotations

from chatforge.sampling.json_number_range import MAX_NUMBER, reachable
from chatforge.sampling.json_schema import ANY, JsonSchema, SchemaNode, compile_schema

MAX_SPACE = 16
# Inside strings with a length bound the counted characters must be the characters a parser reads, so
# there the next bytes can be pinned (`JsonPrefix.pending`: the bytes allowed at each coming position).
# A UTF-8 lead byte -> its continuation bytes: Unicode's well-formed sequences (no overlong forms, no
# encoded surrogates, nothing above U+10FFFF; a stray byte would read as one more U+FFFD).
_CONT = bytes(range(0x80, 0xC0))
_UTF8_LEAD = {b: (_CONT,) for b in range(0xC2, 0xE0)} | {b: (_CONT, _CONT) for b in range(0xE1, 0xF0)} | {
    0xE0: (bytes(range(0xA0, 0xC0)), _CONT), 0xED: (bytes(range(0x80, 0xA0)), _CONT),
    0xF0: (bytes(range(0x90, 0xC0)), _CONT, _CONT), 0xF4: (bytes(range(0x80, 0x90)), _CONT, _CONT),
    0xF1: (_CONT, _CONT, _CONT), 0xF2: (_CONT, _CONT, _CONT), 0xF3: (_CONT, _CONT, _CONT)}
# A `\\u` escape starting with D: 0-7 is a character, 8-B a high surrogate that the escape of a low
# one must follow at once (the pair is one character), C-F a lone low surrogate (refused).
_AFTER_D = b"0123456789abAB"
_HEX_BYTES = b"0123456789abcdefABCDEF"
_LOW_HALF = (_HEX_BYTES, _HEX_BYTES, b"\\", b"u", b"dD", b"cdefCDEF", _HEX_BYTES, _HEX_BYTES)
_SPACE = frozenset(b" \t\n\r")
# Escapes a pattern-constrained string may use: the characters they stand for.
_SHORT_ESCAPES = {ord('"'): ord('"'), ord("\\"): ord("\\"), ord("/"): ord("/"), ord("t"): ord("\t")}
_DIGITS = frozenset(b"0123456789")
_HEX = frozenset(_HEX_BYTES)
_ESCAPES = frozenset(b'"\\/bfnrt')

# Modes. VALUE: a value must start; OBJ_FIRST: after "{" (a key or "}"); KEY: a key string must start
# (after ","); COLON: after a key; AFTER: after a value inside a container (",", "}" or "]");
# ARR_FIRST: after "[" (a value or "]"); STRING/ESCAPE/UNICODE: inside a string; NUMBER: inside a
# number (sub-state in `number`); LITERAL: inside true/false/null (rest in `literal`); DONE: finished;
# CHOICE: spelling one of a few fixed byte strings (a schema's declared key or enum value; `chosen`).
VALUE, OBJ_FIRST, KEY, COLON, AFTER, ARR_FIRST, STRING, ESCAPE, UNICODE, NUMBER, LITERAL, DONE, START, CHOICE = range(14)

OBJECT = compile_schema({"type": "object"}, space=_SPACE, max_space=MAX_SPACE)  # json_object mode: any object


class JsonPrefix:
    """The automaton: the set of paths (`_Path`) still alive. One path, except where an anyOf value's
    first bytes fit several alternatives: each is followed (a path per alternative) until the bytes
    tell them apart (a path that refuses a byte is dropped) or they end the value in the same state
    (merged). A byte is accepted when some path takes it; the document is complete when some path is.
    The number of paths is bounded by the schema (json_schema.MAX_LIVE)."""

    __slots__ = ("paths",)

    def __init__(self, schema: JsonSchema | None = None):
        self.paths = [_Path(schema)]

    @classmethod
    def following(cls, path: _Path) -> JsonPrefix:
        """An automaton of one path (a copy of `path`): what that path alone accepts from here."""
        one = cls.__new__(cls)
        one.paths = [path.copy()]
        return one

    @property
    def complete(self) -> bool:
        return any(path.mode == DONE for path in self.paths)

    def copy(self) -> JsonPrefix:
        other = JsonPrefix.__new__(JsonPrefix)
        other.paths = [path.copy() for path in self.paths]
        return other

    def key_state(self) -> tuple:
        """Everything `feed` reads: two automata with equal keys (same schema) accept the same byte strings."""
        return tuple(path.key_state() for path in self.paths)

    def feed_all(self, data: bytes) -> bool:
        """Feed every byte; False at the first refused one (the automaton is then mid-way: copy first)."""
        return all(self.feed(b) for b in data)

    def feed(self, b: int) -> bool:
        if len(self.paths) == 1:  # the common case: in place, as one path
            path = self.paths[0]
            if not path.feed(b):
                path.spawned = None
                return False
            if path.spawned is None:
                return True
            alive = [path, *path.spawned]
        else:
            alive = []
            for old in self.paths:
                path = old.copy()
                if path.feed(b):
                    alive.append(path)
                alive += path.spawned or ()
            if not alive:
                return False
        unique: dict[tuple, _Path] = {}
        for path in alive:
            path.spawned = None
            unique.setdefault(path.key_state(), path)
        self.paths = list(unique.values())
        return True


def _span(partial: bytes, rest: tuple[bytes, ...]) -> tuple[int, int]:
    """The code points a UTF-8 character can still be after its bytes `partial`, the rest allowed by `rest`."""
    low = partial + bytes(min(allowed) for allowed in rest)
    high = partial + bytes(max(allowed) for allowed in rest)
    return ord(low.decode()), ord(high.decode())


def takes(path: _Path, data: bytes) -> bool:
    """Whether some path from `path` (left unchanged) reads all of `data`: the mask's question for each
    token. Fed on one path copy while it does not fork (the common case, and the fast one)."""
    one = path.copy()
    for i, b in enumerate(data):
        if not one.feed(b):
            return False
        if one.spawned:
            rest = JsonPrefix.following(one)
            rest.paths += one.spawned
            return rest.feed_all(data[i + 1:])
    return True


class _Path:
    """One way of reading the bytes so far: a deterministic pushdown automaton, each value read under one
    schema node (at an anyOf, one alternative; the others are `spawned` as paths of their own)."""

    __slots__ = ("mode", "stack", "space", "number", "count", "literal", "key", "schema", "node", "chosen", "length",
                 "pending", "digits", "partial", "spawned")

    def __init__(self, schema: JsonSchema | None = None):
        self.mode = START  # only "{" (after optional whitespace) may open the top level
        # Open containers, innermost last: (ord("{") or ord("["), the container's schema node, and for an
        # object the bit set of the declared properties written so far, for an array its items so far).
        self.stack: list[tuple[int, int, int]] = []
        self.schema = schema or OBJECT  # shared, never changed: not part of the state
        self.node = self.schema.root  # schema node of the value being read or about to start
        self.chosen = b""  # CHOICE: the bytes of the key or enum value spelled so far
        self.length = 0  # characters of the string being read (a schema's maxLength)
        self.space = 0  # whitespace bytes in the current run
        self.number = ""  # the number's grammar state: "-", "0", "int", ".", "frac", "e", "esign", "exp"
        self.count = 0  # bytes of the current number, or hex digits of \\u
        self.literal = b""  # the rest of true/false/null still to come
        self.key = False  # the string being read is an object key
        # Under a length bound: the bytes allowed at each of the next string positions (the rest of a
        # UTF-8 character, or of a surrogate pair's escapes); None = no pin.
        self.pending: tuple[bytes, ...] | None = None
        self.digits = ""  # the number read so far, when its node has bounds (minimum, maximum, ...)
        self.partial = b""  # under a pattern: the UTF-8 bytes of the character being read (`length` is the pattern's state)
        self.spawned: list[_Path] | None = None  # paths forked by the last byte (anyOf), for JsonPrefix to collect

    def copy(self) -> _Path:
        other = _Path.__new__(_Path)
        other.mode, other.stack, other.space = self.mode, list(self.stack), self.space
        other.number, other.count, other.literal, other.key = self.number, self.count, self.literal, self.key
        other.schema, other.node, other.chosen, other.length = self.schema, self.node, self.chosen, self.length
        other.pending, other.digits, other.partial, other.spawned = self.pending, self.digits, self.partial, None
        return other

    def key_state(self) -> tuple:
        """Everything `feed` reads: two paths with equal keys (same schema) accept the same byte strings."""
        return (self.mode, tuple(self.stack), self.space, self.number, self.count, self.literal, self.key,
                self.node, self.chosen, self.length, self.pending, self.digits, self.partial)

    def feed(self, b: int) -> bool:
        mode = self.mode
        if (mode == STRING or mode == ESCAPE) and not self.key:
            pattern = self.schema.node(self.node).pattern
            if pattern is not None:
                return self._pattern_byte(b, pattern)
        if self.pending is not None and mode in (STRING, ESCAPE, UNICODE):
            return self._pinned_byte(b)
        if mode == CHOICE:
            return self._choice_byte(b)
        if mode == STRING:
            if not self.key:
                node = self.schema.node(self.node)
                if node.length_bounded:  # counted only then: the state (and its cached mask) repeats otherwise
                    return self._bounded_string_byte(b, node)
            if b == 0x22:  # closing quote
                self._end_string()
                return True
            if b < 0x20:
                return False
            if b == 0x5C:
                self.mode = ESCAPE
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
            if self.count == 0 and b in b"dD" and not self.key and self.schema.node(self.node).length_bounded:
                self.pending = (_AFTER_D,)
            self.count += 1
            if self.count == 4:
                self.mode = STRING
            return True
        if mode == NUMBER:
            if self._number_byte(b):
                return True
            if self.number not in ("0", "int", "frac", "exp"):  # "-", "1.", "1e", "1e+" cannot end here
                return False
            ranges = self.schema.node(self.node).ranges
            if ranges is not None and not reachable(self.digits, ranges, len(self.digits)):  # outside the bounds
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
            if mode == DONE or self.space >= self.schema.max_space or b not in self.schema.space:
                return False
            self.space += 1
            return True
        self.space = 0
        if mode == START:  # the root's schema is an object (compile_schema): "{" or an enum's first byte
            return self._start_value(b)
        if mode in (OBJ_FIRST, KEY):
            if b == 0x22:
                if self._container().properties is None:  # any key
                    self.mode, self.key = STRING, True
                    return True
                if not self._candidates(True):  # every declared property is written
                    return False
                self.mode, self.key, self.chosen = CHOICE, True, b""
                return self._choice_byte(b)
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
                bracket, node, written = self.stack[-1]
                container = self.schema.node(node)
                if bracket == ord("{"):
                    if container.properties is not None and not self._candidates(True):
                        return False
                    self.mode = KEY
                    return True
                count = _items(container, written)
                if container.max_items is not None and count >= container.max_items:
                    return False
                if container.unique and count >= len(self.schema.node(container.items).literals):
                    return False  # every value is used
                if not container.unique:  # a unique array's `written` is the bit set of the values used
                    self.stack[-1] = (bracket, node, written + 1)
                self.mode, self.node = VALUE, _item_node(container, count)
                return True
            if b in (ord("}"), ord("]")):
                return self._close(b)
            return False
        if mode == VALUE:
            return self._start_value(b)
        if mode == ARR_FIRST:
            if b == ord("]"):
                return self._close(b)
            bracket, node, _ = self.stack[-1]
            if self.schema.node(node).max_items == 0:
                return False
            if self.schema.node(node).unique:
                return self._start_value(b)
            self.stack[-1] = (bracket, node, 1)
            if self._start_value(b):
                return True
            self.stack[-1] = (bracket, node, 0)
            return False
        return False  # DONE: nothing may follow

    # -- helpers ------------------------------------------------------------------------------------

    def _start_value(self, b: int) -> bool:
        """Start a value of schema node `self.node` with byte `b`; False if no allowed value starts so."""
        node = self.schema.node(self.node)
        if node.alternatives is not None:  # anyOf: every alternative whose values can start with `b`
            followed: list[_Path] = []
            for member in node.alternatives:
                branch = self.copy()
                branch.node = member
                if branch._start_value(b):
                    followed.append(branch)
                followed += branch.spawned or ()
            if not followed:
                return False
            first = followed[0]
            for name in _Path.__slots__[:-1]:
                setattr(self, name, getattr(first, name))
            self.spawned = (self.spawned or []) + followed[1:] if len(followed) > 1 else self.spawned
            return True
        if node.literals is not None:  # enum/const: spell one of the values (not yet used, in a uniqueItems array)
            if not any(lit[0] == b for lit in self._candidates(False)):
                return False
            self.mode, self.key, self.chosen = CHOICE, False, b""
            return self._choice_byte(b)
        if b == 0x22 and node.allows("string"):
            self.mode, self.key, self.length = STRING, False, 0
        elif b == ord("{") and node.allows("object"):
            self.stack.append((b, self.node, 0))
            self.mode = OBJ_FIRST
            self.node = ANY  # until a key says which property's value comes
        elif b == ord("[") and node.allows("array"):
            self.stack.append((b, self.node, 0))
            self.mode, self.node = ARR_FIRST, _item_node(node, 0)
        elif (b == ord("-") or b in _DIGITS) and (node.allows("number") or node.allows("integer")):
            if node.ranges is not None and not reachable(chr(b), node.ranges, MAX_NUMBER):
                return False
            self.digits = chr(b) if node.ranges is not None else ""
            self.mode, self.count = NUMBER, 1
            self.number = "-" if b == ord("-") else ("0" if b == ord("0") else "int")
        elif b in b"tf" and node.allows("boolean") or b == ord("n") and node.allows("null"):
            self.mode = LITERAL
            self.literal = {ord("t"): b"rue", ord("f"): b"alse", ord("n"): b"ull"}[b]
        else:
            return False
        return True

    def _container(self):
        return self.schema.node(self.stack[-1][1])

    def _candidates(self, key: bool) -> list[bytes]:
        """CHOICE's byte strings: the declared keys not yet written, or the value's enum/const values."""
        if key:
            _, node, written = self.stack[-1]
            return [name for i, (name, _) in enumerate(self.schema.node(node).properties) if not written >> i & 1]
        literals = self.schema.node(self.node).literals
        used = self._used_values()
        return list(literals) if used is None else [lit for i, lit in enumerate(literals) if not used >> i & 1]

    def _used_values(self) -> int | None:
        """The bit set of the enum values a uniqueItems array already holds, when the value being read is
        one of its items; None otherwise."""
        if not self.stack or self.stack[-1][0] != ord("["):
            return None
        container = self.schema.node(self.stack[-1][1])
        return self.stack[-1][2] if container.unique and container.items == self.node else None

    def _choice_byte(self, b: int) -> bool:
        candidates = self._candidates(self.key)
        longer = self.chosen + bytes([b])
        if any(c.startswith(longer) for c in candidates):
            self.chosen = longer
            # Finished once it is a whole candidate that no other candidate extends (`1` of enum [1, 12] waits).
            if longer in candidates and not any(len(c) > len(longer) and c.startswith(longer) for c in candidates):
                self._end_choice()
            return True
        if self.chosen in candidates:  # a whole candidate that `b` cannot extend: `b` follows the value
            self._end_choice()
            return self.feed(b)
        return False

    def _end_choice(self) -> None:
        chosen, self.chosen = self.chosen, b""
        if not self.key:
            if self._used_values() is not None:  # a uniqueItems array: this value is used now
                bracket, node, used = self.stack[-1]
                self.stack[-1] = (bracket, node, used | 1 << self.schema.node(self.node).literals.index(chosen))
            self._end_value()
            return
        bracket, node, written = self.stack[-1]
        for i, (name, value_node) in enumerate(self.schema.node(node).properties):
            if name == chosen:
                self.stack[-1] = (bracket, node, written | 1 << i)
                self.mode, self.key, self.node = COLON, False, value_node
                return

    def _number_byte(self, b: int) -> bool:
        """Advance the number's grammar by `b`; False if `b` cannot extend it (it may still end it)."""
        if self.count >= MAX_NUMBER:
            return False
        node = self.schema.node(self.node)
        if b in b".eE" and node.integer_only or b in b"eE" and node.ranges is not None:  # no exponent under bounds
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
        if node.ranges is not None:  # some way to finish it must land inside the bounds
            if not reachable(self.digits + chr(b), node.ranges, MAX_NUMBER):
                return False
            self.digits += chr(b)
        self.number, self.count = nxt, self.count + 1
        return True

    def _bounded_string_byte(self, b: int, node: SchemaNode) -> bool:
        """A string byte under minLength/maxLength: characters are counted as a parser reads them (an
        escape is one; UTF-8 must be well formed, since a stray byte reads as U+FFFD, a character)."""
        if b == 0x22:  # closing quote
            if self.length < node.min_length:
                return False
            self._end_string()
            return True
        if b < 0x20 or b >= 0x80 and b not in _UTF8_LEAD:
            return False
        if node.max_length is not None and self.length >= node.max_length:
            return False
        self.length += 1
        if b >= 0x80:
            self.pending = _UTF8_LEAD[b]
        elif b == 0x5C:
            self.mode = ESCAPE
        return True

    def _pattern_byte(self, b: int, pattern) -> bool:
        """A string byte under pattern/format (json_pattern.StringPattern, state in `length`): each
        character, as a parser decodes it, must keep a whole match reachable. UTF-8 must be well formed
        (each byte narrows the character to a range that must hold a usable one); escapes are the short
        ones for characters a pattern can hold (`\\"`, `\\\\`, `\\/`, `\\t`); `\\u` is refused."""
        if self.mode == ESCAPE:
            code = _SHORT_ESCAPES.get(b)
            after = None if code is None else pattern.step(self.length, code)
            if after is None:
                return False
            self.mode, self.length = STRING, after
            return True
        if self.pending is not None:  # inside a multi-byte character
            if b not in self.pending[0]:
                return False
            partial, rest = self.partial + bytes([b]), self.pending[1:]
            if rest:
                low, high = _span(partial, rest)
                if not pattern.can_take(self.length, low, high):
                    return False
                self.partial, self.pending = partial, rest
                return True
            after = pattern.step(self.length, ord(partial.decode()))
            if after is None:
                return False
            self.length, self.partial, self.pending = after, b"", None
            return True
        if b == 0x22:
            if not pattern.final(self.length):
                return False
            self._end_string()
            return True
        if b == 0x5C:
            if not any(pattern.step(self.length, c) is not None for c in _SHORT_ESCAPES.values()):
                return False
            self.mode = ESCAPE
            return True
        if b >= 0x80:
            rest = _UTF8_LEAD.get(b)
            if rest is None or not pattern.can_take(self.length, *_span(bytes([b]), rest)):
                return False
            self.partial, self.pending = bytes([b]), rest
            return True
        after = pattern.step(self.length, b)  # step refuses control characters but tab (json_pattern.ALLOWED)
        if after is None or b == 0x09:  # a raw tab is not JSON: it is written \t
            return False
        self.length = after
        return True

    def _pinned_byte(self, b: int) -> bool:
        """A string byte at a pinned position (`pending`): the rest of a UTF-8 character, not counted;
        or of a `\\u` escape (a surrogate pair's two escapes count as the one character they are)."""
        allowed, self.pending = self.pending[0], self.pending[1:] or None
        if b not in allowed:
            self.pending = (allowed, *(self.pending or ()))
            return False
        if self.mode == STRING:
            if b == 0x5C:  # the low surrogate's escape begins
                self.mode = ESCAPE
            return True
        if self.mode == ESCAPE:  # its "u"
            self.mode, self.count = UNICODE, 0
            return True
        if allowed == _AFTER_D and b in b"89abAB":  # a high surrogate
            self.pending = _LOW_HALF
        self.count += 1
        if self.count == 4:
            self.mode = STRING
        return True

    def _end_string(self) -> None:
        if self.key:  # a key of an object without declared properties: its value follows additionalProperties
            values = self._container().values
            self.mode, self.key, self.node = COLON, False, ANY if values is None else values
        else:
            self._end_value()

    def _end_value(self) -> None:
        # Everything the value's reading left behind is reset, so that paths that read one value under
        # different anyOf alternatives end in equal states and merge.
        self.mode = AFTER if self.stack else DONE
        self.space, self.digits, self.number, self.count, self.length, self.node = 0, "", "", 0, 0, ANY

    def _close(self, b: int) -> bool:
        bracket, node, written = self.stack[-1]
        if (b == ord("}")) != (bracket == ord("{")):
            return False
        container = self.schema.node(node)
        if bracket == ord("{") and container.properties is not None:
            names = [name for i, (name, _) in enumerate(container.properties) if written >> i & 1]
            if not container.required.issubset(names):
                return False
        if bracket == ord("[") and _items(container, written) < container.min_items:
            return False
        self.stack.pop()
        self._end_value()
        return True


def _items(array, written: int) -> int:
    """How many items an array holds: `written` counts them, or is the bit set of the values a
    uniqueItems array used."""
    return bin(written).count("1") if array.unique else written


def _item_node(array, index: int) -> int:
    """The node of the array's item at `index`: its prefixItems entry, else `items` (else any value)."""
    if index < len(array.prefix):
        return array.prefix[index]
    return array.items if array.items is not None else ANY
