"""Save a randomly initialised llama-10m with the continual-pretraining tokenizer: the "untrained" column.

    python examples/eval/make_untrained.py runs/eval/untrained [--tokenizer runs/continual/tokenizer] [--seed 0]
"""

import argparse

from chatforge.models.build import ModelConfig, build_model
from chatforge.tokenizer.load import load_tokenizer

parser = argparse.ArgumentParser()
parser.add_argument("out")
parser.add_argument("--tokenizer", default="runs/continual/tokenizer")
parser.add_argument("--preset", default="llama-10m")
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()
tokenizer = load_tokenizer(args.tokenizer)
model = build_model(ModelConfig(preset=args.preset), tokenizer, seed=args.seed)
model.save_pretrained(args.out)
tokenizer.save_pretrained(args.out)
print(f"{args.out}: {sum(p.numel() for p in model.parameters()):,} parameters, untrained")
