"""Can a model copy from its context? Greedy continuation of a thrice-repeated random spelled string.

    python examples/world/copy_probe.py MODEL_DIR [--format space|hyphen|digits|spaced-digits]

Each of 40 prompts is a random 6-letter string spelled as the world spells letters (format 4: with
spaces, "q w e r t y"; `--format hyphen`: format 3's "q-w-e-r-t-y"), written three times, then its
first two letters again ("q w e r t y ; q w e r t y ; q w e r t y ; q w"); the model is right when it
continues with the other four letters. `--format digits` does the same with a random 6-digit number
written as the world writes operands ("408317 ; 408317 ; 408317 ; 40"), `spaced-digits` with its
digits spaced ("4 0 8 3 1 7"). Copying from context (an induction head) is what the world's
arithmetic (copy the operands) and letter tasks (copy the letters) need first
(docs/world_learnability.md, "Why SFT stops at 0.18"). It also prints the mean loss (nats per token) of
the string's first writing, which nothing predicts, and of its third, which copying predicts: a
graded measure that moves before greedy copying is right.
"""

import argparse
import random

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("--format", choices=["space", "hyphen", "digits", "spaced-digits"], default="space")
    args = parser.parse_args()
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model).eval()
    join, between = {"space": (" ", " ; "), "hyphen": ("-", " "), "digits": ("", " ; "), "spaced-digits": (" ", " ; ")}[args.format]
    alphabet = "0123456789" if "digits" in args.format else "abcdefghijklmnopqrstuvwxyz"
    rng = random.Random(0)
    right = total = 0
    first_loss, third_loss = [], []
    for _ in range(40):
        letters = [rng.choice(alphabet) for _ in range(6)]
        word = join.join(letters)
        ids = tok(between.join([word] * 3) + between + join.join(letters[:2]), return_tensors="pt").input_ids
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
            first, third = writing_losses(model, tok, word, between)
        first_loss.append(first)
        third_loss.append(third)
        continuation = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
        right += continuation.startswith(join + join.join(letters[2:]))
        total += 1
    kind = "digit number" if "digits" in args.format else "letter string"
    print(f"{args.model}: copies the rest of a thrice-repeated random 6-{kind} ({args.format}) in {right} of {total}; "
          f"loss per token, first writing {sum(first_loss) / total:.2f}, third {sum(third_loss) / total:.2f}")


def writing_losses(model, tok, word: str, between: str) -> tuple[float, float]:
    """Mean next-token loss over the tokens of the first and of the third writing of `word`."""
    text = between.join([word] * 3)
    encoded = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = encoded.input_ids
    third_start = len(text) - len(word)
    # A token belongs to the third writing when it ends inside it (" q" starts on the space before it).
    third = [i for i, (_, end) in enumerate(encoded.offset_mapping) if end > third_start]
    first = [i for i, (_, end) in enumerate(encoded.offset_mapping) if end <= len(word)]
    logits = model(torch.tensor([ids])).logits[0].float()
    losses = torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(ids[1:]), reduction="none")
    # Token i is predicted at position i - 1; the very first token has no prediction.
    first_loss = losses[[i - 1 for i in first if i > 0]].mean().item()
    return first_loss, losses[[i - 1 for i in third]].mean().item()


if __name__ == "__main__":
    main()
