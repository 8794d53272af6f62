"""A plain PyTorch loop (no chatforge engine, no packing) on the copy drill: is the engine why copying is slow?

    python examples/world/copy_plain_loop.py sdpa 300 llama-2m     # attention, steps, preset

Trains `preset` from scratch on runs/s17/copy/copy.jsonl (random spelled strings, each written three
times per line; made by the snippet in docs/world_learnability.md) with the tokenizer of
runs/demo/tokenizer, AdamW lr 3e-3 with 20 warm-up steps and cosine decay, 16 rows of 256 tokens per
step, and prints the training loss every 50 steps.
"""

import json
import math
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from chatforge.models.presets import hf_config


def main() -> None:
    args = sys.argv[1:]
    attention = args[0] if len(args) > 0 else "sdpa"
    steps = int(args[1]) if len(args) > 1 else 300
    preset = args[2] if len(args) > 2 else "llama-2m"
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained("runs/demo/tokenizer")
    ids = {"pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id}
    model = AutoModelForCausalLM.from_config(hf_config(preset, len(tok), ids, {}), attn_implementation=attention)
    stream = []
    with open("runs/s17/copy/copy.jsonl", encoding="utf-8") as fh:
        for line in fh:
            stream += [tok.bos_token_id] + tok(json.loads(line)["text"], add_special_tokens=False).input_ids
    data = torch.tensor(stream)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1)
    rows = torch.Generator().manual_seed(0)
    for step in range(1, steps + 1):
        lr = 3e-3 * min(step / 20, 0.5 * (1 + math.cos(math.pi * step / steps)) * 0.9 + 0.1)
        for group in opt.param_groups:
            group["lr"] = lr
        starts = torch.randint(0, len(data) - 257, (16,), generator=rows)
        batch = torch.stack([data[s : s + 257] for s in starts])[:, :-1]
        loss = model(input_ids=batch, labels=batch.clone()).loss  # transformers shifts the labels itself
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        if step % 50 == 0:
            print(step, round(loss.item(), 3), flush=True)


if __name__ == "__main__":
    main()
