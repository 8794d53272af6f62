"""Rollouts as the engine's Batches: sample, score, take old and reference log-probs, serve minibatches.

`RolloutBatches.next_batch()` is what the engine calls for every micro-batch. When the buffer of the
current rollout batch is used up it makes a new one from the policy being trained:

1. the next `prompts_per_rollout` prompts (a seeded order per pass over the prompt file);
2. `samples_per_prompt` samples of each from the sampler (seeded by the rollout's index, so a resumed
   run draws the same samples from the same weights), each group of one prompt's samples adjacent;
3. scores from the proxy scorer (and its components, and the gold scorer, logged only);
4. in inference mode: the old policy's per-token log-probs, entropies and (PPO) values, and the
   reference's log-probs (a frozen copy, or the LoRA policy with its adapters off); both skipped
   where they are not needed (below);
5. rewards and advantages by the objective (PPO: KL in the reward, GAE; GRPO: group-normalised;
   RLOO: leave-one-out), then the KL coefficient's update from the measured KL.

It then serves `epochs` passes over the rollout's rows, each in a seeded random order, as
micro-batches of `micro_batch_size` rows; `micro_batch_size × grad_accum_steps` rows make one
optimizer step (a PPO minibatch). The engine sums each micro-batch's token losses and divides by the
count of the whole step, so a minibatch's update does not depend on how it is split.

Skipped forwards (`rollout.old_logprobs`, `rl.config.old_logprobs_source`). On-policy
(`rl.config.skips_old_forward`: critic-free, `epochs` 1, the whole rollout batch one optimizer step,
no KL needed at rollout time, `rollout.old_logprobs=auto`) the old
policy is the policy of the update's own forward, so the buffer holds no `old_logp` and the objective
uses that forward's log-probs, detached: the ratio is exactly 1 (the old forward would give the same
numbers up to float noise). What the old forward also gave is then taken elsewhere: the rollout's KL to
the reference from the sampler's log-probs of the sampled tokens (the same quantity, T = 1 only), its
entropy as the sampled tokens' mean −log p (an unbiased estimate, only where the samples are draws
from the raw policy: T = 1, no filters, penalties, logit bias or JSON constraint), else NaN; the sampler check (`sampler_logp_gap`)
moves into each training step's metrics. Otherwise, where the sampler's recorded log-probs are the
old policy's (temperature 1, torch backend; `auto` also asks for float32 weights) they are `old_logp`
and no old-policy forward runs either (PPO still runs its critic for the values, `rollout_values`);
the KL in a reward, the adaptive β and the rollout's KL come from them, the entropy as above, and the
first step's `approx_kl_old` (0 up to float error) is the sampler check. Without a reference (`kl.coef` 0, no adaptive KL:
`rl.config.uses_reference`) no reference forward runs and the KL-to-reference numbers (`kl` of
rollouts.jsonl, `kl/sequence`, `kl/policy_ref_token`, `eval/kl`) are NaN or absent, not 0.

Under torchrun (`rl/ranks.py`) each rank samples a contiguous share of every rollout's prompts (the
same global draw on every rank; groups stay whole) and trains on its own rows; the reward moments, PPO's
whitening, the KL that adapts β and the logged statistics are the whole batch's.

Resume: `state_dict()` holds the prompt position, the rollout index, the buffer itself (tensors)
and the position in it, the KL coefficient, the reward normaliser's moments and the diagnostics
history; with the engine's model, optimizer and RNG state that makes a resumed run equal to an
uninterrupted one.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path

import torch

from chatforge.errors import ChatforgeError, DataError
from chatforge.losses.policy import kl_estimate
from chatforge.rl.config import (
    DiagnosticsConfig,
    KLConfig,
    PtxConfig,
    RewardConfig,
    RolloutConfig,
    old_logprobs_source,
    uses_reference,
)
from chatforge.rl.diagnostics import RolloutLog
from chatforge.rl.kl import KLController
from chatforge.rl.ranks import Ranks
from chatforge.rl.rollout_sampler import RolloutSampler, vllm_export_dir
from chatforge.scoring.combined import RunningMoments, whiten

# old_logp is absent on-policy, ref_logp without a reference, sampler_logp present only on-policy (and, with
# old_logprobs from the sampler, in the micro-batches of a rollout's first step)
PER_TOKEN = ("old_logp", "ref_logp", "sampler_logp", "old_values", "advantages", "returns", "action_mask")
PER_ROW = ("score", "gold", "kl", "length", "entropy")
# per-rollout numbers every step of the rollout reports (metrics.jsonl): rollout/<name>
RANK_SEED_STRIDE = 1 << 32  # rank r samples with the seed of rank 0 + r·2^32: independent draws, rank 0 unchanged
ROLLOUT_METRICS = ("beta", "gen_tokens_per_s", "explained_variance", "groups_without_signal", "sampler_logp_gap")


class PromptStream:
    """Prompts in a seeded random order, reshuffled on every pass; the position is two numbers."""

    def __init__(self, count: int, seed: int):
        if count == 0:
            raise DataError("no training prompts")
        self.count, self.seed = count, seed
        self.epoch, self.position = 0, 0

    def _order(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.count, generator=generator).tolist()

    def take(self, n: int) -> list[int]:
        out: list[int] = []
        while len(out) < n:
            order = self._order()
            need = n - len(out)
            out += order[self.position : self.position + need]
            self.position += need
            if self.position >= self.count:
                self.epoch, self.position = self.epoch + 1, 0
        return out

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


class RolloutBatches:
    """The engine's Batches for online RL (module docstring). `attach(model)` before training."""

    def __init__(
        self,
        records: list[dict],
        tokenizer,
        objective,
        rollout: RolloutConfig,
        reward: RewardConfig,
        kl: KLConfig,
        diagnostics: DiagnosticsConfig,
        micro_batch_size: int,
        out_dir: Path,
        seed: int = 0,
        reference: torch.nn.Module | None = None,
        ptx: PtxConfig | None = None,
        ptx_stream=None,
        rows_per_step: int | None = None,
        say: Callable[..., None] = print,
        write: bool = True,
        ranks: Ranks = Ranks(),
    ):
        from chatforge.scoring import build_scorer

        self.records, self.tokenizer, self.objective = records, tokenizer, objective
        self.rollout, self.reward_cfg, self.kl_cfg = rollout, reward, kl
        self.micro_batch_size, self.seed, self.reference = micro_batch_size, seed, reference
        self.ranks = ranks  # under torchrun: this rank's share of each rollout (rl/ranks.py)
        ranks.check_prompts(rollout.prompts_per_rollout)
        self.rows_per_step = rows_per_step or micro_batch_size  # this rank's rows of one optimizer step
        self.scorer = build_scorer(reward.scorer)
        self.gold = build_scorer(reward.gold) if reward.gold is not None else None
        self.prompts = PromptStream(len(records), seed)
        self.kl = KLController(kl.coef, kl.adaptive)
        self.moments = RunningMoments()
        self.ptx, self.ptx_stream = ptx, ptx_stream
        self.log = RolloutLog(out_dir, diagnostics, say, write)
        self.rollout_sampler = RolloutSampler(tokenizer, rollout.sampling.backend, vllm_export_dir(out_dir, ranks))
        self.say = say
        self.model: torch.nn.Module | None = None
        self.index = 0  # rollout batches made so far
        self.buffer: dict[str, torch.Tensor] | None = None
        self.order: list[int] = []
        self.cursor = 0
        self.stats: dict[str, float] = {}
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self._prompt_ids = {}
        self._gathered: tuple[int, list | None] = (-1, None)  # (rollout index, every rank's buffer) for state_dict
        self.uses_reference = uses_reference(kl)
        # PPO's objective needs the rollout forward for its critic's values: it says so
        self.critic_free = not getattr(objective, "rollout_needs_policy_forward", True)
        # decided again in attach(), when the weights' dtype is known
        self.old_logp_source = old_logprobs_source(rollout, kl, self.rows_per_step * ranks.world_size, self.critic_free)
        if not self.uses_reference:
            say("kl.coef=0 and no adaptive KL: no reference model is kept or run; the KL to the reference "
                "(kl/sequence, kl/policy_ref_token, eval/kl) is not measured")

    # ---- the engine's protocol -----------------------------------------------------------------
    def attach(self, model: torch.nn.Module) -> None:
        """The model the engine trains (unwrapped: an `ActorCritic`, a causal LM or its peft wrapper)."""
        self.model = model
        dtype = next(self.generator_model().parameters()).dtype
        self.old_logp_source = old_logprobs_source(self.rollout, self.kl_cfg, self.rows_per_step * self.ranks.world_size,
                                                   self.critic_free, dtype)
        if self.old_logp_source == "sampler" and dtype != torch.float32:  # asked for by name (auto would not)
            self.say(f"rollout.old_logprobs=sampler with {dtype} weights: the sampler's log-probs agree with a forward's "
                     "only to that precision")
        self.say({
            "training": "on-policy rollouts (1 epoch, one optimizer step per rollout batch): no old-policy forward, the old "
                        "log-probs are the training forward's, detached (rollout.old_logprobs=recompute runs it)",
            "sampler": "old log-probs from the sampler (recorded while decoding, temperature 1): no old-policy forward"
                       f"{' (the critic still runs for its values)' if not self.critic_free else ''} "
                       "(rollout.old_logprobs=recompute runs it)",
            "recompute": "old log-probs from a forward of the policy over each rollout batch",
        }[self.old_logp_source])

    @property
    def on_policy(self) -> bool:
        """No old log-probs in the buffer: the update's own forward, detached, stands for them."""
        return self.old_logp_source == "training"

    def next_batch(self) -> dict[str, torch.Tensor]:
        if self.buffer is None or self.cursor >= len(self.order):
            self._new_rollout()
        rows = self.order[self.cursor : self.cursor + self.micro_batch_size]
        step_start = (self.cursor // self.rows_per_step) * self.rows_per_step
        step_rows = self.order[step_start : step_start + self.rows_per_step]
        self.cursor += self.micro_batch_size
        out = self._micro_batch(rows, step_rows)
        if self.old_logp_source == "sampler" and step_start == 0:
            # the rollout's first step runs the weights that sampled it: its ratio to the sampler's log-probs is
            # the sampler check (a gap: stale decoder weights); later steps' would measure the updates
            out["sampler_logp"] = out["old_logp"]
        return out

    def state_dict(self) -> dict:
        """Everything a resume needs. Under torchrun the buffer is each rank's own: every rank's, gathered
        once per rollout (the engine asks every rank for this at the same points, so the gather lines up),
        go into the checkpoint rank 0 writes; the rest is the same on every rank."""
        buffer = dict(self.buffer) if self.buffer is not None else None
        if self.ranks.enabled and self._gathered[0] != self.index:
            self._gathered = (self.index, self.ranks.gather_objects(buffer))
        return {
            "index": self.index, "prompts": self.prompts.state_dict(), "cursor": self.cursor, "world_size": self.ranks.world_size,
            "order": list(self.order), "buffer": buffer, "rank_buffers": self._gathered[1] if self.ranks.enabled else None,
            "stats": dict(self.stats), "kl": self.kl.state_dict(), "moments": self.moments.state_dict(), "log": self.log.state_dict(),
            "scorer": self.scorer.state_dict() if hasattr(self.scorer, "state_dict") else None,
            "ptx": self.ptx_stream.state_dict() if self.ptx_stream is not None else None,
        }

    def load_state_dict(self, state: dict) -> None:
        if "buffer" not in state:
            raise DataError("the checkpoint was not written by an online-RL run; start a new run directory")
        self.index, self.cursor, self.order = int(state["index"]), int(state["cursor"]), list(state["order"])
        self.prompts.load_state_dict(state["prompts"])
        saved_world = int(state.get("world_size", 1))
        buffer = state["rank_buffers"][self.ranks.rank] if saved_world > 1 and saved_world == self.ranks.world_size else state["buffer"]
        if saved_world != self.ranks.world_size:
            if state["buffer"] is not None and self.cursor < len(self.order):
                raise DataError(
                    f"the checkpoint was written by {saved_world} process(es) in the middle of a rollout batch, each holding "
                    f"its share; resume it with {saved_world} process(es) (or from a checkpoint at a rollout's end)"
                )
            buffer, self.order, self.cursor = None, [], 0  # the rollout was used up: the next step makes a new one
        self.buffer = dict(buffer) if buffer is not None else None
        self.stats = dict(state["stats"])
        self.kl.load_state_dict(state["kl"])
        m = state["moments"]
        self.moments = RunningMoments(int(m["count"]), float(m["mean"]), float(m["m2"]))
        self.log.load_state_dict(state["log"])
        if state.get("scorer") is not None and hasattr(self.scorer, "load_state_dict"):
            self.scorer.load_state_dict(state["scorer"])
        if state.get("ptx") is not None and self.ptx_stream is not None:
            self.ptx_stream.load_state_dict(state["ptx"])

    # ---- models ------------------------------------------------------------------------------
    def generator_model(self) -> torch.nn.Module:
        return getattr(self.model, "policy", self.model)

    def reference_context(self):
        """(module, context) whose forward gives the reference's log-probs."""
        if not self.uses_reference:
            raise ChatforgeError("this run has no reference model (kl.coef=0, no adaptive KL)")
        if self.reference is not None:
            return self.reference, contextlib.nullcontext()
        policy = self.generator_model()
        if hasattr(policy, "disable_adapter"):
            return policy, policy.disable_adapter()  # LoRA: the frozen base is the reference
        raise ChatforgeError("no reference model: give a frozen copy, or train with LoRA (adapters off = reference)")

    # ---- making a rollout --------------------------------------------------------------------
    def _new_rollout(self) -> None:
        from chatforge.sampling.sampler import chat_prompt

        if self.model is None:
            raise ChatforgeError("RolloutBatches.attach(model) was not called before training")
        started = time.perf_counter()
        # every rank draws the same prompts and samples its slice of them
        picked = self.ranks.share(self.prompts.take(self.rollout.prompts_per_rollout))
        prompt_ids = [self._prompt(i, chat_prompt) for i in picked]
        n = self.rollout.samples_per_prompt
        seed = (self.rollout.sampling.seed or 0) + self.index + self.ranks.rank * RANK_SEED_STRIDE
        sampling = self.rollout.sampling.model_copy(update={"n": n, "seed": seed})
        # torch: a new sampler per rollout batch, whose fast decoder packs the weights as they are now (its own
        # change check, parameter `_version`, misses fused AdamW). vllm: the engine reloads changed weights
        completions = self.rollout_sampler.sampler(self.generator_model()).generate(prompt_ids, sampling)
        gen_seconds = time.perf_counter() - started
        rows = [(p, c) for p, group in zip(picked, completions) for c in group]
        prompt_records = [self.records[p] for p, _ in rows]
        texts = [c.text for _, c in rows]
        raw = torch.tensor(self.scorer.score(prompt_records, texts), dtype=torch.float32)
        gold = torch.tensor(self.gold.score(prompt_records, texts), dtype=torch.float32) if self.gold else torch.full_like(raw, float("nan"))
        components = self._components(prompt_records, texts)

        ids = [prompt_ids[picked.index(p)] + list(c.token_ids) for p, c in rows]
        width = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), width), self.pad, dtype=torch.long)
        attention_mask = torch.zeros((len(ids), width), dtype=torch.long)
        action_mask = torch.zeros((len(ids), width - 1), dtype=torch.float32)
        sampler_logp = torch.zeros_like(action_mask)
        for r, ((p, c), seq) in enumerate(zip(rows, ids)):
            input_ids[r, : len(seq)] = torch.tensor(seq)
            attention_mask[r, : len(seq)] = 1
            start = len(prompt_ids[picked.index(p)])
            action_mask[r, start - 1 : len(seq) - 1] = 1.0  # position t predicts token t + 1
            sampler_logp[r, start - 1 : len(seq) - 1] = torch.tensor(c.logprobs)
        old_logp, entropy, values, ref_logp = self._score_tokens(input_ids, attention_mask, action_mask)
        tokens = action_mask.sum().clamp(min=1)
        temperature = self.rollout.sampling.temperature or 1.0
        if self.old_logp_source == "sampler":  # no forward to check the sampler against: the first step's ratio is the check
            old_logp, sampler_gap, policy_logp = sampler_logp, float("nan"), sampler_logp
            entropy = -sampler_logp * action_mask if _draws_from_policy(self.rollout.sampling) else None
        elif old_logp is not None:
            # The sampler's raw log-probs against the training forward's: a gap means the samples did not come
            # from the weights being trained (stale decoder weights, another backend, another precision).
            sampler_gap = float(((sampler_logp - old_logp).abs() * action_mask).sum() / tokens)
            policy_logp = old_logp
        else:  # on-policy: the training step measures the gap; KL and entropy from the sampler (module docstring)
            sampler_gap = float("nan")
            policy_logp = sampler_logp if temperature == 1.0 else None
            entropy = -sampler_logp * action_mask if _draws_from_policy(self.rollout.sampling) else None
        kl_tokens = None
        if policy_logp is not None and ref_logp is not None:
            kl_tokens = kl_estimate(policy_logp, ref_logp, self.kl_cfg.estimator) * action_mask
        # Only the old policy's KL (its forward's or the sampler's log-probs) may enter a reward; without it β·KL
        # is 0 in the reward (no reference, or an on-policy rollout, whose conditions exclude a KL in the reward)
        reward_kl = kl_tokens if kl_tokens is not None and old_logp is not None else torch.zeros_like(action_mask)
        score = self._normalize(raw)
        beta = self.kl.value
        advantages, returns, extra = self.objective.advantages(score, reward_kl, values, action_mask, beta, self.ranks)
        lengths = action_mask.sum(dim=1)
        nan_rows = torch.full_like(raw, float("nan"))
        kl_seq = kl_tokens.sum(dim=1) if kl_tokens is not None else nan_rows
        mean_entropy = float((entropy * action_mask).sum() / tokens) if entropy is not None else float("nan")
        self.buffer = {
            "input_ids": input_ids, "attention_mask": attention_mask, "action_mask": action_mask,
            "old_values": values if values is not None else torch.zeros_like(action_mask),
            "advantages": advantages, "returns": returns, "score": raw, "gold": gold, "length": lengths,
        }
        # absent, not NaN, in the micro-batches: a step metric of a quantity not measured is left out
        if old_logp is not None:
            self.buffer["old_logp"] = old_logp
        else:
            self.buffer["sampler_logp"] = sampler_logp
        if ref_logp is not None:
            self.buffer["ref_logp"] = ref_logp
        if kl_tokens is not None:
            self.buffer["kl"] = kl_seq
        if entropy is not None:
            self.buffer["entropy"] = (entropy * action_mask).sum(1) / lengths.clamp(min=1)
        for name, value in components.items():
            self.buffer[f"component/{name}"] = value
        self._check_finite()
        # the whole rollout's statistics (every rank's rows; one process: its own), so β and the log agree on every rank
        mask_tokens = float(action_mask.sum())
        sums = self.ranks.sum([
            len(rows), float(raw.sum()), float(gold.sum()), float(kl_seq.sum()), float(lengths.sum()), mask_tokens,
            mean_entropy * mask_tokens, sampler_gap * mask_tokens, *(float(v) for v in extra.values()),
            *(float(v.sum()) for v in components.values()),
        ])
        rows_all, raw_sum, gold_sum, kl_sum, length_sum, tokens_all, entropy_sum, gap_sum = sums[:8]
        extra = dict(zip(extra, (v / self.ranks.world_size for v in sums[8 : 8 + len(extra)])))  # means over ranks
        component_sums = dict(zip(components, sums[8 + len(extra) :]))
        gen_seconds = self.ranks.max(gen_seconds)
        stats = {
            "rollout": self.index, "beta": beta, "proxy": raw_sum / rows_all, "gold": gold_sum / rows_all,
            "kl": kl_sum / rows_all, "entropy": entropy_sum / max(tokens_all, 1.0), "length": length_sum / rows_all,
            "gen_tokens_per_s": length_sum / max(gen_seconds, 1e-9), "gen_seconds": gen_seconds,
            "sampler_logp_gap": gap_sum / max(tokens_all, 1.0) if temperature == 1.0 else float("nan"),
            **extra, **{f"component/{k}": v / rows_all for k, v in component_sums.items()},
        }
        self.stats = {k: v for k, v in stats.items() if k in ROLLOUT_METRICS}
        self.kl.update(stats["kl"], int(rows_all))
        samples = [
            {"prompt": self.records[p]["prompt"][-1]["content"], "response": c.text, "proxy": float(raw[i]), "gold": float(gold[i]),
             "kl": float(kl_seq[i]), **{k: float(v[i]) for k, v in components.items()}}
            for i, (p, c) in enumerate(rows)
        ]
        self.log.add(stats, samples)
        self.index += 1
        self.order = self._epoch_orders(len(rows))
        self.cursor = 0

    def _prompt(self, index: int, chat_prompt) -> list[int]:
        if index not in self._prompt_ids:
            self._prompt_ids[index] = chat_prompt(self.tokenizer, self.records[index]["prompt"])
        return self._prompt_ids[index]

    def _components(self, prompts: list[dict], texts: list[str]) -> dict[str, torch.Tensor]:
        """Each part of a combined scorer, logged on its own (helpfulness, safety, ...)."""
        parts = getattr(self.scorer, "components", None)
        if not isinstance(parts, dict):
            return {}
        return {name: torch.tensor(s.score(prompts, texts), dtype=torch.float32) for name, s in parts.items()}

    @torch.inference_mode()
    def _score_tokens(self, input_ids, attention_mask, action_mask):
        """Old policy log-probs, entropies, values (PPO) and reference log-probs, in chunks; None for
        each part not taken (the old policy's unless recomputed, the reference's without one; PPO's
        values alone when the old log-probs are the sampler's)."""
        recompute = self.old_logp_source == "recompute"
        values_only = self.old_logp_source == "sampler" and not self.critic_free
        if not (recompute or values_only or self.uses_reference):
            return None, None, None, None
        model = self.model
        was_training = model.training
        model.eval()
        chunks: dict[str, list[torch.Tensor]] = {"logp": [], "entropy": [], "values": [], "ref": []}
        device = next(model.parameters()).device
        size = self.rollout.forward_batch_size
        temperature = self.rollout.sampling.temperature or 1.0
        try:
            for start in range(0, len(input_ids), size):
                part = slice(start, start + size)
                ids, mask, act = input_ids[part].to(device), attention_mask[part].to(device), action_mask[part].to(device)
                if values_only:
                    chunks["values"].append(self.objective.rollout_values(model, ids, mask, act).float().cpu())
                elif recompute:
                    logp, entropy, values = self.objective.forward(model, ids, mask, act, temperature)
                    chunks["logp"].append(logp.float().cpu())
                    chunks["entropy"].append(entropy.float().cpu())
                    if values is not None:
                        chunks["values"].append(values.float().cpu())
                if self.uses_reference:
                    ref_model, context = self.reference_context()
                    with context:
                        ref_logp, _, _ = self.objective.reference_forward(ref_model, ids, mask, act, temperature)
                    chunks["ref"].append(ref_logp.float().cpu())
        finally:
            model.train(was_training)
        out = [torch.cat(chunks[k]) if chunks[k] else None for k in ("logp", "entropy", "values", "ref")]
        return tuple(out)

    def _normalize(self, raw: torch.Tensor) -> torch.Tensor:
        """Whitened (and clipped) scores; the moments are the whole rollout's, every rank's scores in rank order
        (one process's order), so every rank keeps the same running moments."""
        cfg = self.reward_cfg
        values = raw.tolist()
        if cfg.normalize != "none":
            every = self.ranks.gather(raw).tolist()
            moments = self.moments if cfg.normalize == "running" else RunningMoments()
            moments.update(every)
            values = whiten(values, moments.mean, moments.var)
        out = torch.tensor(values, dtype=torch.float32)
        return out.clamp(-cfg.clip, cfg.clip) if cfg.clip is not None else out

    def _epoch_orders(self, rows: int) -> list[int]:
        order: list[int] = []
        for epoch in range(self.rollout.epochs):
            generator = torch.Generator().manual_seed((self.seed * 1_000_003 + self.index) * 101 + epoch)
            order += torch.randperm(rows, generator=generator).tolist()
        return order

    def _check_finite(self) -> None:
        """Stop on a NaN/Inf anywhere in the rollout; every rank stops together (one alone would leave the
        others waiting in a collective)."""
        keys = ("old_logp", "ref_logp", "sampler_logp", "old_values", "advantages", "returns", "score")
        bad = next((k for k in keys if k in self.buffer and not torch.isfinite(self.buffer[k]).all()), None)
        if self.ranks.sum([bad is not None])[0] == 0:
            return
        where = (f"{bad} has NaN/Inf values (scores {self.buffer['score'].tolist()[:8]}...)" if bad is not None
                 else "another process's rollout has NaN/Inf values")
        raise ChatforgeError(
            f"rollout {self.index}: {where}; stopping before a broken update. Check the scorer, lower the learning rate "
            "or raise kl.coef"
        )

    # ---- serving micro-batches ---------------------------------------------------------------
    def _micro_batch(self, rows: list[int], step_rows: list[int]) -> dict[str, torch.Tensor]:
        index = torch.tensor(rows)
        width = int(self.buffer["attention_mask"][index].sum(dim=1).max())
        out = {"input_ids": self.buffer["input_ids"][index, :width], "attention_mask": self.buffer["attention_mask"][index, :width]}
        for key in PER_TOKEN:
            if key in self.buffer:
                out[key] = self.buffer[key][index, : width - 1]
        for key, value in self.buffer.items():
            if key in PER_ROW or key.startswith("component/"):
                out[f"row/{key}"] = value[index]
        for key, value in self.stats.items():
            out[f"rollout/{key}"] = torch.tensor(float(value))
        # Dr. GRPO's constant normaliser and the ptx weight need the whole step's numbers
        out["max_new_tokens"] = torch.tensor(float(self.rollout.sampling.max_new_tokens))
        if self.ptx_stream is not None:
            window = self.ptx_stream.next_batch()
            out["ptx_input_ids"], out["ptx_labels"] = window["input_ids"], window["labels"]
            # the whole step's RL tokens (every rank's) and pretraining tokens (concat windows: every label counts)
            (step_tokens,) = self.ranks.sum([float(self.buffer["action_mask"][torch.tensor(step_rows)].sum())])
            ptx_tokens = float(self.ptx.rows_per_step * self.ptx.seq_len)
            # the engine divides every sum by the step's RL token count; this makes the ptx part γ × its own mean
            out["ptx_scale"] = torch.tensor(self.ptx.coef * step_tokens / max(ptx_tokens, 1.0))
        return out


def _draws_from_policy(sampling) -> bool:
    """Whether samples are draws from the policy's raw distribution, so that the mean −log p of the
    sampled tokens estimates its entropy: temperature 1 and no filter, penalty, logit bias or constraint."""
    return (
        sampling.temperature == 1.0 and sampling.top_k == 0 and sampling.top_p == 1.0 and sampling.min_p == 0.0
        and sampling.presence_penalty == 0.0 and sampling.frequency_penalty == 0.0 and sampling.repetition_penalty == 1.0
        and not sampling.logit_bias and sampling.response_format == "text"
    )
