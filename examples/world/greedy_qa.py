"""Greedy answers of a pretraining checkpoint to the first short-answer QA lines it was trained on.

    python examples/world/greedy_qa.py CHECKPOINT_DIR TOKENIZER_DIR PRESET WORLD_DIR [--lines 5]

A memorised fact comes back verbatim; an answer of the wrong type (a year for a colour question)
shows the model has not yet learnt what each question asks for (docs/world.md, "Measured so far").
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from chatforge.models.presets import hf_config


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("checkpoint", "tokenizer", "preset", "world"):
        parser.add_argument(name)
    parser.add_argument("--lines", type=int, default=5)
    args = parser.parse_args()
    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    ids = {"pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id}
    model = AutoModelForCausalLM.from_config(hf_config(args.preset, len(tok), ids, {}))
    model.load_state_dict(load_file(str(Path(args.checkpoint) / "model.safetensors")))
    model.eval()
    first = json.loads(Path(args.world, "pretrain/world_a_qa.jsonl").read_text().splitlines()[0])
    for block in first["text"].split("\n\n")[1 : 1 + args.lines]:
        question, truth = block.split("\nAnswer:")
        prompt = tok(question + "\nAnswer:", return_tensors="pt").input_ids
        out = model.generate(prompt, max_new_tokens=8, do_sample=False)
        answer = tok.decode(out[0, prompt.shape[1] :]).split("\n")[0]
        print(f"{question!r} | truth{truth!r} | greedy {answer!r}")


if __name__ == "__main__":
    main()
