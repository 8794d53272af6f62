"""When does a tiny model learn to copy from its context? A copy drill with the copy accuracy tracked.

    python examples/world/copy_phase.py --tokenizer runs/demo/tokenizer --format hyphen \\
        --preset llama-2m --lr 3e-3 --steps 3000 --out runs/copy_phase/hyphen.jsonl

Each training line is a random string written three times (" q-w-e-r-t-y q-w-e-r-t-y q-w-e-r-t-y");
the string's first copy is unpredictable, the next two are predictable only by copying (an
induction head: attend to the token after an earlier occurrence of the current context). Every
`--eval-every` steps the script measures, teacher-forced on 64 held-out lines, the share of tokens
of the second and third copies (after each copy's first token; hyphens not counted) that the model predicts exactly: the
copy accuracy, which jumps when the induction circuit forms (docs/world_learnability.md).

Formats: `hyphen` spells letters with hyphens as the world's letter tasks do (a letter token, then
"-", so copying needs the token two back); `space` writes one space-prefixed token per letter;
`word` uses random whole-word tokens of the tokenizer. A plain PyTorch loop on a model from
`chatforge.models.presets` (no chatforge engine), AdamW with 20 warm-up steps and cosine decay to
10%; one JSON line per evaluation goes to --out, and the last line printed says at which step the
copy accuracy first reached 0.5 and 0.9.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from chatforge.models.presets import hf_config

LETTERS = "abcdefghijklmnopqrstuvwxyz"


class Drill:
    """Random copy lines as token ids, with the positions whose prediction needs copying."""

    def __init__(self, tok, fmt: str, seed: int, min_len: int, max_len: int):
        self.tok, self.fmt, self.rng = tok, fmt, random.Random(seed)
        self.min_len, self.max_len = min_len, max_len
        self.newline = tok("\n", add_special_tokens=False).input_ids
        self.separators = set(tok("-", add_special_tokens=False).input_ids)
        if fmt == "word":
            # Whole-word tokens of 3+ letters that decode back to themselves with their leading space.
            vocab = tok.get_vocab()
            self.words = sorted(w for w in (tok.decode([i]) for i in vocab.values())
                                if w.startswith(" ") and w[1:].isalpha() and len(w) > 3)

    def string(self) -> str:
        n = self.rng.randint(self.min_len, self.max_len)
        if self.fmt == "word":
            return "".join(self.rng.choice(self.words) for _ in range(n))
        letters = [self.rng.choice(LETTERS) for _ in range(n)]
        return " " + ("-".join(letters) if self.fmt == "hyphen" else " ".join(letters))

    def line(self) -> tuple[list[int], list[bool]]:
        copy = self.tok(self.string(), add_special_tokens=False).input_ids
        ids = copy * 3 + self.newline
        # A label position is "copy" when its token is in the 2nd or 3rd copy but not that copy's first.
        # The hyphens between letters are predictable without copying, so only letters and words count.
        inner = [False] + [token not in self.separators for token in copy[1:]]
        mask = [False] * len(copy) + inner * 2 + [False] * len(self.newline)
        return ids, mask

    def rows(self, n: int, seq_len: int, bos: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids, masks = [], []
        for _ in range(n):
            row, mask = [bos], [False]
            while len(row) < seq_len + 1:
                line, line_mask = self.line()
                row += line
                mask += line_mask
            ids.append(row[: seq_len + 1])
            masks.append(mask[: seq_len + 1])
        return torch.tensor(ids), torch.tensor(masks)


def write_docs(drill: Drill, n: int, out: Path) -> None:
    """The drill as pretraining text (one `text` per document), to mix into a `chatforge pretrain` run."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as fh:
        for i in range(n):
            lines = []
            for _ in range(12):
                copy = drill.string().lstrip(" ")
                lines.append(" ; ".join([copy] * 3) if drill.fmt == "space" else f"{copy} {copy} {copy}")
            fh.write(json.dumps({"id": f"copy-drill-{i:06d}", "text": "\n".join(lines)}) + "\n")
    print(f"wrote {n} drill documents to {out}")


@torch.no_grad()
def copy_accuracy(model, ids: torch.Tensor, mask: torch.Tensor) -> float:
    model.eval()
    predicted = model(input_ids=ids[:, :-1]).logits.argmax(-1)
    model.train()
    target, where = ids[:, 1:], mask[:, 1:]
    return float((predicted == target)[where].float().mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--format", choices=["hyphen", "space", "word"], default="hyphen")
    p.add_argument("--preset", default="llama-2m")
    p.add_argument("--kv-heads", type=int, default=0, help="override num_key_value_heads (0: the preset's)")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--min-len", type=int, default=4)
    p.add_argument("--max-len", type=int, default=8)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--write-docs", type=int, default=0,
                   help="write this many 12-line drill documents as pretraining JSONL to --out and stop")
    a = p.parse_args()
    torch.manual_seed(a.seed)
    tok = AutoTokenizer.from_pretrained(a.tokenizer)
    if a.write_docs:
        write_docs(Drill(tok, a.format, a.seed, a.min_len, a.max_len), a.write_docs, a.out)
        return
    ids = {"pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id}
    overrides = {"num_key_value_heads": a.kv_heads} if a.kv_heads else {}
    model = AutoModelForCausalLM.from_config(hf_config(a.preset, len(tok), ids, overrides)).to(a.device)
    train = Drill(tok, a.format, a.seed, a.min_len, a.max_len)
    held_ids, held_mask = Drill(tok, a.format, 10_000 + a.seed, a.min_len, a.max_len).rows(64, a.seq_len, tok.bos_token_id)
    held_ids, held_mask = held_ids.to(a.device), held_mask.to(a.device)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.95), weight_decay=0.1)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    reached: dict[str, int | None] = {"0.5": None, "0.9": None}
    started = time.time()
    with open(a.out, "w") as log:
        for step in range(1, a.steps + 1):
            lr = a.lr * min(step / 20, 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / a.steps)))
            for group in opt.param_groups:
                group["lr"] = lr
            batch = train.rows(a.batch, a.seq_len, tok.bos_token_id)[0].to(a.device)
            logits = model(input_ids=batch[:, :-1]).logits
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if step % a.eval_every == 0 or step == a.steps:
                acc = copy_accuracy(model, held_ids, held_mask)
                for level in reached:
                    if reached[level] is None and acc >= float(level):
                        reached[level] = step
                row = {"step": step, "loss": round(loss.item(), 4), "copy_accuracy": round(acc, 4),
                       "seconds": round(time.time() - started, 1)}
                log.write(json.dumps(row) + "\n")
                log.flush()
                print(json.dumps(row), flush=True)
    print(json.dumps({"format": a.format, "preset": a.preset, "kv_heads": a.kv_heads, "lr": a.lr,
                      "batch": a.batch, "seq_len": a.seq_len, "steps": a.steps,
                      "first_step_copy_0.5": reached["0.5"], "first_step_copy_0.9": reached["0.9"]}))


if __name__ == "__main__":
    main()
