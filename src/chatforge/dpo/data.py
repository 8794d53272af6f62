"""Preference pairs: read, check, encode with the chat template, and batch chosen + rejected together.

Record layouts, detected per record:

- task world (`DIR/preferences/pairs_{train,test}.jsonl`): `{"prompt": [messages], "chosen": str,
  "rejected": str, ...}`; the other fields (`id`, `task`, `category`, `kind`, `chosen_reward`, ...)
  are kept in `Pair.extra`.
- TRL / UltraFeedback: `{"prompt": str | [messages], "chosen": str | [messages], "rejected": str | [messages]}`.
  A string prompt is one user turn. Message-list answers may hold the answer alone
  (`[{"role": "assistant", ...}]`) or the whole conversation starting with the prompt's messages;
  without a `prompt` field the prompt is the messages chosen and rejected share at the start (TRL's
  "implicit prompt"). An optional top-level `system` string becomes the system message.

After the prompt, each answer must be exactly one assistant message: a pair compares two answers to
the same conversation. Reject reasons (written to `rejected.jsonl` with file and line): `not_utf8`,
`bad_json`, `not_an_object`, `missing_field`, `bad_field`, `multi_message_response`,
`identical_responses`, the conversation checks of `data.parsers.check_messages` (`empty_content`,
`out_of_order`, ...) and of `sft.masking.encode_conversation` (`special_token_in_content`,
`too_long`, ...), each prefixed by the side it concerns where it is one side's fault (`chosen: ...`).

Encoding: prompt + answer is rendered and tokenized by `sft.masking.encode_conversation` (answer-only
labels, the end-of-turn token supervised); only the *last* answer's tokens stay supervised, so the
assistant turns of a multi-turn prompt are context, not scored. A pair too long for `max_length` is
rejected (`truncation="drop"`) or loses the start of its prompt (`"left"`): the same prompt tokens
come off both sides, as many as the longer side is over, so both answers are scored after the same
context; a pair whose answer does not fit even without its prompt is rejected (`too_long`). Cutting
the answer (`"right"`) would compare truncated answers and is not offered.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from chatforge.data.padding import pad_sequences
from chatforge.data.parsers import Message, check_messages, parse_pair
from chatforge.data.records import DataSource, RecordError, read_records
from chatforge.data.shared_truncation import shared_left_cut, shared_prompt_tokens
from chatforge.errors import DataError
from chatforge.losses.lm import IGNORE_INDEX
from chatforge.run_dir import RejectLog
from chatforge.sft.masking import MaskSource, Rejection, encode_conversation

PairTruncation = Literal["drop", "left"]


class PairSourceConfig(DataSource):
    """A source of preference pairs (`data.sources` / `data.val_sources`); the layouts: docs/data_formats.md."""


@dataclass(frozen=True)
class Pair:
    prompt: list[Message]  # system?, user, (assistant, user)*: ends with a user turn
    chosen: str
    rejected: str
    source: str
    where: str
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EncodedPair:
    pair: Pair
    chosen_ids: list[int]
    chosen_labels: list[int]  # IGNORE_INDEX except the chosen answer's tokens (unshifted)
    rejected_ids: list[int]
    rejected_labels: list[int]

    @property
    def tokens(self) -> tuple[int, int]:
        """Supervised (answer) tokens of chosen and rejected."""
        return (
            sum(t != IGNORE_INDEX for t in self.chosen_labels),
            sum(t != IGNORE_INDEX for t in self.rejected_labels),
        )


def read_pairs(sources: Sequence[PairSourceConfig], rejects: RejectLog) -> Iterator[Pair]:
    """Every usable pair of every source, in order; unusable records go to `rejects`."""
    return read_records(sources, to_pair, rejects, missing="preference pairs not found")


def to_pair(record: Any, source: str = "", where: str = "") -> Pair:
    """The `Pair` of one record (either layout of the module docstring); raises `RecordError`."""
    read = parse_pair(record)
    if read.chosen == read.rejected:
        raise RecordError("identical_responses", "chosen and rejected are the same text; the pair prefers nothing")
    for name in ("chosen", "rejected"):
        try:
            check_messages([*read.prompt, {"role": "assistant", "content": getattr(read, name)}])
        except RecordError as exc:
            raise RecordError(exc.reason, f"{name}: {exc.detail}") from None
    return Pair(read.prompt, read.chosen, read.rejected, source, where, read.extra)


def encode_pairs(
    tokenizer,
    pairs: Iterator[Pair],
    rejects: RejectLog,
    max_length: int,
    truncation: PairTruncation = "drop",
    mask_source: MaskSource = "auto",
) -> list[EncodedPair]:
    """Chosen and rejected conversations of each pair, tokenized with last-answer-only labels."""
    out = []
    for pair in pairs:
        record = {**pair.extra, "prompt": pair.prompt, "chosen": pair.chosen, "rejected": pair.rejected}
        sides = []
        for name in ("chosen", "rejected"):
            messages = [*pair.prompt, {"role": "assistant", "content": getattr(pair, name)}]
            # Left truncation is decided for the pair below, not per side: encode both whole first.
            enc = encode_conversation(tokenizer, messages, max_length if truncation == "drop" else None, "drop", mask_source)
            if isinstance(enc, Rejection):
                rejects.add(pair.source, pair.where, enc.reason, f"{name}: {enc.detail}", record)
                break
            sides.append((enc.input_ids, last_answer_only(enc.labels)))
        if len(sides) < 2:
            continue
        if truncation == "left":
            rows = [ids for ids, _ in sides]
            starts = [next(t for t, label in enumerate(labels) if label != IGNORE_INDEX) for _, labels in sides]
            cut = shared_left_cut(rows, shared_prompt_tokens(rows, starts), max_length)
            if cut is None:
                longest = max(len(r) - s for r, s in zip(rows, starts))
                rejects.add(pair.source, pair.where, "too_long",
                            f"an answer of {longest} tokens (with its turn header) does not fit max_length={max_length} "
                            "even without the prompt; truncation=left cuts only the prompt, the same for both answers",
                            record)
                continue
            sides = [(ids[cut:], labels[cut:]) for ids, labels in sides]
        out.append(EncodedPair(pair, sides[0][0], sides[0][1], sides[1][0], sides[1][1]))
    return out


def preference_probs(
    pairs: list[EncodedPair], field_name: str, rejects: RejectLog
) -> tuple[list[EncodedPair], torch.Tensor]:
    """The pairs whose record holds p* = `field_name` in [0.5, 1], and their ε = 1 − p* ((N,)).

    A pair without the field, or with a value that is not such a number, is rejected (`bad_field`).
    """
    kept, eps = [], []
    for p in pairs:
        value = p.pair.extra.get(field_name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.5 <= value <= 1.0:
            detail = f"field {field_name!r} is {value!r}; expected p*(chosen preferred), a number in [0.5, 1]"
            record = {**p.pair.extra, "prompt": p.pair.prompt, "chosen": p.pair.chosen, "rejected": p.pair.rejected}
            rejects.add(p.pair.source, p.pair.where, "bad_field", detail, record)
            continue
        kept.append(p)
        eps.append(1.0 - float(value))
    return kept, torch.tensor(eps, dtype=torch.float32)


def last_answer_only(labels: list[int]) -> list[int]:
    """`labels` with every supervised run but the last one set to IGNORE_INDEX."""
    out = [IGNORE_INDEX] * len(labels)
    t = len(labels) - 1
    while t >= 0 and labels[t] == IGNORE_INDEX:
        t -= 1
    while t >= 0 and labels[t] != IGNORE_INDEX:
        out[t] = labels[t]
        t -= 1
    return out


def collate_pairs(pairs: Sequence[EncodedPair], pad_id: int) -> dict[str, torch.Tensor]:
    """One padded batch of 2B rows: the B chosen conversations, then the B rejected ones.

    `labels` are shifted (the logits at position t score `labels[t]`, the token at t + 1) and
    IGNORE_INDEX outside the answers and on padding.
    """
    seqs = [p.chosen_ids for p in pairs] + [p.rejected_ids for p in pairs]
    labels = [p.chosen_labels for p in pairs] + [p.rejected_labels for p in pairs]
    input_ids, attention_mask = pad_sequences(seqs, pad_id, "right")
    shifted = torch.full_like(input_ids, IGNORE_INDEX)
    for row, lab in enumerate(labels):
        shifted[row, : len(lab) - 1] = torch.as_tensor(lab[1:], dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": shifted}


class PairBatches:
    """Micro-batches of pairs for the engine: a seeded reshuffle per epoch (pairs of similar length
    batched together unless `group_by_length=False`), sharded over ranks.

    The data position is one number (pairs drawn so far by all ranks), so resuming continues the same
    order. `reference` ((N,) chosen and (N,) rejected log-probs of the precomputed reference) rides
    along in each batch as `ref_chosen_logps` / `ref_rejected_logps`, and each (N,) tensor of
    `per_pair` under its own name (the per-pair `label_smoothing`).
    """

    GROUP_BATCHES = 32  # global batches sorted by length together

    def __init__(
        self,
        pairs: Sequence[EncodedPair],
        micro_batch_size: int,
        pad_id: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        reference: tuple[torch.Tensor, torch.Tensor] | None = None,
        per_pair: dict[str, torch.Tensor] | None = None,
        group_by_length: bool = True,
    ):
        if not pairs:
            raise DataError("no usable preference pairs to train on (see rejected.jsonl)")
        self.pairs, self.micro, self.pad_id, self.seed = pairs, micro_batch_size, pad_id, seed
        self.rank, self.world_size, self.reference = rank, world_size, reference
        self.per_pair = per_pair or {}
        self.group_by_length = group_by_length
        self.position = 0
        self._orders: dict[int, list[int]] = {}

    def _index(self, position: int) -> int:
        epoch, i = divmod(position, len(self.pairs))
        if epoch not in self._orders:
            self._orders = {epoch: self._epoch_order(epoch)}
        return self._orders[epoch][i]

    def _epoch_order(self, epoch: int) -> list[int]:
        """A seeded permutation; with `group_by_length`, each window of `GROUP_BATCHES` global batches is
        sorted by pair length, cut into global batches, and the batches shuffled (less padding, as
        chosen and rejected of every pair of a batch pad to its longest row)."""
        generator = torch.Generator().manual_seed(self.seed + epoch)
        order = torch.randperm(len(self.pairs), generator=generator).tolist()
        if not self.group_by_length:
            return order
        size = self.micro * self.world_size
        batches = []
        for start in range(0, len(order), size * self.GROUP_BATCHES):
            window = sorted(order[start : start + size * self.GROUP_BATCHES], key=self._length)
            batches += [window[i : i + size] for i in range(0, len(window), size)]
        return [i for b in torch.randperm(len(batches), generator=generator).tolist() for i in batches[b]]

    def _length(self, index: int) -> int:
        return max(len(self.pairs[index].chosen_ids), len(self.pairs[index].rejected_ids))

    def next_batch(self) -> dict[str, torch.Tensor]:
        start = self.position + self.rank * self.micro
        indices = [self._index(p) for p in range(start, start + self.micro)]
        self.position += self.micro * self.world_size
        batch = collate_pairs([self.pairs[i] for i in indices], self.pad_id)
        if self.reference is not None:
            index = torch.as_tensor(indices)
            batch["ref_chosen_logps"] = self.reference[0][index]
            batch["ref_rejected_logps"] = self.reference[1][index]
        for name, values in self.per_pair.items():
            batch[name] = values[torch.as_tensor(indices)]
        return batch

    def state_dict(self) -> dict:
        return {"position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.position = int(state["position"])
