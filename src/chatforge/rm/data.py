"""Preference data for reward models: pairs and K-wise rankings, read as one shape, a ranked group.

Layouts, detected per record:

- pair: `{"prompt", "chosen", "rejected"}`. `prompt` is a string (one user turn) or a list of chat
  messages; `chosen`/`rejected` are strings, or lists of messages: one assistant message when
  `prompt` is given, else whole conversations sharing every turn but the last (TRL's implicit-prompt
  layout), whose last turn is the answer. The task world's pairs add `category`, `kind`, `task` and
  gold rewards `chosen_reward`/`rejected_reward`.
- ranking: `{"prompt", "responses": [...]}` with the responses **best first** (the task world's
  `rankings_*.jsonl`, ordered by gold reward, descending, with pairwise different rewards), or with
  an explicit `"ranks": [...]` (lower is better, equal ranks are ties). Gold rewards in `rewards`.

A pair is a ranking of K = 2. Each response is rendered with the tokenizer's chat template as the
prompt's messages plus `{"role": "assistant", "content": response}`, exactly as
`chatforge.scoring.reward_model` renders what it scores, and the reward is read at the last token.

Rejected records (file, line, reason) go to the `RejectLog`: `bad_json`, `not_utf8`, `not_an_object`,
`unknown_format`, `missing_field`, `bad_field`, `empty_content`, `prompt_mismatch` (conversational
chosen/rejected whose earlier turns differ), `too_few_responses`, `no_order` (every response tied, or
chosen equal to rejected), `identical_responses` (one text given two ranks), `missing_gold` (a margin from gold rewards was asked for and the record
has none) and `too_long` (a response longer than `max_length` tokens with `truncation=drop`, or one
that does not fit even without the prompt with `truncation=left`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from chatforge.data.padding import pad_sequences
from chatforge.data.parsers import finite_number, parse_pair, parse_ranking
from chatforge.data.records import DataSource, RecordError, read_records
from chatforge.data.shared_truncation import shared_left_cut, shared_prompt_tokens
from chatforge.errors import DataError
from chatforge.run_dir import RejectLog

Truncation = Literal["left", "drop"]
Packing = Literal["shared_prefix", "pack", "pad"]


class PreferenceSourceConfig(DataSource):
    """A source of pairs and/or rankings (`data.sources` / `data.val_sources`); the layouts: docs/data_formats.md."""


@dataclass
class Group:
    """One prompt with its responses in any order; `ranks` says which is better (lower is better)."""

    prompt: list[dict[str, str]]
    responses: list[str]
    ranks: list[int]
    gold: list[float] | None  # gold reward per response, when the record has one
    source: str
    where: str
    category: str = ""
    kind: str = ""  # a pair's rejected kind (the world's "wrong", "rambling", ...)
    kinds: list[str] = field(default_factory=list)  # a ranking's kind per response
    is_pair: bool = True
    input_ids: list[list[int]] = field(default_factory=list)  # one rendered conversation per response


def read_groups(sources: list[PreferenceSourceConfig], rejects: RejectLog, gold_field: str | None,
                need_gold: bool) -> list[Group]:
    def parse(record: Any, source: str, where: str) -> Group:
        return parse_record(record, source, where, gold_field, need_gold)

    return list(read_records(sources, parse, rejects))


def parse_record(record: Any, source: str, where: str, gold_field: str | None, need_gold: bool) -> Group:
    """A `Group` from one pair or ranking record; `RecordError` (reason, detail) when unusable."""
    if not isinstance(record, dict):
        raise RecordError("not_an_object", f"expected a JSON object, got {type(record).__name__}")
    if "chosen" in record or "rejected" in record:
        group = _pair(record, source, where, gold_field)
    elif "responses" in record:
        group = _ranking(record, source, where, gold_field)
    else:
        raise RecordError(
            "unknown_format", f"no chosen+rejected or responses field (fields: {', '.join(map(str, record))})"
        )
    if need_gold and group.gold is None:
        raise RecordError("missing_gold", f"margin from gold rewards asked for, but the record has no {gold_field!r} rewards")
    for i, text in enumerate(group.responses):
        if not text.strip():
            raise RecordError("empty_content", f"response {i} is empty")
    if len(set(group.ranks)) < 2:
        raise RecordError("no_order", "every response has the same rank: nothing to learn")
    if group.is_pair and group.responses[0] == group.responses[1]:
        raise RecordError("no_order", "chosen and rejected are the same text")
    return group


def _check_prompt(record: dict, prompt: list[dict[str, str]]) -> list[dict[str, str]]:
    if isinstance(record.get("prompt"), str) and not record["prompt"].strip():
        raise RecordError("empty_content", "field 'prompt' is empty")
    if prompt[-1]["role"] == "assistant":
        raise RecordError("bad_field", "the prompt ends with an assistant turn; the response comes after the prompt")
    return prompt


def _pair(record: dict, source: str, where: str, gold_field: str | None) -> Group:
    read = parse_pair(record)
    gold = None
    if gold_field and f"chosen_{gold_field}" in record and f"rejected_{gold_field}" in record:
        gold = [finite_number(record, f"chosen_{gold_field}"), finite_number(record, f"rejected_{gold_field}")]
    return Group(_check_prompt(record, read.prompt), [read.chosen, read.rejected], [0, 1], gold, source, where,
                 str(record.get("category", "")), str(record.get("kind", "")))


def _ranking(record: dict, source: str, where: str, gold_field: str | None) -> Group:
    read = parse_ranking(record)
    gold = None
    key = f"{gold_field}s" if gold_field else None
    if key and key in record:
        values = record[key]
        if not isinstance(values, list) or len(values) != len(read.responses):
            raise RecordError("bad_field", f"field {key!r} must be one number per response")
        gold = [finite_number({key: v}, key) for v in values]
    kinds = record.get("kinds") if isinstance(record.get("kinds"), list) else []
    return Group(_check_prompt(record, read.prompt), read.responses, read.ranks, gold, source, where,
                 str(record.get("category", "")), kinds=[str(k) for k in kinds], is_pair=False)


def encode_groups(groups: list[Group], tokenizer, max_length: int, truncation: Truncation,
                  rejects: RejectLog) -> tuple[list[Group], int]:
    """`groups` with `input_ids` filled in (the ones with a too-long response dropped under
    truncation=drop), and how many responses were cut. truncation=left cuts the same prompt prefix
    from every response of a group (`data/shared_truncation.py`) and drops a group whose longest
    response does not fit even without its prompt."""
    kept, cut = [], 0
    for group in groups:
        rows = [
            list(tokenizer.apply_chat_template([*group.prompt, {"role": "assistant", "content": r}], tokenize=True,
                                               return_dict=False))
            for r in group.responses
        ]
        longest = max(len(r) for r in rows)
        if longest > max_length:
            if truncation == "drop":
                rejects.add(group.source, group.where, "too_long", f"{longest} tokens > max_length {max_length}",
                            {"prompt": group.prompt, "responses": group.responses})
                continue
            # The same prompt prefix comes off every response, so all are scored after the same context;
            # a group whose longest response does not fit even without the prompt is not read.
            prompt_ids = list(tokenizer.apply_chat_template(group.prompt, add_generation_prompt=True, tokenize=True,
                                                            return_dict=False))
            starts = [len(prompt_ids) if r[: len(prompt_ids)] == prompt_ids else common_prefix(rows) for r in rows]
            n = shared_left_cut(rows, shared_prompt_tokens(rows, starts), max_length)
            if n is None:
                rejects.add(group.source, group.where, "too_long",
                            f"a response of {max(len(r) - s for r, s in zip(rows, starts))} tokens does not fit "
                            f"max_length {max_length} even without the prompt (truncation=left cuts only the prompt)",
                            {"prompt": group.prompt, "responses": group.responses})
                continue
            cut += len(rows)
            rows = [r[n:] for r in rows]
        group.input_ids = rows
        kept.append(group)
    return kept, cut


def collate(groups: list[Group], pad_id: int, packing: Packing = "pad") -> dict[str, torch.Tensor]:
    """All responses of `groups` as ONE batch, and the group layout.

    packing=pad: one response per row, right padded: input_ids/attention_mask (N, T) with N = Σ K_b.
    packing=pack / shared_prefix: the responses packed into rows (`pack_groups`): input_ids/position_ids
    (R, W), `reward_index` (N,) where response n's reward is read in the flattened (R·W) positions, and
    for shared_prefix `segment_ids`/`branch_ids` (R, W), from which `rm.model.rewards_of` builds the mask.
    All: `lengths` (N,) tokens per response; `row_group`, `row_slot`: (N,) the group and slot of each
    response; `ranks`, `slot_mask`, `gold`: (B, K_max) (gold is NaN where unknown)."""
    sequences = [g.input_ids for g in groups]
    if packing == "pad":
        batch = padded_rows([ids for seqs in sequences for ids in seqs], pad_id)
    else:
        batch = pack_groups(sequences, pad_id, share_prefix=packing == "shared_prefix")
    return batch | group_layout(groups)


def padded_rows(sequences: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """One sequence per row, right padded to the longest; the model reads the last non-pad token."""
    input_ids, attention = pad_sequences(sequences, pad_id, "right")
    return {"input_ids": input_ids, "attention_mask": attention, "lengths": attention.sum(1)}


def pack_groups(groups: list[list[list[int]]], pad_id: int, share_prefix: bool) -> dict[str, torch.Tensor]:
    """The token ids of each group's responses packed into rows without padding between them.

    A unit is one response (`share_prefix=False`), or a whole group: the tokens its K responses share
    at the start (the rendered prompt), once, then each response's own tokens (`share_prefix=True`;
    a group that would be wider than twice the batch's longest response is split into several units,
    each with the prefix, which bounds the rows' width and so the attention's cost and the mask).
    Units are placed first fit, longest first, into rows as wide as the longest unit. Position ids
    restart at 0 at every unit, and a response's own tokens continue the positions of the shared
    prefix, so every token has the position it has alone. A row's unused tail is pad tokens whose
    positions count on from 0: one more unit that nothing attends to.

    Without sharing, the restarting position ids are all the model needs to keep units apart
    (`chatforge.data.packing`). With sharing they are not enough: a response must see the prefix but
    not its sibling responses, so `segment_ids` (the unit of each position) and `branch_ids` (0 for
    the shared prefix and pads, k + 1 for response k's own tokens) come along for the mask.

    `reward_index[n]` is the flat position (row · W + column) of response n's reward token: its last
    token that is not `pad_id`, as `AutoModelForSequenceClassification` reads a right-padded row
    (position 0 when every token is `pad_id`, as transformers' argmax gives)."""
    longest = max(len(ids) for seqs in groups for ids in seqs)
    cap = 2 * longest if share_prefix else longest  # the widest unit (so the widest row) allowed
    units = []  # (tokens, positions, branches, [(response n, offset of its reward token in the unit)])
    n = 0
    for seqs in groups:
        shared = common_prefix(seqs) if share_prefix else 0
        unit = None
        for k, ids in enumerate(seqs):
            reward_at = last_non_pad(ids, pad_id)
            if share_prefix and unit is not None and len(unit[0]) + len(ids) - shared <= cap:
                begin = shared  # the group's unit grows by response k's own tokens
                if reward_at >= shared:
                    reward_at += len(unit[0]) - shared
            else:  # a new unit: the first response of a group, or one that would make it too wide
                begin, unit = 0, ([], [], [], [])
                units.append(unit)
            tokens, positions, branches, reads = unit
            tokens += ids[begin:]
            positions += range(begin, len(ids))
            branches += [0] * (shared - begin) + [k + 1 if share_prefix else 0] * (len(ids) - shared)
            reads.append((n, reward_at))
            n += 1
    width = max(len(u[0]) for u in units)
    fill: list[int] = []  # tokens used per row
    start = [0] * len(units)  # flat position of each unit's first token
    for u in sorted(range(len(units)), key=lambda u: -len(units[u][0])):  # stable: ties keep their order
        size = len(units[u][0])
        row = next((r for r, used in enumerate(fill) if used + size <= width), len(fill))
        if row == len(fill):
            fill.append(0)
        start[u] = row * width + fill[row]
        fill[row] += size
    total = len(fill) * width
    input_ids = torch.full((total,), pad_id, dtype=torch.long)
    position_ids = torch.zeros(total, dtype=torch.long)
    segment_ids = torch.zeros(total, dtype=torch.long)
    branch_ids = torch.zeros(total, dtype=torch.long)
    reward_index = torch.zeros(n, dtype=torch.long)
    for u, (tokens, positions, branches, reads) in enumerate(units):
        span = slice(start[u], start[u] + len(tokens))
        input_ids[span], position_ids[span] = torch.tensor(tokens), torch.tensor(positions)
        segment_ids[span], branch_ids[span] = u + 1, torch.tensor(branches)
        for response, offset in reads:
            reward_index[response] = start[u] + offset
    for row, used in enumerate(fill):  # the tails: segment 0, positions from 0
        position_ids[row * width + used : (row + 1) * width] = torch.arange(width - used)
    batch = {
        "input_ids": input_ids.view(-1, width), "position_ids": position_ids.view(-1, width),
        "reward_index": reward_index, "lengths": torch.tensor([len(ids) for seqs in groups for ids in seqs]),
    }
    if share_prefix:
        batch |= {"segment_ids": segment_ids.view(-1, width), "branch_ids": branch_ids.view(-1, width)}
    return batch


def common_prefix(sequences: list[list[int]]) -> int:
    """How many tokens at the start all `sequences` share."""
    shortest = min(len(s) for s in sequences)
    for i in range(shortest):
        if any(s[i] != sequences[0][i] for s in sequences[1:]):
            return i
    return shortest


def last_non_pad(ids: list[int], pad_id: int) -> int:
    last = len(ids) - 1
    while last > 0 and ids[last] == pad_id:
        last -= 1
    return last


def group_layout(groups: list[Group]) -> dict[str, torch.Tensor]:
    """`row_group`, `row_slot` (N,) and `ranks`, `slot_mask`, `gold` (B, K_max) of `collate`."""
    k_max = max(len(g.responses) for g in groups)
    ranks = torch.zeros((len(groups), k_max), dtype=torch.long)
    slot_mask = torch.zeros((len(groups), k_max), dtype=torch.bool)
    gold = torch.full((len(groups), k_max), float("nan"))
    row_group, row_slot = [], []
    for b, g in enumerate(groups):
        k = len(g.responses)
        ranks[b, :k] = torch.tensor(g.ranks)
        slot_mask[b, :k] = True
        if g.gold is not None:
            gold[b, :k] = torch.tensor(g.gold)
        row_group += [b] * k
        row_slot += list(range(k))
    return {
        "row_group": torch.tensor(row_group), "row_slot": torch.tensor(row_slot), "ranks": ranks,
        "slot_mask": slot_mask, "gold": gold,
    }


class GroupBatches:
    """Micro-batches of `micro_batch_size` groups (pairs or rankings), reshuffled each epoch (seeded by
    (seed, epoch)). Rank r of W takes groups [r*B, (r+1)*B) of each global micro-batch of B*W groups,
    so the data of a step does not depend on the number of ranks. `packing` as in `collate`.
    State: (epoch, position)."""

    def __init__(self, groups: list[Group], micro_batch_size: int, pad_id: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1, packing: Packing = "pad"):
        if len(groups) < micro_batch_size * world_size:
            raise DataError(
                f"{len(groups)} usable preference records but a step needs {micro_batch_size * world_size} "
                "(train.micro_batch_size x ranks): give more data or a smaller micro_batch_size"
            )
        self.groups, self.batch, self.pad_id, self.seed = groups, micro_batch_size, pad_id, seed
        self.rank, self.world, self.packing = rank, world_size, packing
        self.epoch, self.position = 0, 0
        self._order = self._shuffle(0)

    def _shuffle(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.groups))

    def next_batch(self) -> dict[str, torch.Tensor]:
        span = self.batch * self.world
        if self.position + span > len(self._order):  # drop the ragged end of an epoch
            self.epoch, self.position = self.epoch + 1, 0
            self._order = self._shuffle(self.epoch)
        mine = self._order[self.position + self.rank * self.batch : self.position + (self.rank + 1) * self.batch]
        self.position += span
        return collate([self.groups[i] for i in mine], self.pad_id, self.packing)

    def steps_per_epoch(self, grad_accum: int) -> float:
        return len(self.groups) / (self.batch * self.world * grad_accum)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._order = self._shuffle(self.epoch)


def iter_chunks(items: list, size: int) -> Iterator[list]:
    for begin in range(0, len(items), size):
        yield items[begin : begin + size]
