"""`chatforge eval`: several models × several task kinds, one side-by-side table, results in eval.json.

Task kinds (`tasks[i].kind`): lm (ppl, bits-per-byte), multiple_choice (C-Eval / MMLU, letter or
option scoring, per subject), generation (exact match, pass@k, majority vote), reward_accuracy
(reward model or DPO implicit reward on held-out pairs), judge (LLM-as-judge, pairwise in both
orders or a 5-dimension rubric). `baseline` adds a delta column per other model (forgetting: the
same suite before and after a stage). See docs/evaluation.md.

    chatforge eval examples/eval/suite.yaml
    chatforge eval models='[runs/a/final, runs/b/final]' baseline=runs/a/final \
        tasks='[{kind: multiple_choice, path: data/world/ceval, method: option, shots: 3}]'
"""

from __future__ import annotations

from chatforge.evaluation.suite import SuiteConfig, format_table, run_suite

Config = SuiteConfig


def run(cfg: Config) -> dict:
    report = run_suite(cfg)
    print()
    print(format_table(report))
    print(f"\nresults: {cfg.out}")
    return report
