"""The reward-KL frontier of online-RL runs (and Best-of-N) on one plot, plus the results table.

    python examples/rl/frontier.py runs/rl/ppo runs/rl/grpo runs/rl/online_dpo [--bon runs/bon/x/bon.json] \
        --out docs/img/rl_frontier.png

Each run contributes its held-out evaluations (OUT/eval_history.jsonl: gold reward ± standard error
against the sampled KL to the reference); Best-of-N its analytic KL log N − (N − 1)/N against its
gold reward (chatforge bon). Prints a markdown table: start and final gold, the paired gain ± SE,
the gain in SEs, the final KL.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--bon", default=None)
    parser.add_argument("--out", default="docs/img/rl_frontier.png")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    print("| run | steps | held-out gold at start | final | paired gain ± SE | gain / SE | KL at the end (nats) | greedy gold start -> final |")
    print("|---|---|---|---|---|---|---|---|")
    for run in map(Path, args.runs):
        history = [json.loads(line) for line in (run / "eval_history.jsonl").read_text().splitlines()]
        kls = [h["metrics"]["eval/kl"] for h in history]
        golds = [h["metrics"]["eval/gold"] for h in history]
        ses = [h["metrics"]["eval/gold_se"] for h in history]
        ax.errorbar(kls, golds, yerr=ses, marker="o", capsize=3, label=run.name)
        summary = json.loads((run / "report" / "summary.json").read_text())
        gain, start, final = summary["gold_gain"], summary["eval"]["start"], summary["eval"]["final"]
        greedy = f"{start.get('eval/greedy_gold', float('nan')):.3f} -> {final.get('eval/greedy_gold', float('nan')):.3f}"
        print(f"| {run.name} | {summary['steps']} | {start['eval/gold']:.3f} ± {start['eval/gold_se']:.3f} | "
              f"{final['eval/gold']:.3f} ± {final['eval/gold_se']:.3f} | {gain['gain']:+.3f} ± {gain['se']:.3f} | "
              f"{gain['z']:.1f} | {final['eval/kl']:.3f} | {greedy} |")
    if args.bon:
        bon = json.loads(Path(args.bon).read_text())["best_of_n"]
        ax.errorbar([b["kl"] for b in bon], [b["gold"] for b in bon], yerr=[b["gold_sem"] for b in bon],
                    marker="s", linestyle="--", capsize=3, label="best-of-N (analytic KL)")
    ax.set_xlabel("KL(policy || reference), nats per response")
    ax.set_ylabel("held-out gold reward")
    ax.set_title("reward-KL frontier on the task world")
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"plot: {args.out}")


if __name__ == "__main__":
    main()
