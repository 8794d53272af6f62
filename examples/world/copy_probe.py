"""Can a model copy from its context? Greedy continuation of a thrice-repeated random spelled string.

    python examples/world/copy_probe.py MODEL_DIR

Each of 40 prompts is a random 6-letter string spelled with hyphens, written three times, then its
first two letters again ("q-w-e-r-t-y q-w-e-r-t-y q-w-e-r-t-y q-w"); the model is right when it
continues with the other four letters. Copying from context (an induction head) is what the world's
arithmetic (copy the operands) and letter tasks (copy the letters) need first
(docs/world_learnability.md, "Why SFT stops at 0.18").
"""

import random
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main() -> None:
    tok = AutoTokenizer.from_pretrained(sys.argv[1])
    model = AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
    rng = random.Random(0)
    right = total = 0
    for _ in range(40):
        letters = [rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(6)]
        word = "-".join(letters)
        ids = tok(f"{word} {word} {word} " + "-".join(letters[:2]), return_tensors="pt").input_ids
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
        continuation = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
        right += continuation.startswith("-" + "-".join(letters[2:]))
        total += 1
    print(f"{sys.argv[1]}: copies the rest of a thrice-repeated random 6-letter string in {right} of {total}")


if __name__ == "__main__":
    main()
