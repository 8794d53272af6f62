"""Answer-only labels: tokenize a conversation with its chat template, supervise only the answers.

`encode_conversation(tokenizer, messages, max_length)` renders `messages` with the tokenizer's chat
template (no generation prompt), tokenizes the text (`add_special_tokens=False`: the template writes
bos itself) and returns `input_ids` and `labels` of the same length (not shifted; the model shifts).
`labels[t]` is `input_ids[t]` for the tokens of **every assistant answer including the special token
that closes it** (`<|im_end|>`, `<|eot_id|>`, eos) and `IGNORE_INDEX` (-100) everywhere else: system
prompt, user turns, role headers, and template text after the closing token (ChatML's newline).

Where the answers are, two ways, compared:
1. *prefixes*: for the assistant turn `i`, render `messages[:i]` with the generation prompt (the
   prompt the model sees at inference) and `messages[:i + 1]`; the answer is the text the second adds
   to the first, up to and including its last special token. This needs no help from the template,
   only that it is prefix-stable (an earlier render is a prefix of a later one).
2. *markers*: the template's `{% generation %}` blocks, through
   `apply_chat_template(..., return_assistant_tokens_mask=True)`.
`mask_source="auto"` uses the prefixes and, when the template has markers, checks that the markers
give the same tokens (a mismatch is a template bug: `ConfigError`); a template that is not
prefix-stable uses its markers. `"prefixes"` / `"markers"` trust one of them alone.

Characters become tokens through the tokenizer's offsets (a fast tokenizer is required): a token is
supervised when it holds at least one answer character. So a token that **straddles** the boundary,
because the tokenizer merged the end of the role header with the start of the answer (`【BOT】：` +
`好的` -> `：好`, `的`), is supervised: it is the label the model must produce to start the answer, and
masking it would drop the answer's first characters from training altogether. The same rule is what
`transformers` applies to the markers. The merge itself means the training tokens differ from what
the model sees at inference, where the prompt ends with `：` as its own token; no mask fixes that, a
template whose prompt ends at a token boundary (a special token or a newline, as `chatml` and `llama3`
do) avoids it. `EncodedConversation.straddling` counts such tokens so a caller can report them.

Truncation to `max_length` tokens: `"right"` keeps the first `max_length` tokens (a cut answer is
trained without its end-of-turn token), `"left"` keeps the last ones (the earliest context goes
first), `"drop"` rejects the conversation. A conversation left with no supervised token is rejected,
never trained on silently.

Rejections (returned as `Rejection(reason, detail)`; `encode_conversations` logs them):
`no_assistant_turn`, `out_of_order`, `unknown_role`, `empty_content` (messages that do not pass
`formats.check_messages`), `special_token_in_content` (a message holds a special token's text, such as
`<|im_end|>` or `</s>`, which would tokenize as a control token and fake a turn boundary), `too_long`
(truncation `"drop"`), `no_supervised_tokens` (truncation cut every answer).

Pad is never a label: labels come from the conversation's own tokens, which never hold pad (pad text
in a message is rejected above), and a tokenizer whose pad is its eos is refused
(`chatforge.tokenizer.load.load_tokenizer` gives it another pad). Rows for training (packing,
padding, the engine's shifted labels) are `chatforge.sft.batches`' job.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from chatforge.errors import ConfigError
from chatforge.losses.lm import IGNORE_INDEX
from chatforge.run_dir import RejectLog
from chatforge.sft.formats import Conversation, Message, RecordError, check_messages

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

Truncation = Literal["right", "left", "drop"]
MaskSource = Literal["auto", "prefixes", "markers"]
_GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")  # what transformers looks for


@dataclass(frozen=True)
class EncodedConversation:
    input_ids: list[int]
    labels: list[int]  # input_ids where supervised, IGNORE_INDEX elsewhere; same length, not shifted
    truncated: int  # tokens removed to fit max_length (0 when it fitted)
    straddling: int  # supervised tokens that also hold template text (header merged with the answer)

    @property
    def n_supervised(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)


@dataclass(frozen=True)
class Rejection:
    """Why a conversation is not trained on: a reject reason and a one-line detail."""

    reason: str
    detail: str


def encode_conversation(
    tokenizer: PreTrainedTokenizerBase,
    messages: list[Message],
    max_length: int | None = None,
    truncation: Truncation = "right",
    mask_source: MaskSource = "auto",
) -> EncodedConversation | Rejection:
    """Token ids and answer-only labels of one conversation, or the `Rejection` that skips it.

    Raises `ConfigError` for a tokenizer or template that cannot give answer-only labels (slow
    tokenizer, pad equal to eos, no chat template, markers and prefixes that disagree, answers not
    closed by a special token); these are not the record's fault.
    """
    if truncation not in ("right", "left", "drop"):
        raise ConfigError(f"truncation must be right, left or drop, not {truncation!r}")
    if max_length is not None and max_length < 1:
        raise ConfigError(f"max_length must be a positive number of tokens, not {max_length}")
    _check_tokenizer(tokenizer)
    try:
        check_messages(messages)
    except RecordError as exc:
        return Rejection(exc.reason, exc.detail)
    pattern = _special_pattern(tuple(_special_tokens(tokenizer)))
    for i, message in enumerate(messages):
        found = pattern.search(message["content"]) if pattern else None
        if found:
            return Rejection(
                "special_token_in_content", f"turn {i} ({message['role']}) contains the special token {found.group()!r}"
            )

    ids, labels, straddling = _label(tokenizer, messages, mask_source)
    pad_id = tokenizer.pad_token_id
    if pad_id is not None and any(label == pad_id for label in labels):
        raise ConfigError(f"the chat template writes the pad token {tokenizer.pad_token!r} inside an answer")

    n, cut = len(ids), 0
    if max_length is not None and n > max_length:
        if truncation == "drop":
            return Rejection("too_long", f"{n} tokens > max_length={max_length} (truncation=drop)")
        cut = n - max_length
        keep = slice(0, max_length) if truncation == "right" else slice(cut, n)
        answer_tokens = [t for t, label in enumerate(labels) if label != IGNORE_INDEX]
        ids, labels = ids[keep], labels[keep]
        if all(label == IGNORE_INDEX for label in labels):
            return Rejection(
                "no_supervised_tokens",
                f"truncation={truncation} to max_length={max_length} kept tokens {keep.start}..{keep.stop - 1} of {n}; "
                f"the answers are at tokens {answer_tokens[0]}..{answer_tokens[-1]}",
            )
    return EncodedConversation(ids, labels, cut, straddling)


def encode_conversations(
    tokenizer: PreTrainedTokenizerBase,
    conversations: Iterable[Conversation],
    rejects: RejectLog,
    max_length: int | None = None,
    truncation: Truncation = "right",
    mask_source: MaskSource = "auto",
) -> Iterator[tuple[Conversation, EncodedConversation]]:
    """`encode_conversation` over `conversations`; rejected ones go to `rejects` with file and line."""
    for conversation in conversations:
        out = encode_conversation(tokenizer, conversation.messages, max_length, truncation, mask_source)
        if isinstance(out, Rejection):
            record = {**conversation.extra, "messages": conversation.messages}
            rejects.add(conversation.source, conversation.where, out.reason, out.detail, record)
            continue
        yield conversation, out


def answer_char_spans(tokenizer: PreTrainedTokenizerBase, messages: list[Message]) -> list[tuple[int, int]] | None:
    """[start, end) character spans of the answers in the conversation's render, from prefix renders.

    Each span runs from the end of the generation prompt to the end of the last special token the
    answer's turn writes. None when the template is not prefix-stable. Raises `ConfigError` when the
    template writes no generation prompt or closes an answer with no special token.
    """

    def render(msgs: list[Message], generation_prompt: bool) -> str:
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=generation_prompt)

    pattern = _special_pattern(tuple(_special_tokens(tokenizer)))
    full = render(messages, False)
    spans: list[tuple[int, int]] = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = render(messages[:i], True)
        through = render(messages[: i + 1], False) if i + 1 < len(messages) else full
        if not (through.startswith(prompt) and full.startswith(through)):
            return None
        if not spans and render(messages[:i], False) == prompt:
            raise ConfigError(
                "the chat template writes nothing for add_generation_prompt=True, so the assistant header "
                "cannot be told from the answer; give it a generation prompt or use mask_source=markers"
            )
        ends = [m.end() for m in pattern.finditer(through, len(prompt))] if pattern else []
        if not ends:
            raise ConfigError(
                f"the chat template ends the answer of turn {i} with no special token (it adds "
                f"{through[len(prompt):][-40:]!r}); a model trained on it would never learn to stop"
            )
        spans.append((len(prompt), ends[-1]))
    return spans


def end_of_turn_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The special tokens that close an answer under the tokenizer's chat template (generation stops)."""
    probe = [{"role": "user", "content": "?"}, {"role": "assistant", "content": "x"}]
    encoded = encode_conversation(tokenizer, probe)
    if isinstance(encoded, Rejection):  # cannot happen for the probe; keeps the type checker honest
        raise ConfigError(f"cannot encode a probe conversation: {encoded.detail}")
    special = set(tokenizer.convert_tokens_to_ids(_special_tokens(tokenizer)))
    closing = [i for i, label in zip(encoded.input_ids, encoded.labels) if label != IGNORE_INDEX and i in special]
    return list(dict.fromkeys(closing))


def _label(
    tokenizer: PreTrainedTokenizerBase, messages: list[Message], mask_source: MaskSource
) -> tuple[list[int], list[int], int]:
    """(input_ids, labels, straddling) of the whole conversation, before truncation."""
    template = tokenizer.get_chat_template()
    has_markers = bool(_GENERATION_TAG.search(template))
    if mask_source == "markers" and not has_markers:
        raise ConfigError("mask_source=markers needs a chat template with {% generation %} blocks; this one has none")
    out = tokenizer.apply_chat_template(
        messages,
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=has_markers and mask_source != "prefixes",
        tokenizer_kwargs={"return_offsets_mapping": True},
    )
    ids: list[int] = list(out["input_ids"])
    markers: list[int] | None = out.get("assistant_masks")
    spans = None if mask_source == "markers" else answer_char_spans(tokenizer, messages)

    if spans is not None:
        mask, straddling = _span_mask(out["offset_mapping"], spans)
        if markers is not None and mask != [bool(m) for m in markers]:
            t = next(t for t, (a, b) in enumerate(zip(mask, markers)) if a != bool(b))
            raise ConfigError(
                f"the chat template's {{% generation %}} blocks and its prefix renders disagree at token {t} "
                f"({tokenizer.decode([ids[t]])!r}): the markers {'' if markers[t] else 'do not '}supervise it; "
                "fix the blocks (answer + end-of-turn token only), or set mask_source to markers or prefixes"
            )
    elif mask_source == "prefixes":
        raise ConfigError("mask_source=prefixes: the chat template is not prefix-stable (an earlier turn renders differently later)")
    elif markers is not None:
        mask, straddling = [bool(m) for m in markers], 0
    else:
        raise ConfigError(
            "the chat template is not prefix-stable and has no {% generation %} blocks: answers cannot be located"
        )
    labels = [i if m else IGNORE_INDEX for i, m in zip(ids, mask)]
    return ids, labels, straddling


def _span_mask(offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> tuple[list[bool], int]:
    """Tokens holding at least one character of a span, and how many of them also hold other text."""
    mask = [False] * len(offsets)
    straddling = 0
    j = 0
    for t, (start, end) in enumerate(offsets):
        if start == end:  # zero-width: a token the post-processor added, no text of its own
            continue
        while j < len(spans) and spans[j][1] <= start:
            j += 1
        if j < len(spans) and start < spans[j][1] and end > spans[j][0]:
            mask[t] = True
            straddling += start < spans[j][0] or end > spans[j][1]
    return mask, straddling


def _check_tokenizer(tokenizer: Any) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError("answer-only labels need a fast tokenizer (character offsets); load it with use_fast=True")
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError("the tokenizer has no chat template; train one with chat_template=... or set it")
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id == tokenizer.eos_token_id:
        raise ConfigError(
            f"the tokenizer's pad token is its eos {tokenizer.eos_token!r}; load it with "
            "chatforge.tokenizer.load.load_tokenizer, which picks another pad"
        )


def _special_tokens(tokenizer: Any) -> list[str]:
    return [t.content for _, t in sorted(tokenizer.added_tokens_decoder.items()) if t.special]


@functools.lru_cache(maxsize=32)
def _special_pattern(tokens: tuple[str, ...]) -> re.Pattern[str] | None:
    if not tokens:
        return None
    return re.compile("|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True)))
