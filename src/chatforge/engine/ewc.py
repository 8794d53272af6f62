"""Elastic weight consolidation for the training stages: the old task's Fisher, stored with the run,
and an objective wrapper that adds the penalty (`chatforge.losses.ewc`) exactly once per step.

    ewc: {weight: 100, sources: [{path: world_a_train.jsonl}], samples: 64}

At the start of a run the stage's starting weights θ* and the diagonal empirical Fisher F of the
old task's data at θ* are measured and written to `OUT/ewc.safetensors` (beside `checkpoints/`).
A resumed run reads that file back instead of measuring again, so its anchor and Fisher are the
ones the run started with. `ewc.fisher: PATH` reuses a file written by another run (the same
starting model).

The Fisher: `samples` rows of `seq_len` tokens drawn from `sources` (text, or chat records rendered
with the chat template and every token supervised, as in pretraining), one backward per row of that
row's mean token NLL; F is the mean over rows of the squared gradient. ("Empirical": the labels are
the data's, not samples from the model.)

Once per step however the step is split. The engine sums every micro-batch's `loss_sum` over
micro-batches and ranks and divides by the global `count`. The wrapper adds `penalty × count` to
each micro-batch's sum, so the step's total is `penalty × global count` and the engine's division
leaves exactly one `penalty` (and one gradient of it), for any micro-batch size, accumulation or
number of ranks (DDP; the weights, hence the penalty, are the same on every rank). The logged
`loss` therefore includes the penalty; `ewc_penalty` is logged beside it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic import Field, model_validator

from chatforge.config.base import StrictModel
from chatforge.data.corpus import SourceConfig
from chatforge.engine.loop import Objective, StepOutput
from chatforge.errors import ConfigError
from chatforge.losses.ewc import ewc_penalty

FILE_NAME = "ewc.safetensors"


class EWCConfig(StrictModel):
    weight: float = Field(gt=0, description="λ: the penalty is λ/2 · Σ F (θ − θ*)², added to the mean loss of every step")
    sources: list[SourceConfig] = Field(
        default_factory=list, description="the old task's data, on which the Fisher is measured (text or chat records)"
    )
    samples: int = Field(64, ge=1, description="rows of seq_len tokens the Fisher averages over")
    fisher: str | None = Field(None, description="an ewc.safetensors of an earlier run (same starting model): no new measurement")
    cache_dir: str = Field("runs/.cache/tokens", description="token caches of the sources (shared with chatforge pretrain)")

    @model_validator(mode="after")
    def _data_or_file(self) -> EWCConfig:
        if not self.sources and self.fisher is None:
            raise ValueError("ewc needs the old task's data (ewc.sources) or a stored Fisher (ewc.fisher)")
        return self


def diagonal_fisher(model: torch.nn.Module, rows, samples: int) -> dict[str, torch.Tensor]:
    """Mean over `samples` rows of (∇ mean token NLL of the row)², per trainable parameter, float32.

    `rows` yields batches of one row (input_ids, labels, optionally position_ids / attention_mask).
    """
    from chatforge.losses.lm import token_nll_sum
    from chatforge.models.logprobs import lm_forward

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    fisher = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in named}
    was_training = model.training
    model.eval()  # no dropout: the Fisher of the model itself
    device = named[0][1].device
    used = 0
    try:
        for batch in rows:
            if used == samples:
                break
            batch = {k: v.to(device) for k, v in batch.items()}
            loss_sum, count = token_nll_sum(lm_forward(model, batch), batch["labels"])
            if int(count) == 0:
                continue
            grads = torch.autograd.grad(loss_sum / count, [p for _, p in named], allow_unused=True)
            for (name, _), grad in zip(named, grads):
                if grad is not None:
                    fisher[name] += grad.float() ** 2
            used += 1
    finally:
        model.train(was_training)
    if used == 0:
        raise ConfigError("ewc.sources gave no row with a supervised token: the Fisher cannot be measured")
    return {n: f / used for n, f in fisher.items()}


def save_ewc(path: Path, anchors: dict[str, torch.Tensor], fishers: dict[str, torch.Tensor], rows: int) -> None:
    from safetensors.torch import save_file

    tensors = {f"anchor.{n}": t.detach().cpu().contiguous() for n, t in anchors.items()}
    tensors |= {f"fisher.{n}": t.detach().cpu().contiguous() for n, t in fishers.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    save_file(tensors, str(partial), metadata={"rows": str(rows)})
    partial.replace(path)  # never a half-written Fisher for a resumed run to read


def load_ewc(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    if not path.is_file():
        raise ConfigError(f"ewc.fisher: {path} does not exist")
    tensors = load_file(str(path))
    anchors = {k.removeprefix("anchor."): v for k, v in tensors.items() if k.startswith("anchor.")}
    fishers = {k.removeprefix("fisher."): v for k, v in tensors.items() if k.startswith("fisher.")}
    return anchors, fishers


class EWCObjective:
    """`objective` plus λ/2 · Σ F (θ − θ*)², counted once per optimizer step (module docstring)."""

    def __init__(self, objective: Objective, model: torch.nn.Module, anchors: dict, fishers: dict, weight: float):
        named = dict(model.named_parameters())
        missing = sorted(set(fishers) - set(named))
        if missing:
            raise ConfigError(f"ewc: the stored Fisher names parameters this model lacks (first: {missing[0]})")
        self.objective, self.weight = objective, weight
        # Parameters are held by identity: moving the model to a device, wrapping it in DDP or
        # loading a checkpoint into it keeps the same Parameter objects.
        self.entries = [(named[n], anchors[n], fishers[n]) for n in fishers]
        self._placed = False

    def penalty(self) -> torch.Tensor:
        if not self._placed:  # the engine moves the model after the stage built this wrapper
            self.entries = [(p, a.to(p.device), f.to(p.device)) for p, a, f in self.entries]
            self._placed = True
        live = [(p, a, f) for p, a, f in self.entries if p.requires_grad]  # frozen weights cannot move
        return ewc_penalty([p for p, _, _ in live], [a for _, a, _ in live], [f for _, _, f in live], self.weight)

    def __call__(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        out = self.objective(model, batch)
        count = torch.as_tensor(out.count, device=out.loss_sum.device).to(torch.float32)
        penalty = self.penalty()
        out.loss_sum = out.loss_sum + penalty * count
        out.sums = {**out.sums, "ewc_penalty": penalty.detach() * count}
        return out


def with_ewc(cfg: EWCConfig | None, objective: Objective, model: torch.nn.Module, tokenizer, ctx, seq_len: int) -> Objective:
    """The stage's objective, wrapped with the EWC penalty when `cfg` is set (else unchanged).

    Called from a stage's `prepare` with the starting model: reads `OUT/ewc.safetensors` when the run
    is resumed, else `cfg.fisher`, else measures the Fisher on `cfg.sources`, and writes the file."""
    if cfg is None:
        return objective
    mode = getattr(ctx.cfg, "mode", None)
    if mode in ("lora", "full_then_lora"):
        raise ConfigError(f"ewc with mode={mode} is not supported: the penalty anchors the full weights; use mode=full or freeze")
    if ctx.info.enabled and ctx.cfg.train.distributed == "fsdp2":
        raise ConfigError("ewc with train.distributed=fsdp2 is not supported (the Fisher would see shards); use ddp")
    path = ctx.run_dir.root / FILE_NAME
    if path.is_file() and ctx.cfg.train.resume != "never":
        anchors, fishers = load_ewc(path)
        ctx.say(f"ewc: anchor and Fisher read from {path} (resumed run)")
    elif cfg.fisher is not None:
        anchors, fishers = load_ewc(Path(cfg.fisher))
        ctx.say(f"ewc: anchor and Fisher read from {cfg.fisher}")
        if ctx.is_main:
            save_ewc(path, anchors, fishers, rows=0)
    else:
        rows = _old_task_rows(cfg, tokenizer, ctx, seq_len)
        fishers = diagonal_fisher(model, rows, cfg.samples)
        anchors = {n: p.detach().clone() for n, p in model.named_parameters() if n in fishers}
        if ctx.is_main:
            save_ewc(path, anchors, fishers, rows=cfg.samples)
        total = sum(float(f.sum()) for f in fishers.values())
        ctx.say(f"ewc: Fisher of {cfg.samples} rows of the old task measured (trace {total:.4g}), λ={cfg.weight} -> {path}")
    return EWCObjective(objective, model, anchors, fishers, cfg.weight)


def _old_task_rows(cfg: EWCConfig, tokenizer, ctx, seq_len: int):
    """Rows of one window of `seq_len` tokens from `cfg.sources`, in the mixture's seeded order."""
    from chatforge.data.lm_data import DataConfig, prepare_lm_data

    data_cfg = DataConfig(sources=cfg.sources, seq_len=seq_len, val_fraction=0.0, cache_dir=cfg.cache_dir)
    seed = ctx.cfg.train.seed
    data = prepare_lm_data(data_cfg, tokenizer, ctx.rejects, seed, cfg.samples, {}, ctx.say)
    stream = data.stream(1, 1, seed)
    while True:
        yield stream.next_batch()
