"""Online DPO: preference pairs sampled from the policy being trained, labelled by a scorer, as Batches.

Each round (when the previous round's pairs are used up):
1. the next `prompts_per_rollout` prompts, `samples_per_prompt` (>= 2) samples each from the current
   policy (the sampler, seeded by the round's index);
2. per prompt, the best and the worst sample by the scorer become (chosen, rejected) when their scores
   differ by at least `min_margin`; a prompt whose samples all score alike gives no pair;
3. more prompts are drawn until the round holds at least one optimizer step of pairs (whole steps
   only; the surplus is dropped, it would be stale next round);
4. the reference's summed answer log-probs (a frozen copy, or the LoRA base with adapters off), once
   per round in inference mode; then `epochs` passes of seeded shuffles, micro-batches of pairs in
   the layout of `chatforge.dpo` (`collate_pairs`), trained by the offline DPO objective.

Under torchrun (rl/ranks.py) each rank samples its share of every draw's prompts, the round ends when
the rank with the fewest pairs has its share of a step, and every rank keeps that many whole steps of
its own pairs (DDP needs every rank at every step); the logged statistics are every rank's.

Guo et al. 2024 (arXiv:2402.04792) for online AI feedback; Ren & Sutherland (arXiv:2407.10490, the
seed's learning-dynamics paper) credit the on-policy pairs with avoiding the squeezing effect of
offline DPO, which the dynamics probes measure when `dynamics` is set.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import torch

from chatforge.dpo.data import EncodedPair, collate_pairs
from chatforge.errors import ChatforgeError
from chatforge.losses.lm import IGNORE_INDEX
from chatforge.rl.diagnostics import RolloutLog
from chatforge.rl.ranks import Ranks
from chatforge.rl.rollout import RANK_SEED_STRIDE, PromptStream
from chatforge.rl.rollout_sampler import RolloutSampler, vllm_export_dir

MAX_DRAWS_PER_ROUND = 20


class OnlinePairBatches:
    def __init__(self, records, tokenizer, cfg, micro_batch_size: int, rows_per_step: int, out_dir: Path,
                 seed: int = 0, reference=None, say=print, write: bool = True, ranks: Ranks = Ranks()):
        """`rows_per_step`: pairs of one optimizer step over every micro-batch and rank."""
        from chatforge.scoring import build_scorer

        if cfg.rollout.samples_per_prompt < 2:
            raise ChatforgeError("online DPO needs rollout.samples_per_prompt >= 2 (a pair per prompt)")
        ranks.check_prompts(cfg.rollout.prompts_per_rollout)
        self.ranks = ranks
        self._gathered: tuple[int, list | None] = (-1, None)  # (round, every rank's pairs and reference log-probs)
        self.records, self.tokenizer, self.cfg = records, tokenizer, cfg
        self.micro_batch_size, self.rows_per_step, self.seed, self.reference = micro_batch_size, rows_per_step, seed, reference
        self.scorer = build_scorer(cfg.reward.scorer)
        self.gold = build_scorer(cfg.reward.gold) if cfg.reward.gold is not None else None
        self.prompts = PromptStream(len(records), seed)
        self.log = RolloutLog(out_dir, cfg.diagnostics, say, write)
        self.rollout_sampler = RolloutSampler(tokenizer, cfg.rollout.sampling.backend, vllm_export_dir(out_dir, ranks))
        self.kl = None
        self.model = None
        self.index, self.draws = 0, 0
        self.pairs: list[dict] = []  # chosen_ids, chosen_labels, rejected_ids, rejected_labels, scores
        self.ref: torch.Tensor | None = None  # (pairs, 2) reference log-probs
        self.order: list[int] = []
        self.cursor = 0
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def attach(self, model) -> None:
        self.model = model

    def generator_model(self):
        return self.model

    def reference_context(self):
        if self.reference is not None:
            return self.reference, contextlib.nullcontext()
        if hasattr(self.model, "disable_adapter"):
            return self.model, self.model.disable_adapter()
        raise ChatforgeError("no reference model: give a frozen copy, or train with LoRA (adapters off = reference)")

    # ---- Batches protocol ------------------------------------------------------------------------
    def next_batch(self) -> dict[str, torch.Tensor]:
        if not self.pairs or self.cursor >= len(self.order):
            self._new_round()
        index = self.order[self.cursor : self.cursor + self.micro_batch_size]
        self.cursor += self.micro_batch_size
        encoded = [self._encoded(self.pairs[i]) for i in index]
        batch = collate_pairs(encoded, self.pad)
        picked = torch.tensor(index)
        batch["ref_chosen_logps"], batch["ref_rejected_logps"] = self.ref[picked, 0], self.ref[picked, 1]
        for key in ("chosen_score", "rejected_score", "chosen_gold", "rejected_gold"):
            batch[f"row/{key}"] = torch.tensor([self.pairs[i][key] for i in index], dtype=torch.float32)
        return batch

    def state_dict(self) -> dict:
        """As `RolloutBatches.state_dict`: under torchrun every rank's pairs, gathered once per round."""
        if self.ranks.enabled and self._gathered[0] != self.index:
            self._gathered = (self.index, self.ranks.gather_objects((list(self.pairs), self.ref)))
        return {"index": self.index, "draws": self.draws, "prompts": self.prompts.state_dict(), "pairs": list(self.pairs),
                "ref": self.ref, "order": list(self.order), "cursor": self.cursor, "log": self.log.state_dict(),
                "world_size": self.ranks.world_size, "rank_pairs": self._gathered[1] if self.ranks.enabled else None}

    def load_state_dict(self, state: dict) -> None:
        if "pairs" not in state:
            raise ChatforgeError("the checkpoint was not written by an online-DPO run; start a new run directory")
        self.index, self.draws, self.cursor = int(state["index"]), int(state["draws"]), int(state["cursor"])
        self.prompts.load_state_dict(state["prompts"])
        self.pairs, self.ref, self.order = list(state["pairs"]), state["ref"], list(state["order"])
        saved_world = int(state.get("world_size", 1))
        if saved_world > 1 and saved_world == self.ranks.world_size:
            pairs, self.ref = state["rank_pairs"][self.ranks.rank]
            self.pairs = list(pairs)
        elif saved_world != self.ranks.world_size:
            if self.pairs and self.cursor < len(self.order):
                raise ChatforgeError(
                    f"the checkpoint was written by {saved_world} process(es) in the middle of a round, each holding its "
                    f"share of the pairs; resume it with {saved_world} process(es) (or from a checkpoint at a round's end)"
                )
            self.pairs, self.ref, self.order, self.cursor = [], None, [], 0
        self.log.load_state_dict(state["log"])

    # ---- a round ---------------------------------------------------------------------------------
    @staticmethod
    def _encoded(p: dict) -> EncodedPair:
        return EncodedPair(None, p["chosen_ids"], p["chosen_labels"], p["rejected_ids"], p["rejected_labels"])

    def _new_round(self) -> None:
        from chatforge.dpo.objective import reference_logps
        from chatforge.sampling.sampler import chat_prompt

        if self.model is None:
            raise ChatforgeError("OnlinePairBatches.attach(model) was not called before training")
        started = time.perf_counter()
        pairs, samples, scored = [], [], []
        # Each rank keeps the same number of whole steps of its own pairs (DDP needs every rank at every step):
        # draw until the rank with the fewest has a step's share, then keep that many whole steps everywhere.
        share = self.rows_per_step // self.ranks.world_size
        while (fewest := int(-self.ranks.max(-len(pairs)))) < share:
            if self.draws - self.index * MAX_DRAWS_PER_ROUND >= MAX_DRAWS_PER_ROUND:
                raise ChatforgeError(
                    f"online DPO round {self.index}: {MAX_DRAWS_PER_ROUND} draws of prompts gave only {len(pairs)} pairs "
                    f"(a step needs {self.rows_per_step}); the scorer rates the samples alike: lower min_margin or raise the temperature"
                )
            picked = self.ranks.share(self.prompts.take(self.cfg.rollout.prompts_per_rollout))
            n = self.cfg.rollout.samples_per_prompt
            seed = (self.cfg.rollout.sampling.seed or 0) + self.draws + self.ranks.rank * RANK_SEED_STRIDE
            sampling = self.cfg.rollout.sampling.model_copy(update={"n": n, "seed": seed})
            prompt_ids = [chat_prompt(self.tokenizer, self.records[i]["prompt"]) for i in picked]
            out = self.rollout_sampler.sampler(self.model).generate(prompt_ids, sampling)  # vllm: current weights
            self.draws += 1
            recs = [self.records[i] for i, group in zip(picked, out) for _ in group]
            texts = [c.text for group in out for c in group]
            proxy = self.scorer.score(recs, texts)
            gold = self.gold.score(recs, texts) if self.gold else [float("nan")] * len(texts)
            scored += list(zip(proxy, gold, (len(c.token_ids) for group in out for c in group)))
            for g, (i, group) in enumerate(zip(picked, out)):
                scores = proxy[g * n : (g + 1) * n]
                best = max(range(n), key=lambda k: scores[k])
                worst = min(range(n), key=lambda k: scores[k])
                if scores[best] - scores[worst] < self.cfg.min_margin - 1e-9:
                    continue
                chosen, rejected = group[best].token_ids, group[worst].token_ids
                prompt = prompt_ids[g]
                pairs.append({
                    "chosen_ids": prompt + list(chosen), "chosen_labels": [IGNORE_INDEX] * len(prompt) + list(chosen),
                    "rejected_ids": prompt + list(rejected), "rejected_labels": [IGNORE_INDEX] * len(prompt) + list(rejected),
                    "chosen_score": scores[best], "rejected_score": scores[worst],
                    "chosen_gold": gold[g * n + best], "rejected_gold": gold[g * n + worst],
                })
                samples.append({"prompt": self.records[i]["prompt"][-1]["content"], "chosen": group[best].text,
                                "rejected": group[worst].text, "chosen_score": scores[best], "rejected_score": scores[worst]})
        gen_seconds = time.perf_counter() - started
        pairs = pairs[: fewest // share * share]
        ref_model, context = self.reference_context()
        with context:
            chosen, rejected = reference_logps(ref_model, [self._encoded(p) for p in pairs], self.pad, self.cfg.rollout.forward_batch_size)
        self.pairs, self.ref = pairs, torch.stack([chosen, rejected], dim=1)
        proxy_all, gold_all, length_all = zip(*scored)
        # every rank's samples and pairs (one process: its own)
        count, proxy_sum, gold_sum, length_sum, pair_count = self.ranks.sum(
            [len(scored), sum(proxy_all), sum(gold_all), sum(length_all), len(pairs)])
        gen_seconds = self.ranks.max(gen_seconds)
        stats = {
            "rollout": self.index, "pairs": int(pair_count), "proxy": proxy_sum / count,
            "gold": gold_sum / count, "length": length_sum / count,
            "kl": float("nan"), "entropy": float("nan"), "beta": self.cfg.loss.beta,
            "gen_tokens_per_s": length_sum / max(gen_seconds, 1e-9), "gen_seconds": gen_seconds,
        }
        self.log.add(stats, samples)
        self.index += 1
        self.order = []
        for epoch in range(self.cfg.rollout.epochs):
            generator = torch.Generator().manual_seed((self.seed * 1_000_003 + self.index) * 101 + epoch)
            self.order += torch.randperm(len(pairs), generator=generator).tolist()
        self.cursor = 0


class OnlineDPOObjective:
    """The offline DPO objective on the round's pairs, plus the pairs' scores as step metrics."""

    def __init__(self, loss):
        from chatforge.dpo.objective import DPOObjective

        self.inner = DPOObjective(loss)

    def __call__(self, model, batch):
        rows = {k: batch.pop(k) for k in list(batch) if k.startswith("row/")}
        out = self.inner(model, batch)
        pairs = torch.tensor(float(batch["ref_chosen_logps"].numel()))
        for key, value in rows.items():
            out.ratios[key.replace("row/", "pairs/")] = (value.sum(), pairs)
        return out
