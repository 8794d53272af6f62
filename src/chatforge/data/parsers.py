"""One parser per record kind: a chat conversation, a prompt, a preference pair, a ranking.

Each takes one decoded record and returns the normalised value or raises `RecordError(reason,
detail)`, which the reader (`data.records`) writes to the reject log. Stages add their own checks on
top (DPO refuses identical answers, a reward model a ranking without order) but read the layouts here.

- `to_messages(record, format)`: OpenAI `messages`, ShareGPT `conversations`, Alpaca
  `instruction`/`input`/`output` (+ `history`), or `prompt`/`completion` -> checked messages + the
  record's other fields (`sft.formats` documents the formats and the reasons).
- `prompt_messages(record)`: a record's `prompt` (messages or one user string) or its `messages`
  without a final answer.
- `parse_pair(record)`: `prompt` (string or messages, or the messages chosen and rejected share at
  the start) + one assistant answer each for `chosen` and `rejected` (a string, the answer's message,
  or the whole conversation starting with the prompt) + the other fields.
- `parse_ranking(record)`: `prompt` + `responses` (strings, best first) + optional `ranks`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from chatforge.data.records import RecordError

Message = dict[str, str]
ChatFormat = Literal["auto", "messages", "sharegpt", "alpaca", "prompt_completion"]
ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {"human": "user", "gpt": "assistant", "system": "system", "user": "user", "assistant": "assistant"}
ALPACA_INPUT_SEPARATOR = "\n\n"  # instruction + separator + input is the user turn


# ---- messages ------------------------------------------------------------------------------
def detect_format(record: dict[str, Any]) -> str | None:
    """The format whose fields `record` has (messages, sharegpt, alpaca, prompt_completion), or None."""
    if "messages" in record:
        return "messages"
    if "conversations" in record:
        return "sharegpt"
    if "instruction" in record and "output" in record:
        return "alpaca"
    if "prompt" in record and "completion" in record:
        return "prompt_completion"
    return None


def to_messages(record: Any, format: ChatFormat = "auto") -> tuple[list[Message], dict[str, Any]]:
    """(messages, extra) of one record: checked messages and the fields the format did not use.

    Raises `RecordError` (reason + detail) when the record fits no format or is malformed.
    """
    if not isinstance(record, dict):
        raise RecordError("not_an_object", f"expected a JSON object, got {type(record).__name__}")
    fmt = detect_format(record) if format == "auto" else format
    if fmt is None:
        raise RecordError(
            "unknown_format",
            f"no messages, conversations, instruction+output or prompt+completion field (fields: {', '.join(map(str, record))})",
        )
    messages, used = _CONVERTERS[fmt](record)
    check_messages(messages)
    return messages, {k: v for k, v in record.items() if k not in used}


def check_messages(messages: list[Message]) -> None:
    """Raise `RecordError` unless `messages` is: system?, then user/assistant alternating, ending with an answer."""
    for i, message in enumerate(messages):
        if message["role"] not in ROLES:
            raise RecordError("unknown_role", f"turn {i} has role {message['role']!r}; expected one of {ROLES}")
        if not message["content"].strip():
            raise RecordError("empty_content", f"turn {i} ({message['role']}) has empty content")
    if not any(m["role"] == "assistant" for m in messages):
        raise RecordError("no_assistant_turn", "the conversation has no assistant turn to train on")
    turns = messages[1:] if messages[0]["role"] == "system" else messages
    offset = len(messages) - len(turns)
    for i, message in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if message["role"] != expected:
            raise RecordError(
                "out_of_order",
                f"turn {i + offset} is {message['role']!r}, expected {expected!r} "
                "(system first, then user and assistant alternating)",
            )
    if turns[-1]["role"] != "assistant":
        raise RecordError("out_of_order", f"the last turn ({len(messages) - 1}) is a user turn with no answer")


def message_list(value: Any, name: str) -> list[Message]:
    """A non-empty list of {"role", "content"} text messages, or `RecordError("bad_field")`."""
    if not isinstance(value, list) or not value:
        raise RecordError("bad_field", f"field {name!r} is {json_kind(value)}, expected a non-empty list of messages")
    out = []
    for i, message in enumerate(value):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise RecordError("bad_field", f"{name}[{i}] needs 'role' and 'content', got {str(message)[:80]}")
        out.append({"role": text_field(message["role"], f"{name}[{i}].role"), "content": text_field(message["content"], f"{name}[{i}].content")})
    return out


def _from_messages(record: dict[str, Any]) -> tuple[list[Message], set[str]]:
    require(record, "messages")
    return message_list(record["messages"], "messages"), {"messages"}


def _from_sharegpt(record: dict[str, Any]) -> tuple[list[Message], set[str]]:
    require(record, "conversations")
    turns = record["conversations"]
    if not isinstance(turns, list) or not turns:
        raise RecordError("bad_field", f"field 'conversations' is {json_kind(turns)}, expected a non-empty list")
    messages = system_message(record)
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise RecordError("bad_field", f"conversations[{i}] needs 'from' and 'value', got {str(turn)[:80]}")
        speaker = text_field(turn["from"], f"conversations[{i}].from")
        if speaker not in SHAREGPT_ROLES:
            raise RecordError(
                "unknown_role", f"conversations[{i}] is from {speaker!r}; expected one of {tuple(SHAREGPT_ROLES)}"
            )
        messages.append({"role": SHAREGPT_ROLES[speaker], "content": text_field(turn["value"], f"conversations[{i}].value")})
    return messages, {"conversations", "system"}


def _from_alpaca(record: dict[str, Any]) -> tuple[list[Message], set[str]]:
    require(record, "instruction")
    require(record, "output")
    messages = system_message(record)
    history = record.get("history") or []
    if not isinstance(history, list):
        raise RecordError("bad_field", f"field 'history' is {json_kind(history)}, expected a list of [user, answer] pairs")
    for i, pair in enumerate(history):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
            raise RecordError("bad_field", f"history[{i}] is not a [user, answer] pair: {str(pair)[:80]}")
        messages.append({"role": "user", "content": text_field(pair[0], f"history[{i}][0]")})
        messages.append({"role": "assistant", "content": text_field(pair[1], f"history[{i}][1]")})
    parts = [text_field(record["instruction"], "instruction"), optional_text(record, "input")]
    user = ALPACA_INPUT_SEPARATOR.join(p for p in parts if p.strip())
    messages.append({"role": "user", "content": user})
    messages.append({"role": "assistant", "content": text_field(record["output"], "output")})
    return messages, {"instruction", "input", "output", "system", "history"}


def _from_prompt_completion(record: dict[str, Any]) -> tuple[list[Message], set[str]]:
    require(record, "prompt")
    require(record, "completion")
    prompt, completion = record["prompt"], record["completion"]
    messages = system_message(record)
    if isinstance(prompt, str):
        messages.append({"role": "user", "content": prompt})
    else:
        messages += message_list(prompt, "prompt")
    if isinstance(completion, str):
        messages.append({"role": "assistant", "content": completion})
    else:
        answers = message_list(completion, "completion")
        if any(m["role"] != "assistant" for m in answers):
            raise RecordError("bad_field", "field 'completion' may hold only assistant messages")
        messages += answers
    return messages, {"prompt", "completion", "system"}


_CONVERTERS = {
    "messages": _from_messages,
    "sharegpt": _from_sharegpt,
    "alpaca": _from_alpaca,
    "prompt_completion": _from_prompt_completion,
}


# ---- prompts -------------------------------------------------------------------------------
def prompt_messages(record: Any) -> list[Message]:
    """The chat messages a record asks: its `prompt` (messages, or a string as one user turn), or its
    `messages` without a final assistant answer; a bare list of messages is taken as it is."""
    if isinstance(record, Mapping):
        if "prompt" in record:
            inner = record["prompt"]
            if isinstance(inner, str):
                return [{"role": "user", "content": inner}]
            return prompt_messages(inner)
        if "messages" in record:
            messages = prompt_messages(record["messages"])
            return messages[:-1] if messages and messages[-1].get("role") == "assistant" else messages
        raise RecordError("bad_field", f"record {record.get('id', '?')}: needs a 'prompt' or 'messages' field")
    if not isinstance(record, list) or not record or not all(isinstance(m, Mapping) for m in record):
        raise RecordError("bad_field", f"a prompt must be a non-empty list of messages or a record, got {type(record).__name__}")
    return [dict(m) for m in record]


# ---- preference pairs ----------------------------------------------------------------------
@dataclass(frozen=True)
class PairRecord:
    """A pair's layout read: the prompt messages (system first when given), two answer texts, other fields."""

    prompt: list[Message]
    chosen: str
    rejected: str
    extra: dict[str, Any] = field(default_factory=dict)


def parse_pair(record: Any) -> PairRecord:
    """The prompt, chosen and rejected answers of one pair record (layouts in the module docstring)."""
    if not isinstance(record, dict):
        raise RecordError("not_an_object", f"expected a JSON object, got {json_kind(record)}")
    for name in ("chosen", "rejected"):
        require(record, name)
    answers = {}
    for name in ("chosen", "rejected"):
        value = record[name]
        if isinstance(value, str):
            answers[name] = value
        elif isinstance(value, list):
            answers[name] = message_list(value, name)
        else:
            raise RecordError("bad_field", f"field {name!r} is {json_kind(value)}, expected a string or a list of messages")
    if record.get("prompt") is not None:
        raw = record["prompt"]
        if isinstance(raw, str):
            prompt = [{"role": "user", "content": raw}]
        elif isinstance(raw, list):
            prompt = message_list(raw, "prompt")
        else:
            raise RecordError("bad_field", f"field 'prompt' is {json_kind(raw)}, expected a string or a list of messages")
    else:
        if isinstance(answers["chosen"], str) or isinstance(answers["rejected"], str):
            raise RecordError("missing_field", "no field 'prompt', and chosen/rejected are not full conversations")
        prompt = _shared_prefix(answers["chosen"], answers["rejected"])
    texts = {name: _answer_text(value, prompt, name) for name, value in answers.items()}
    system = system_message(record)
    if system and prompt[0]["role"] != "system":
        prompt = system + prompt
    used = {"prompt", "chosen", "rejected", "system"}
    return PairRecord(prompt, texts["chosen"], texts["rejected"], {k: v for k, v in record.items() if k not in used})


def _shared_prefix(a: list[Message], b: list[Message]) -> list[Message]:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    if n == 0:
        raise RecordError("prompt_mismatch", "no field 'prompt', and chosen and rejected share no first message to take as it")
    return a[:n]


def _answer_text(value: str | list[Message], prompt: list[Message], name: str) -> str:
    """The one assistant answer of `value` (a text, the answer's messages, or the whole conversation)."""
    if isinstance(value, str):
        return value
    rest = value[len(prompt):] if value[: len(prompt)] == prompt else value
    if len(rest) != 1 or rest[0]["role"] != "assistant":
        roles = ", ".join(m["role"] for m in rest) or "nothing"
        raise RecordError(
            "multi_message_response",
            f"{name}: after the prompt it holds {roles}; a pair compares exactly one assistant answer",
        )
    return rest[0]["content"]


# ---- rankings ------------------------------------------------------------------------------
@dataclass(frozen=True)
class RankingRecord:
    prompt: list[Message]
    responses: list[str]
    ranks: list[int]  # lower is better; equal ranks are ties
    extra: dict[str, Any] = field(default_factory=dict)


def parse_ranking(record: Any) -> RankingRecord:
    """`prompt` + `responses` (best first, or ordered by an explicit `ranks`) of one ranking record."""
    if not isinstance(record, dict):
        raise RecordError("not_an_object", f"expected a JSON object, got {json_kind(record)}")
    require(record, "prompt")
    require(record, "responses")
    raw = record["prompt"]
    prompt = [{"role": "user", "content": raw}] if isinstance(raw, str) else message_list(raw, "prompt")
    responses = record["responses"]
    if not isinstance(responses, list) or not all(isinstance(r, str) for r in responses):
        raise RecordError("bad_field", "field 'responses' must be a list of strings, best first")
    if len(responses) < 2:
        raise RecordError("too_few_responses", f"{len(responses)} response(s); a ranking needs at least 2")
    k = len(responses)
    ranks = list(range(k))
    if "ranks" in record:
        ranks = record["ranks"]
        # bool is an int subclass: `[true, false]` is not a ranking
        if not (isinstance(ranks, list) and len(ranks) == k and all(type(r) is int for r in ranks)):
            raise RecordError("bad_field", "field 'ranks' must be one integer per response (lower is better)")
        if any(not 0 <= r < k for r in ranks):
            raise RecordError("bad_field", f"field 'ranks' is {ranks}; ranks of {k} responses are 0 (best) to {k - 1}")
    first_rank: dict[str, tuple[int, int]] = {}
    for i, (text, rank) in enumerate(zip(responses, ranks)):
        j, other = first_rank.setdefault(text, (i, rank))
        if other != rank:
            raise RecordError("identical_responses", f"responses {j} and {i} are the same text ranked {other} and {rank}")
    used = {"prompt", "responses", "ranks"}
    return RankingRecord(prompt, list(responses), list(ranks), {k: v for k, v in record.items() if k not in used})


# ---- fields --------------------------------------------------------------------------------
def require(record: dict[str, Any], name: str) -> None:
    if name not in record:
        raise RecordError("missing_field", f"no field {name!r} (fields: {', '.join(map(str, record))})")


def text_field(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise RecordError("bad_field", f"{name} is {json_kind(value)}, expected a string")
    return value


def optional_text(record: dict[str, Any], name: str) -> str:
    """An optional text field: "" when absent or null."""
    value = record.get(name)
    return "" if value is None else text_field(value, name)


def system_message(record: dict[str, Any]) -> list[Message]:
    """The optional top-level `system` field as a message list ([] when absent or empty)."""
    text = optional_text(record, "system")
    return [{"role": "system", "content": text}] if text.strip() else []


def finite_number(record: dict, name: str) -> float:
    value = record[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RecordError("bad_field", f"field {name!r} is {value!r}, expected a finite number")
    return float(value)


_JSON_KINDS = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list", dict: "an object"}


def json_kind(value: Any) -> str:
    """A value's kind in JSON words ("a list", "null"), for messages about records."""
    return "null" if value is None else _JSON_KINDS.get(type(value), f"a {type(value).__name__}")
