"""Letter-logit multiple choice of the demo model on the default-size world (val and test splits).

    python examples/eval/letter_scoring_demo.py [runs/demo/pretrain/final]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from transformers import AutoModelForCausalLM

from chatforge.evaluation.multiple_choice import find_subject_files, read_mc_csv, score_multiple_choice
from chatforge.tokenizer.load import load_tokenizer
from chatforge.world import write_world


def main(model_dir: str = "runs/demo/pretrain/final") -> None:
    root = Path(tempfile.mkdtemp())
    write_world(root, size="default")
    tok = load_tokenizer(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    dev = {s: read_mc_csv(p) for s, p in find_subject_files(root / "ceval", "dev").items()}
    for split in ("val", "test"):
        questions = [q for p in find_subject_files(root / "ceval", split).values() for q in read_mc_csv(p)]
        started = time.perf_counter()
        r = score_multiple_choice(model, tok, questions, dev=dev, shots=5, batch_size=16)
        seconds = time.perf_counter() - started
        print(
            f"{split}: {r['total']} questions, {seconds:.1f} s ({r['total'] / seconds:.0f}/s), accuracy "
            f"{r['accuracy']:.4f}, p_correct {r['p_correct']:.3f}, letters {r['letter_distribution']}"
        )


if __name__ == "__main__":
    main(*sys.argv[1:2])
