"""SFT step time of full fine-tuning, LoRA and freeze-tuning, side by side in one process.

    .venv/bin/python bench/sft_modes.py --model runs/continual/a/final \
        --data runs/continual/world/instructions/train.jsonl            # the world-A base model, world instructions
    .venv/bin/python bench/sft_modes.py                                  # a random llama-10m and its own tiny world

What is compared. One base model is loaded once; every timed run starts from a deep copy of it,
puts it in one mode (`chatforge.sft.modes.apply_mode`: full; LoRA r=16 on every linear layer of the
blocks; freeze with the top 2 blocks and the final norm trainable), builds AdamW over the trainable
parameters only (as the engine does: `chatforge.engine.optim.build_optimizer`) and trains on the
same pre-built list of packed SFT rows (`SFTBatches`, seq_len 256) with the SFT objective. Each run
times `--steps` optimizer steps after `--warmup` untimed ones; the modes run in a rotating order over
`--repeats` repeats, so other load on the machine hits them alike, and the table gives the median
step time per mode and its ratio to full fine-tuning. full_then_lora's time is computed, not run:
its first `--switch` share of steps costs a full step, the rest a LoRA step.

Peak memory is not measured here (one process's peak RSS covers every mode): `chatforge sft` writes
each run's peak to its summary (examples/sft/modes_compare.sh collects them). Exits 0 whatever the
ratios.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

MODES = {
    "full": {},
    "lora": {"lora": {"r": 16, "alpha": 32, "dropout": 0.05}},
    "freeze": {"freeze": {"train_last_n_blocks": 2, "train_modules": [r"model\.norm"]}},
}


def build_inputs(args):
    from transformers import AutoModelForCausalLM

    from chatforge.run_dir import RejectLog
    from chatforge.sft.batches import SFTBatches
    from chatforge.stages.sft import Config, load_examples
    from chatforge.tokenizer.load import load_tokenizer

    if args.model is None:
        from chatforge.models.build import ModelConfig, build_model
        from chatforge.tokenizer.train import TokenizerConfig, save_tokenizer, train_tokenizer
        from chatforge.world.write import write_world

        tmp = Path(tempfile.mkdtemp(prefix="bench-sft-modes-"))
        write_world(tmp / "world", size="tiny")
        tok_cfg = TokenizerConfig(vocab_size=2048, max_documents=2000, out=str(tmp / "tok"))
        save_tokenizer(train_tokenizer(tok_cfg, RejectLog(None)), tmp / "tok")
        tokenizer = load_tokenizer(tmp / "tok")
        model = build_model(ModelConfig(preset="llama-10m"), tokenizer, seed=0)
        data = str(tmp / "world" / "instructions" / "train.jsonl")
    else:
        tokenizer = load_tokenizer(args.model)
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
        data = args.data
    cfg = Config(model=args.model or "random", data={"sources": [{"path": data}], "seq_len": args.seq_len})
    examples, stats = load_examples(cfg, cfg.data.sources, tokenizer, RejectLog(None))
    rows = SFTBatches(examples, args.batch_size, args.seq_len, tokenizer.pad_token_id, "pack", seed=0)
    batches = [rows.next_batch() for _ in range(args.warmup + args.steps)]
    return model, batches, stats


def time_mode(base, mode: str, batches, warmup: int) -> tuple[list[float], int, int]:
    from chatforge.engine.config import OptimConfig
    from chatforge.engine.optim import build_optimizer
    from chatforge.sft.modes import FreezeSettings, LoraSettings, apply_mode, trainable_parameters
    from chatforge.sft.objective import SFTObjective

    settings = MODES[mode]
    model = apply_mode(
        copy.deepcopy(base), mode, LoraSettings(**settings.get("lora", {})), FreezeSettings(**settings.get("freeze", {}))
    )
    model.train()
    optimizer = build_optimizer(model, OptimConfig(lr=1e-4, weight_decay=0.0), torch.device("cpu"))
    params = [p for p in model.parameters() if p.requires_grad]
    objective = SFTObjective()
    times = []
    for i, batch in enumerate(batches):
        start = time.perf_counter()
        out = objective(model, batch)
        (out.loss_sum / out.count).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    trainable, total = trainable_parameters(model)
    return times, trainable, total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="HF causal-LM directory (default: a random llama-10m)")
    parser.add_argument("--data", help="conversations JSONL (with --model)")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--switch", type=float, default=0.2, help="full_then_lora's full share of steps")
    parser.add_argument("--json", help="also write every number to this file")
    args = parser.parse_args()
    if args.model and not args.data:
        parser.error("--model needs --data")
    torch.manual_seed(0)
    base, batches, stats = build_inputs(args)
    tokens = sum(int(b["input_ids"].numel()) for b in batches[args.warmup :]) / args.steps
    names = list(MODES)
    step_times: dict[str, list[float]] = {m: [] for m in names}
    params: dict[str, tuple[int, int]] = {}
    for repeat in range(args.repeats):
        order = names[repeat % len(names) :] + names[: repeat % len(names)]
        for mode in order:
            times, trainable, total = time_mode(base, mode, batches, args.warmup)
            step_times[mode] += times
            params[mode] = (trainable, total)
            print(f"repeat {repeat + 1} {mode}: median step {statistics.median(times) * 1e3:.0f} ms", file=sys.stderr)
    median = {m: statistics.median(t) for m, t in step_times.items()}
    median["full_then_lora"] = args.switch * median["full"] + (1 - args.switch) * median["lora"]
    print(f"{stats['examples']} conversations; {args.batch_size} packed rows of {args.seq_len} per step; "
          f"{args.steps} timed steps x {args.repeats} repeats per mode (median of all timed steps)")
    print("| mode | trainable parameters | step (ms) | tokens/s | vs full |")
    print("|---|---|---|---|---|")
    for mode in [*names, "full_then_lora"]:
        trainable = params.get(mode, params["lora"])[0] if mode != "full_then_lora" else None
        cells = [
            mode,
            f"{trainable:,}" if trainable is not None else f"{params['full'][0]:,} then {params['lora'][0]:,}",
            f"{median[mode] * 1e3:.0f}",
            f"{tokens / median[mode]:,.0f}",
            f"{median['full'] / median[mode]:.2f}x",
        ]
        print("| " + " | ".join(cells) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps({"median_step_s": median, "step_times": step_times, "params": params,
                                               "tokens_per_step": tokens}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
