"""Held-out evaluation of a policy during online RL: gold reward with its standard error, at a KL.

On the held-out prompts, `samples` samples per prompt (a fixed seed, so every evaluation of a run
draws with the same random numbers) and optionally one greedy answer are scored by the gold scorer
(and the proxy). A prompt's score is the mean over its samples; the reported mean and standard
error are over prompts. KL(π || π_ref) per response is estimated on the same samples as the mean of
Σ_t (log π − log π_ref) over the sampled tokens (k1 on the policy's own samples: unbiased).

Every evaluation's per-prompt scores are kept (`history`), so the stage reports the gain of the
final policy over the starting one as a *paired* difference over the same prompts, with its
standard error.
"""

from __future__ import annotations

import math

import torch

from chatforge.rl.config import PolicyEvalConfig


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (sample std / sqrt(n); 0 for one value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def paired_gain(before: list[float], after: list[float]) -> dict[str, float]:
    """Mean of after − before over the same prompts, its standard error, and the gain in SEs."""
    diffs = [a - b for a, b in zip(after, before)]
    gain, se = mean_se(diffs)
    return {"gain": gain, "se": se, "z": gain / se if se > 0 else float("nan"), "prompts": len(diffs)}


class PolicyEvaluator:
    """`evaluate(model) -> metrics` for the engine (see module docstring)."""

    def __init__(self, records: list[dict], tokenizer, cfg: PolicyEvalConfig, gold, proxy, batches, forward_batch_size: int = 16):
        from chatforge.sampling.sampler import chat_prompt

        self.records, self.tokenizer, self.cfg = records, tokenizer, cfg
        self.gold, self.proxy, self.batches = gold, proxy, batches
        self.prompt_ids = [chat_prompt(tokenizer, r["prompt"]) for r in records]
        self.forward_batch_size = forward_batch_size
        # vllm: the rollouts' engine, whose weights are reloaded when they changed (rl/rollout_sampler.py); torch:
        # a fresh Sampler on the live weights per evaluation
        shared = getattr(batches, "rollout_sampler", None)
        self.samplers = shared if shared is not None and shared.backend == cfg.sampling.backend else None
        if self.samplers is None and shared is not None and cfg.sampling.backend == "vllm":
            from chatforge.rl.rollout_sampler import RolloutSampler

            self.samplers = RolloutSampler(tokenizer, "vllm", shared.export_dir)  # the rollouts use torch: no clash
        self.history: list[dict] = []  # per evaluation: step, per-prompt gold (sampled, greedy)
        self.step_of = None  # callable giving the engine's step (set by the stage)

    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        from chatforge.engine.distributed import unwrap
        from chatforge.sampling.sampler import Sampler

        # the plain model: DDP's forward would sync buffers in the middle of decoding. Under torchrun every rank
        # evaluates every held-out prompt (same weights, same seed: the same numbers), rank 0 logs them
        model = unwrap(model)
        policy = getattr(model, "policy", model)
        sampler = self.samplers.sampler(policy) if self.samplers is not None else Sampler(policy, self.tokenizer)
        n = self.cfg.samples
        out = sampler.generate(self.prompt_ids, self.cfg.sampling.model_copy(update={"n": n}))
        rows = [(i, c) for i, group in enumerate(out) for c in group]
        recs = [self.records[i] for i, _ in rows]
        texts = [c.text for _, c in rows]
        gold = self.gold.score(recs, texts)
        proxy = self.proxy.score(recs, texts)
        per_prompt = [sum(gold[i * n : (i + 1) * n]) / n for i in range(len(self.records))]
        # no reference (kl.coef 0): the KL is not measured, NaN rather than a 0 that would read as "no drift"
        kl = self._kl(policy, rows) if getattr(self.batches, "uses_reference", True) else float("nan")
        metrics = {}
        metrics["eval/gold"], metrics["eval/gold_se"] = mean_se(per_prompt)
        metrics["eval/proxy"] = sum(proxy) / len(proxy)
        metrics["eval/kl"] = kl
        metrics["eval/length"] = sum(len(c.token_ids) for _, c in rows) / len(rows)
        record = {"step": self.step_of() if self.step_of else None, "gold": per_prompt}
        if self.cfg.greedy:
            greedy = sampler.generate(self.prompt_ids, self.cfg.sampling.model_copy(update={"n": 1, "temperature": 0.0}))
            greedy_gold = self.gold.score(self.records, [g[0].text for g in greedy])
            metrics["eval/greedy_gold"], metrics["eval/greedy_gold_se"] = mean_se(greedy_gold)
            record["greedy_gold"] = greedy_gold
        record["metrics"] = dict(metrics)
        self.history.append(record)
        return metrics

    def _kl(self, policy, rows) -> float:
        """Mean over samples of Σ_t (log π − log π_ref) of the sampled response tokens."""
        from chatforge.rl.forward import response_outputs

        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        device = next(policy.parameters()).device
        total, count = 0.0, 0
        for start in range(0, len(rows), self.forward_batch_size):
            part = rows[start : start + self.forward_batch_size]
            seqs = [self.prompt_ids[i] + list(c.token_ids) for i, c in part]
            width = max(len(s) for s in seqs)
            ids = torch.full((len(seqs), width), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            act = torch.zeros((len(seqs), width - 1))
            for r, ((i, _), s) in enumerate(zip(part, seqs)):
                ids[r, : len(s)], mask[r, : len(s)] = torch.tensor(s), 1
                act[r, len(self.prompt_ids[i]) - 1 : len(s) - 1] = 1
            ids, mask, act = ids.to(device), mask.to(device), act.to(device)
            with torch.inference_mode():
                logp, _, _ = response_outputs(policy, ids, mask, act, with_entropy=False)
                ref_model, context = self.batches.reference_context()
                with context:
                    ref, _, _ = response_outputs(ref_model, ids, mask, act, with_entropy=False)
            total += float(((logp - ref) * act).sum())
            count += len(part)
        return total / max(count, 1)
