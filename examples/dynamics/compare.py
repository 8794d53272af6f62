"""Plain SFT -> DPO against SFT on both answers -> DPO: probe curves (one figure) and a table.

    python examples/dynamics/compare.py runs/dynamics/dpo_plain runs/dynamics/dpo_after_both \
        --labels "SFT->DPO" "SFT->SFT(chosen+rejected)->DPO" --png docs/img/dynamics_dpo.png

Reads each run's dynamics.jsonl and report/summary.json (written by `chatforge dpo` with a
`dynamics:` section and `eval_generation`); prints, per run, the probe log-probs at the first and
last measurement, the squeezing verdict and the gold reward of greedy answers (base -> DPO).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from chatforge.dynamics import detect_squeezing, plot_dynamics, read_rows

KEYS = ("logp/chosen", "logp/rejected", "logp/chosen_paraphrase", "logp/rejected_paraphrase", "logp/irrelevant_train",
        "logp/irrelevant_test", "logp/random_ids", "logp/greedy", "argmax_mass/chosen", "greedy/gold_reward")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories with dynamics.jsonl")
    parser.add_argument("--labels", nargs="+", help="one label per run (default: the directory names)")
    parser.add_argument("--png", type=Path, required=True)
    parser.add_argument("--title", default="Off-policy DPO on the task world: probe log-probs")
    args = parser.parse_args()
    labels = args.labels or [run.name for run in args.runs]
    plot_dynamics({label: run / "dynamics.jsonl" for label, run in zip(labels, args.runs)}, args.png, args.title)
    print(f"wrote {args.png}\n")
    print(f"| probe (mean over probes) | {' | '.join(labels)} |")
    print(f"|---|{'---|' * len(labels)}")
    rows = {label: read_rows(run / "dynamics.jsonl") for label, run in zip(labels, args.runs)}
    for key in KEYS:
        cells = []
        for label in labels:
            first, last = rows[label][0], rows[label][-1]
            cells.append(f"{first[key]:.3f} → {last[key]:.3f} ({last[key] - first[key]:+.3f})" if key in first else "-")
        print(f"| {key} | {' | '.join(cells)} |")
    cells = []
    for label in labels:
        verdict = detect_squeezing(rows[label])
        cells.append(f"{'yes' if verdict['squeezing'] else 'no'}: {verdict['reason']}")
    print(f"| squeezing (steps {rows[labels[0]][0]['step']}→{rows[labels[0]][-1]['step']}) | {' | '.join(cells)} |")
    cells = []
    for run in args.runs:
        summary = json.loads((run / "report" / "summary.json").read_text())
        gen = summary.get("generation") or {}
        base, dpo = gen.get("base") or {}, gen.get("dpo") or {}
        held = (summary.get("eval") or {}).get("dpo") or {}
        cells.append(
            f"gold {base.get('gold_reward', float('nan')):.3f} → {dpo.get('gold_reward', float('nan')):.3f}, correct "
            f"{base.get('correct', float('nan')):.3f} → {dpo.get('correct', float('nan')):.3f}; held-out reward acc "
            f"{held.get('eval/reward_accuracy', float('nan')):.2f}"
        )
    print(f"| greedy answers to held-out prompts | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
