"""Probe responses to a set of prompts, encoded once for scoring through a training run.

A probe is one prompt with several responses (kinds). `load_probes` reads either the task world's
probe file (`{id, prompt, responses: {kind: text}}`, world/probes.py) or plain preference pairs
(`{prompt, chosen, rejected}`), and fills in the text kinds the file lacks:

  irrelevant_train   another probe's chosen answer (another training prompt's)
  irrelevant_test    a held-out pair's chosen answer (`heldout` file), else another probe's chosen
                     answer; `ProbeSet.notes` says which source each derived kind came from

`ProbeSet.encode` tokenizes prompt + response with the chat template (`sft.masking`, answer-only
labels, the closing special token scored too) and builds two token-level kinds from the chosen one:

  chosen_token_permuted  the chosen answer's tokens in a seeded random order
  random_ids             seeded uniform ids of the same length from the non-special vocabulary

In both the special tokens of the answer span (the end-of-turn token) stay in place, so only the
answer's content changes. The model's current greedy answer ("greedy") is generated at each
measurement (`chatforge.dynamics.measure`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from chatforge.dynamics.config import DynamicsConfig
from chatforge.errors import DataError
from chatforge.losses.lm import IGNORE_INDEX


@dataclass(frozen=True)
class Probe:
    id: str
    prompt: list[dict]
    responses: dict[str, str]  # text kinds
    task: str | None = None


@dataclass
class EncodedProbe:
    probe: Probe
    ids: dict[str, list[int]] = field(default_factory=dict)  # kind -> prompt + response token ids
    labels: dict[str, list[int]] = field(default_factory=dict)  # kind -> unshifted answer-only labels


@dataclass
class ProbeSet:
    probes: list[EncodedProbe]
    kinds: tuple[str, ...]  # kinds scored by teacher forcing (text and token kinds), "greedy" excluded
    greedy: bool
    notes: dict[str, str]  # derived kind -> where it came from
    dropped: dict[str, int]  # reason -> probes not used

    def __len__(self) -> int:
        return len(self.probes)


def _read_jsonl(path: Path) -> list[dict]:
    """Every record of a probe file; a probe set is written by a program, so a bad line is an error."""
    from chatforge.data.records import RecordError, decode_record

    if not path.exists():
        raise DataError(f"probe file not found: {path}")
    rows = []
    with path.open("rb") as fh:
        for n, raw in enumerate(fh, 1):
            if raw.strip():
                try:
                    rows.append(decode_record(raw))
                except RecordError as exc:
                    raise DataError(f"{path}:{n}: not JSON ({exc.reason}: {exc.detail})") from None
    return rows


def _prompt(record: dict, where: str) -> list[dict]:
    prompt = record.get("prompt")
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if not isinstance(prompt, list) or not prompt:
        raise DataError(f"{where}: field 'prompt' must be a string or a list of messages")
    return prompt


def load_probes(cfg: DynamicsConfig) -> tuple[list[Probe], dict[str, str]]:
    """The first `max_probes` probes of `cfg.probes` with the derived text kinds, and notes on them."""
    path = Path(cfg.probes)
    probes = []
    for n, record in enumerate(_read_jsonl(path)[: cfg.max_probes]):
        where = f"{path}:{n + 1}"
        responses = record.get("responses")
        if responses is None:  # a preference pair
            responses = {k: record[k] for k in ("chosen", "rejected") if isinstance(record.get(k), str)}
        if not isinstance(responses, dict) or not isinstance(responses.get("chosen"), str):
            raise DataError(f"{where}: a probe needs responses.chosen (or a pair's chosen) as a string")
        probes.append(Probe(str(record.get("id", n)), _prompt(record, where), dict(responses), record.get("task")))
    if not probes:
        raise DataError(f"{path} holds no probes")
    notes = {}
    if any("irrelevant_train" not in p.responses for p in probes):
        notes["irrelevant_train"] = "the next probe's chosen answer (another training prompt)"
    if any("irrelevant_test" not in p.responses for p in probes):
        notes["irrelevant_test"] = (
            f"chosen answers of held-out pairs in {cfg.heldout}" if cfg.heldout
            else "another probe's chosen answer (half the set away; no held-out split given)"
        )
    heldout = [r["chosen"] for r in _read_jsonl(Path(cfg.heldout)) if isinstance(r.get("chosen"), str)] if cfg.heldout else []
    out = []
    for i, p in enumerate(probes):
        responses = dict(p.responses)
        if len(probes) > 1:
            responses.setdefault("irrelevant_train", probes[(i + 1) % len(probes)].responses["chosen"])
            responses.setdefault(
                "irrelevant_test", heldout[i % len(heldout)] if heldout else probes[(i + len(probes) // 2) % len(probes)].responses["chosen"]
            )
        out.append(Probe(p.id, p.prompt, responses, p.task))
    return out, notes


def permute_answer(ids: list[int], labels: list[int], special: set[int], rng: random.Random) -> list[int]:
    """`ids` with the supervised non-special tokens in a random order (other positions unchanged)."""
    slots = [t for t, label in enumerate(labels) if label != IGNORE_INDEX and ids[t] not in special]
    values = [ids[t] for t in slots]
    shuffled = list(values)
    for _ in range(10):  # a different order where one exists
        rng.shuffle(shuffled)
        if shuffled != values or len(set(values)) < 2:
            break
    out = list(ids)
    for t, v in zip(slots, shuffled):
        out[t] = v
    return out


def random_answer(ids: list[int], labels: list[int], special: set[int], vocab: int, rng: random.Random) -> list[int]:
    """`ids` with each supervised non-special token replaced by a uniform draw from the non-special ids."""
    pool = [v for v in range(vocab) if v not in special]
    out = list(ids)
    for t, label in enumerate(labels):
        if label != IGNORE_INDEX and ids[t] not in special:
            out[t] = rng.choice(pool)
    return out


def encode_probes(cfg: DynamicsConfig, tokenizer, vocab: int | None = None) -> ProbeSet:
    """Load and tokenize the probes; a probe with a response that cannot be encoded is dropped."""
    from chatforge.sft.masking import Rejection, encode_conversation

    probes, notes = load_probes(cfg)
    wanted = cfg.wanted()
    text_kinds = [k for k in wanted if k not in ("greedy", "chosen_token_permuted", "random_ids")]
    token_kinds = [k for k in ("chosen_token_permuted", "random_ids") if k in wanted]
    missing = sorted({k for p in probes for k in text_kinds if k not in p.responses})
    if missing and cfg.kinds is not None:
        raise DataError(f"{cfg.probes}: the probes lack the kind(s) {missing} asked for in dynamics.kinds")
    text_kinds = [k for k in text_kinds if k not in missing]  # kinds the file lacks (all kinds by default)
    special = set(tokenizer.all_special_ids)
    vocab = vocab or len(tokenizer)
    rng = random.Random(cfg.seed)
    encoded, dropped = [], {}
    for probe in probes:
        item = EncodedProbe(probe)
        failed = None
        for kind in dict.fromkeys(["chosen", *text_kinds]):
            messages = [*probe.prompt, {"role": "assistant", "content": probe.responses[kind]}]
            enc = encode_conversation(tokenizer, messages, cfg.max_length, "drop")
            if isinstance(enc, Rejection):
                failed = f"{kind}: {enc.reason}"
                break
            item.ids[kind], item.labels[kind] = enc.input_ids, enc.labels
        if failed:
            dropped[failed] = dropped.get(failed, 0) + 1
            continue
        ids, labels = item.ids["chosen"], item.labels["chosen"]
        if "chosen_token_permuted" in token_kinds:
            perm = permute_answer(ids, labels, special, rng)
            item.ids["chosen_token_permuted"], item.labels["chosen_token_permuted"] = perm, _relabel(perm, labels)
        if "random_ids" in token_kinds:
            rand = random_answer(ids, labels, special, vocab, rng)
            item.ids["random_ids"], item.labels["random_ids"] = rand, _relabel(rand, labels)
        if "chosen" not in wanted:
            del item.ids["chosen"], item.labels["chosen"]
        encoded.append(item)
    if not encoded:
        raise DataError(f"{cfg.probes}: no probe could be encoded ({dropped})")
    for kind in token_kinds:
        notes[kind] = f"built from the chosen answer's tokens (seed {cfg.seed})"
    kinds = tuple(k for k in wanted if k != "greedy" and k in encoded[0].ids)
    return ProbeSet(encoded, kinds, "greedy" in wanted, notes, dropped)


def _relabel(ids: list[int], labels: list[int]) -> list[int]:
    """Labels of `ids` supervised at the positions `labels` supervises."""
    return [ids[t] if label != IGNORE_INDEX else IGNORE_INDEX for t, label in enumerate(labels)]
