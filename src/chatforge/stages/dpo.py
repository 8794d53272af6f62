"""Direct preference optimisation (the DPO family) of a chat model on preference pairs.

Reads pairs (task world or TRL/UltraFeedback layout; `chatforge.dpo.data`), scores chosen and rejected
answers in one forward pass, and trains with the engine on a loss of `chatforge.losses.dpo` (sigmoid,
conservative, hinge, IPO, reference-free, + λ·NLL). The reference log-probs are computed once before
training and cached in OUT/reference_logps.pt (`reference_mode=precomputed`), or by a frozen reference
model every step (`live`). Held-out pairs give preference accuracy and margins; `eval_generation`
scores greedy answers with the task world's gold reward, base vs DPO. Unusable pairs go to
`rejected.jsonl`.

    chatforge dpo model=runs/sft/final data.train='[{path: world/preferences/pairs_train.jsonl}]'
    chatforge dpo examples/dpo/world_dpo.yaml loss.loss=ipo loss.beta=0.5
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
from pydantic import Field

from chatforge.config.base import StrictModel
from chatforge.dpo.config import DPOLossConfig
from chatforge.dpo.data import PairSourceConfig, PairTruncation
from chatforge.dpo.evaluate import GenerationEval
from chatforge.dynamics.config import DynamicsConfig
from chatforge.engine.config import OptimConfig, TrainConfig
from chatforge.engine.loop import Engine
from chatforge.engine.schedules import ScheduleConfig
from chatforge.errors import ConfigError
from chatforge.run_dir import RejectLog, RunDir
from chatforge.sft.masking import MaskSource
from chatforge.sft.modes import LoraSettings


class DPODataConfig(StrictModel):
    train: list[PairSourceConfig] = Field(default_factory=list, description="training preference pairs")
    eval: list[PairSourceConfig] = Field(
        default_factory=list, description="held-out pairs: preference accuracy and margins (and eval_generation's prompts)"
    )
    max_length: int = Field(512, ge=8, description="tokens per conversation (prompt + one answer) at most")
    truncation: PairTruncation = Field("drop", description="a longer pair: drop rejects it, left cuts the prompt's start")
    mask_source: MaskSource = Field("auto", description="where the answer is: auto, prefixes or markers (sft.masking)")
    group_by_length: bool = Field(True, description="batch training pairs of similar length together (less padding)")


def _default_schedule():
    from pydantic import TypeAdapter

    return TypeAdapter(ScheduleConfig).validate_python({"kind": "cosine", "warmup_ratio": 0.1})


class Config(StrictModel):
    out: str = Field("runs/dpo", description="run directory")
    model: str = Field(description="Hugging Face chat model directory to optimise, usually an SFT run's final/ (required)")
    tokenizer: str | None = Field(None, description="tokenizer directory; default: the model directory")
    reference: str | None = Field(None, description="reference model directory; default: the model itself (its starting weights)")
    reference_mode: Literal["precomputed", "live"] = Field(
        "precomputed",
        description="precomputed: reference log-probs once before training, cached in OUT/reference_logps.pt; "
        "live: a frozen reference model forward every step",
    )
    loss: DPOLossConfig = Field(default_factory=DPOLossConfig)
    data: DPODataConfig = Field(default_factory=DPODataConfig)
    mode: Literal["full", "lora"] = Field("full", description="full: train everything; lora: LoRA adapters, merged into final/")
    lora: LoraSettings = Field(default_factory=LoraSettings, description="mode=lora settings")
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(max_steps=100, micro_batch_size=8, eval_every=25))
    # 5e-7 (the DPO paper's, for 7B models) barely moves a 10M-parameter model in a few hundred steps;
    # the small models of the task world need ~1e-5..1e-4 (docs/dpo.md).
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=2e-5, weight_decay=0.0))
    schedule: ScheduleConfig = Field(
        default_factory=lambda: _default_schedule(), description="LR schedule (default cosine, 10% warmup)"
    )
    eval_batch_size: int = Field(16, ge=1, description="pairs per forward for the reference log-probs and evaluation")
    eval_generation: GenerationEval | None = Field(
        None, description="greedy answers to the held-out prompts scored by the task world's gold reward, base vs DPO"
    )
    dynamics: DynamicsConfig | None = Field(
        None, description="learning-dynamics probes every N steps -> OUT/dynamics.jsonl (docs/dynamics.md)"
    )


def run(cfg: Config) -> dict:
    from transformers import AutoModelForCausalLM

    from chatforge.dpo.data import PairBatches, encode_pairs, preference_probs, read_pairs
    from chatforge.dpo.evaluate import format_generation_table, generation_eval, pair_eval
    from chatforge.dpo.objective import DPOObjective, cached_reference_logps
    from chatforge.engine import distributed as dist
    from chatforge.sft.modes import apply_mode, export_model, trainable_parameters
    from chatforge.tokenizer.load import load_tokenizer

    if not cfg.data.train:
        raise ConfigError("data.train is empty: give at least one file of preference pairs")
    if cfg.eval_generation is not None and not cfg.data.eval:
        raise ConfigError("eval_generation answers the prompts of data.eval; give held-out pairs there")
    info, device = dist.init(cfg.train.device)
    say = print if info.is_main else (lambda *_, **__: None)
    run_dir = RunDir.create(cfg.out)
    if info.is_main:
        run_dir.write_config(cfg)
    torch.manual_seed(cfg.train.seed)
    with RejectLog(run_dir.rejected if info.is_main else None) as rejects:
        tokenizer = load_tokenizer(cfg.tokenizer or cfg.model)

        def load(sources):
            pairs = list(read_pairs(sources, rejects))
            return encode_pairs(tokenizer, pairs, rejects, cfg.data.max_length, cfg.data.truncation, cfg.data.mask_source)

        train_pairs = load(cfg.data.train)
        eval_pairs = load(cfg.data.eval) if cfg.data.eval else []
        eps = {"train": None, "eval": None}  # per-pair ε = 1 − p* (loss.preference_field)
        if cfg.loss.preference_field is not None:
            train_pairs, eps["train"] = preference_probs(train_pairs, cfg.loss.preference_field, rejects)
            eval_pairs, eps["eval"] = preference_probs(eval_pairs, cfg.loss.preference_field, rejects)
        if rejects.total:
            say(rejects.summary_line())
        model = AutoModelForCausalLM.from_pretrained(cfg.model, trust_remote_code=False, dtype=torch.float32).to(device)
        vocab = model.get_input_embeddings().weight.shape[0]
        if len(tokenizer) > vocab:
            raise ConfigError(f"the tokenizer has {len(tokenizer)} tokens but the model's embedding only {vocab}")
        pad_id = tokenizer.pad_token_id

        # The reference: the starting model itself unless `reference` names another one.
        reference_model, cache_used = None, None
        sets = {"train": train_pairs, "eval": eval_pairs}
        ref = {"train": None, "eval": None}
        if not cfg.loss.reference_free:
            separate = cfg.reference is not None and cfg.reference != cfg.model
            ref_model = (
                AutoModelForCausalLM.from_pretrained(cfg.reference, dtype=torch.float32).to(device) if separate else model
            )
            if cfg.reference_mode == "precomputed":
                ref, cache_used = cached_reference_logps(
                    run_dir.root / "reference_logps.pt", ref_model, sets, pad_id, cfg.eval_batch_size, write=info.is_main
                )
                say(f"reference log-probs: {'reused from' if cache_used else 'computed and cached in'} {run_dir.root / 'reference_logps.pt'}")
            else:  # live: the eval pairs' reference log-probs once; the training ones every step
                ref, _ = cached_reference_logps(
                    run_dir.root / "reference_logps.pt", ref_model, {"eval": eval_pairs}, pad_id, cfg.eval_batch_size, write=False
                )
                ref["train"] = None
                reference_model = _frozen(ref_model) if separate else _frozen(copy.deepcopy(model))
            del ref_model  # precomputed: a separate reference is freed here

        base_pairs = pair_eval(model, eval_pairs, ref["eval"], cfg.loss, pad_id, cfg.eval_batch_size, label_smoothing=eps["eval"]) if eval_pairs and info.is_main else {}
        base_generation = None
        if cfg.eval_generation is not None and info.is_main:
            base_generation = generation_eval(model, tokenizer, [p.pair for p in eval_pairs], cfg.eval_generation)

        batches = PairBatches(
            train_pairs, cfg.train.micro_batch_size, pad_id, seed=cfg.train.seed, rank=info.rank,
            world_size=info.world_size, reference=ref["train"],
            per_pair={"label_smoothing": eps["train"]} if eps["train"] is not None else None,
            group_by_length=cfg.data.group_by_length,
        )
        evaluate = None
        if eval_pairs:
            def evaluate(m):
                return pair_eval(m, eval_pairs, ref["eval"], cfg.loss, pad_id, cfg.eval_batch_size, label_smoothing=eps["eval"])
        pairs_per_step = cfg.train.micro_batch_size * cfg.train.grad_accum_steps * info.world_size
        say(
            f"dpo ({cfg.loss.loss}, beta {cfg.loss.beta}, reference {'none' if cfg.loss.reference_free else cfg.reference_mode}, "
            f"{cfg.mode}): {len(train_pairs)} training pairs, {len(eval_pairs)} held out | {pairs_per_step} pairs per step "
            f"x {cfg.train.max_steps} steps (~{cfg.train.max_steps * pairs_per_step / len(train_pairs):.2f} epochs)"
        )
        model = apply_mode(model, cfg.mode, cfg.lora)
        trainable, total = trainable_parameters(model)
        train_cfg, probes = cfg.train, None
        if cfg.dynamics is not None:
            from chatforge.dynamics.hook import ProbeHook

            probes = ProbeHook(cfg.dynamics, tokenizer, run_dir.root, write=info.is_main, say=say)
            evaluate, train_cfg = probes.wrap(evaluate, cfg.train)
        engine = Engine(
            model, DPOObjective(cfg.loss, reference_model), batches, train_cfg, cfg.optim, cfg.schedule, run_dir,
            evaluate=evaluate, log_config=cfg.model_dump(mode="json"), name=run_dir.root.name,
        )
        if probes is not None:
            probes.attach(engine)
        result = engine.fit()
        if cfg.mode == "lora":
            if info.is_main:
                export_model(dist.unwrap(engine.model), "lora", run_dir.final, tokenizer)
        else:
            engine.export(run_dir.final, tokenizer)
        dist.barrier(info)
        final_generation = None
        if cfg.eval_generation is not None and info.is_main:
            final_model = AutoModelForCausalLM.from_pretrained(run_dir.final, dtype=torch.float32).to(device)
            final_generation = generation_eval(final_model, tokenizer, [p.pair for p in eval_pairs], cfg.eval_generation)
            say(format_generation_table(base_generation, final_generation))
        last = result.last_metrics
        summary = {
            "mode": cfg.mode,
            "loss": cfg.loss.model_dump(),
            "reference_mode": None if cfg.loss.reference_free else cfg.reference_mode,
            "reference_cache_reused": cache_used,
            "steps": result.step,
            "trainable_parameters": trainable,
            "parameters": total,
            "train_pairs": len(train_pairs),
            "eval_pairs": len(eval_pairs),
            "rejected": dict(rejects.counts),
            "final_train": {k: last.get(k) for k in (
                "loss", "rewards/chosen", "rewards/rejected", "rewards/accuracy", "rewards/margin", "logps/chosen", "logps/rejected",
            )},
            "eval": {"base": base_pairs or None, "dpo": result.eval_metrics or None},
            "generation": {"base": base_generation, "dpo": final_generation} if final_generation else None,
            "dynamics": probes.finish(f"{run_dir.root.name}: DPO learning dynamics") if probes is not None else None,
        }
    if info.is_main:
        run_dir.write_summary(summary)
        dpo = summary["eval"]["dpo"] or {}
        held = (
            f" | held-out reward accuracy {dpo['eval/reward_accuracy']:.3f}, margin {dpo['eval/margin']:.3f}, "
            f"log-prob accuracy {base_pairs['eval/logp_accuracy']:.3f} -> {dpo['eval/logp_accuracy']:.3f}"
            if dpo else ""
        )
        print(f"done: {run_dir.final} | {len(train_pairs)} pairs used, {rejects.total} rejected{held}")
    return summary


def _frozen(model: torch.nn.Module) -> torch.nn.Module:
    """`model` in eval mode (no dropout) without gradients: the live reference."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
