"""One measurement of the probes under a model: log-probs per kind, the greedy answer, argmax mass.

For each kind k, over the probes:
  logp/k            mean Σ_t log π(y_t | x, y_<t) over the response's tokens (its closing token included)
  logp_per_token/k  mean of that sum divided by the response's token count
`greedy`: the model's current greedy answer (temperature 0, `sampling.Sampler`) to each probe prompt,
scored the same way; `greedy/gold_reward` is its task-world gold reward where the prompt is a world task.
`argmax_mass/chosen`: mean over probes of the mean over the chosen answer's positions of
max_v π(v | x, y_<t), the probability the model puts on its own top token while reading the chosen
answer; squeezing concentrates mass there (Ren & Sutherland, arXiv:2407.10490, §3.3).

The summed log-probs come from `models.logprobs.sequence_logps` (one forward, LM head at the answer
positions only); the argmax mass applies the same head to the chosen rows once more.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from chatforge.data.padding import pad_sequences
from chatforge.dynamics.probes import ProbeSet
from chatforge.losses.lm import IGNORE_INDEX


def collate(rows: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch of (ids, unshifted labels) with shifted labels, as `dpo.data.collate_pairs`."""
    input_ids, attention_mask = pad_sequences([ids for ids, _ in rows], pad_id, "right")
    shifted = torch.full_like(input_ids, IGNORE_INDEX)
    for row, (_, labels) in enumerate(rows):
        shifted[row, : len(labels) - 1] = torch.as_tensor(labels[1:], dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": shifted}


@torch.no_grad()
def score_rows(model, rows: Sequence[tuple[list[int], list[int]]], pad_id: int, batch_size: int) -> tuple[list[float], list[int]]:
    """Summed answer log-prob and answer token count of each (ids, labels) row, in order."""
    from chatforge.models.logprobs import sequence_logps

    device = next(model.parameters()).device
    logps, counts = [0.0] * len(rows), [0] * len(rows)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))  # similar lengths together: less padding
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        batch = {k: v.to(device) for k, v in collate([rows[i] for i in index], pad_id).items()}
        out, n = sequence_logps(model, batch)
        for j, i in enumerate(index):
            logps[i], counts[i] = float(out[j]), int(n[j])
    return logps, counts


@torch.no_grad()
def argmax_mass(model, rows: Sequence[tuple[list[int], list[int]]], pad_id: int, batch_size: int) -> list[float]:
    """Per row: mean over the answer positions of max_v p(v | prefix)."""
    from chatforge.models.logprobs import answer_logits

    device = next(model.parameters()).device
    out = [0.0] * len(rows)
    for start in range(0, len(rows), batch_size):
        part = rows[start : start + batch_size]
        batch = {k: v.to(device) for k, v in collate(part, pad_id).items()}
        logits, supervised = answer_logits(model, batch)  # (answer tokens, vocab)
        top = logits.float().softmax(-1).max(-1).values
        which = supervised.nonzero(as_tuple=True)[0]
        sums = torch.zeros(len(part), device=top.device).index_add(0, which, top)
        counts = supervised.sum(1).clamp(min=1)
        for j, value in enumerate((sums / counts).tolist()):
            out[start + j] = value
    return out


def greedy_answers(model, tokenizer, prompts: Sequence[list[dict]], max_new_tokens: int, batch_size: int):
    """Per prompt: (text, (prompt + answer ids, labels on the answer ids)). The answer is scored as the
    tokens the model generated (its stop token included when it stopped), not a re-tokenization."""
    from chatforge.engine import distributed as dist
    from chatforge.sampling.config import SamplingConfig
    from chatforge.sampling.sampler import Sampler, chat_prompt

    sampling = SamplingConfig(temperature=0.0, max_new_tokens=max_new_tokens, max_batch_size=batch_size)
    prompt_ids = [chat_prompt(tokenizer, p) for p in prompts]
    completions = Sampler(dist.unwrap(model), tokenizer).generate(prompt_ids, sampling)
    out = []
    for ids, (completion,) in zip(prompt_ids, completions):
        answer = list(completion.token_ids)
        out.append((completion.text, (ids + answer, [IGNORE_INDEX] * len(ids) + answer)))
    return out


def _gold(prompt, text) -> float | None:
    from chatforge.errors import ChatforgeError
    from chatforge.scoring.world import gold_parts

    try:
        return gold_parts(prompt, text).total
    except ChatforgeError:
        return None  # not a task-world prompt


def measure(model, tokenizer, probes: ProbeSet, batch_size: int = 16, greedy_max_new_tokens: int = 64) -> dict:
    """One row of probe statistics (see the module docstring) for `model` as it is now."""
    pad_id = tokenizer.pad_token_id
    row: dict = {"probes": len(probes)}
    rows, where = [], []
    for kind in probes.kinds:
        for i, item in enumerate(probes.probes):
            rows.append((item.ids[kind], item.labels[kind]))
            where.append((kind, i))
    if probes.greedy:
        answers = greedy_answers(model, tokenizer, [p.probe.prompt for p in probes.probes], greedy_max_new_tokens, batch_size)
        texts = [text for text, _ in answers]
        golds, words = [], []
        for i, (item, (text, scored)) in enumerate(zip(probes.probes, answers)):
            rows.append(scored)
            where.append(("greedy", i))
            golds.append(_gold(item.probe.prompt, text))
            words.append(len(text.split()))
        row["greedy/words"] = sum(words) / len(words)
        if all(g is not None for g in golds):
            row["greedy/gold_reward"] = sum(golds) / len(golds)
        row["greedy/matches_chosen"] = sum(
            t.strip() == p.probe.responses["chosen"].strip() for p, t in zip(probes.probes, texts)
        ) / len(texts)
        row["greedy_examples"] = texts[:3]
    logps, counts = score_rows(model, rows, pad_id, batch_size)
    totals: dict[str, list[tuple[float, int]]] = {}
    for (kind, _), lp, n in zip(where, logps, counts):
        totals.setdefault(kind, []).append((lp, n))
    for kind, values in totals.items():
        row[f"logp/{kind}"] = sum(lp for lp, _ in values) / len(values)
        row[f"logp_per_token/{kind}"] = sum(lp / max(n, 1) for lp, n in values) / len(values)
        row[f"tokens/{kind}"] = sum(n for _, n in values) / len(values)
    if "chosen" in probes.kinds:
        chosen = [(p.ids["chosen"], p.labels["chosen"]) for p in probes.probes]
        masses = argmax_mass(model, chosen, pad_id, batch_size)
        row["argmax_mass/chosen"] = sum(masses) / len(masses)
    return row
