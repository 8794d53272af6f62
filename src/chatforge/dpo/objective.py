"""Sequence log-probs of answers in one forward pass, the reference log-probs, and the DPO objective.

`models.logprobs.sequence_logps(model, batch)` scores a `collate_pairs` batch (B chosen rows, then B
rejected rows, right padded): one forward over all 2B rows, the LM head applied only at the answer
positions where the head is separable, so the (2B, length, vocab) logits are never built. It returns
the summed answer log-prob and the answer token count of each row.

The reference's log-probs are either computed once before training (`reference_logps`, cached in
the run directory under a hash of the reference weights and the encoded pairs, so a rerun reuses
them) and ride along in the batches, or computed each step by a frozen reference model (`live`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import torch

from chatforge.dpo.data import EncodedPair, collate_pairs
from chatforge.engine.loop import StepOutput
from chatforge.losses.dpo import PreferenceLoss, preference_loss
from chatforge.models.logprobs import sequence_logps

CACHE_VERSION = 1


@torch.no_grad()
def reference_logps(
    model: torch.nn.Module, pairs: Sequence[EncodedPair], pad_id: int, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,) chosen and (N,) rejected summed answer log-probs of `pairs` under `model` (in order, on CPU)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    chosen, rejected = torch.zeros(len(pairs)), torch.zeros(len(pairs))
    # pairs of similar length batched together: less padding (the results go back to input order)
    order = sorted(range(len(pairs)), key=lambda i: max(len(pairs[i].chosen_ids), len(pairs[i].rejected_ids)))
    try:
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            batch = {k: v.to(device) for k, v in collate_pairs([pairs[i] for i in index], pad_id).items()}
            logps, _ = sequence_logps(model, batch)
            chosen[index] = logps[: len(index)].float().cpu()
            rejected[index] = logps[len(index) :].float().cpu()
    finally:
        model.train(was_training)
    return chosen, rejected


def cache_key(model: torch.nn.Module, *pair_sets: Sequence[EncodedPair]) -> str:
    """sha256 of the model's weights (names, dtypes, values) and the pairs' token ids and labels."""
    digest = hashlib.sha256(f"v{CACHE_VERSION}".encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    for pairs in pair_sets:
        digest.update(f"set:{len(pairs)}".encode())
        for p in pairs:
            for seq in (p.chosen_ids, p.chosen_labels, p.rejected_ids, p.rejected_labels):
                digest.update(torch.as_tensor(seq, dtype=torch.int64).numpy().tobytes())
                digest.update(b"|")
    return digest.hexdigest()


def cached_reference_logps(
    path: Path, model: torch.nn.Module, sets: dict[str, Sequence[EncodedPair]], pad_id: int, batch_size: int, write: bool = True
) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], bool]:
    """Reference log-probs of every set of `sets`, from `path` when its key matches, else computed
    (and written to `path` when `write`). Returns them and whether the cache was used."""
    key = cache_key(model, *sets.values())
    if path.exists():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved.get("key") == key and set(saved.get("sets", {})) == set(sets):
            return {name: (v["chosen"], v["rejected"]) for name, v in saved["sets"].items()}, True
    out = {name: reference_logps(model, pairs, pad_id, batch_size) for name, pairs in sets.items()}
    if write:
        tmp = path.with_suffix(".tmp")
        torch.save({"key": key, "sets": {n: {"chosen": c, "rejected": r} for n, (c, r) in out.items()}}, tmp)
        tmp.replace(path)
    return out, False


class DPOObjective:
    """`objective(model, batch) -> StepOutput(Σ per-pair loss, pairs)` with the DPO metrics.

    The reference log-probs come from the batch (`ref_chosen_logps`, precomputed), from `reference`
    (a frozen model run on the same batch, live), or are 0 (`loss.reference_free`).
    """

    def __init__(self, loss, reference: torch.nn.Module | None = None):
        self.loss, self.reference = loss, reference

    def __call__(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        logps, counts = sequence_logps(model, batch)
        pairs = logps.shape[0] // 2
        ref_c = ref_r = None
        if not self.loss.reference_free:
            if self.reference is not None:
                with torch.no_grad():
                    ref, _ = sequence_logps(self.reference, batch)
                ref_c, ref_r = ref[:pairs], ref[pairs:]
            else:
                ref_c, ref_r = batch["ref_chosen_logps"], batch["ref_rejected_logps"]
        out = pair_loss(
            self.loss, logps[:pairs], logps[pairs:], ref_c, ref_r, counts[:pairs], counts[pairs:], batch.get("label_smoothing")
        )
        sums = pair_metric_sums(out, logps[:pairs].detach(), logps[pairs:].detach())
        return StepOutput(out.losses.sum(), pairs, sums, tokens=int(batch["attention_mask"].sum()))


def pair_loss(loss, policy_c, policy_r, ref_c, ref_r, tokens_c, tokens_r, label_smoothing=None) -> PreferenceLoss:
    """`preference_loss` with the settings of a `DPOLossConfig`; `label_smoothing` (B,) overrides its ε per pair."""
    eps = loss.label_smoothing if label_smoothing is None else label_smoothing.to(policy_c)
    return preference_loss(
        policy_c, policy_r, ref_c, ref_r, loss_type=loss.loss, beta=loss.beta, label_smoothing=eps,
        reference_free=loss.reference_free, chosen_tokens=tokens_c, rejected_tokens=tokens_r,
        ipo_logps=loss.ipo_logps, sft_weight=loss.sft_weight, nll=loss.nll,
    )


def pair_metric_sums(out: PreferenceLoss, logps_c: torch.Tensor, logps_r: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-pair metrics summed over the pairs (the engine divides by the step's pair count)."""
    sums = {
        "rewards/chosen": out.chosen_rewards.sum(),
        "rewards/rejected": out.rejected_rewards.sum(),
        "rewards/accuracy": out.accuracies.sum(),
        "rewards/margin": out.margins.sum(),
        "logps/chosen": logps_c.sum(),
        "logps/rejected": logps_r.sum(),
    }
    if out.nll is not None:
        sums["nll/chosen"] = out.nll.sum()
    return sums
