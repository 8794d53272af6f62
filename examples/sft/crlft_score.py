"""Per-question exact match of SFT runs, and the C-RLFT comparison table of docs/sft.md.

    python examples/sft/crlft_score.py score RUN/final TEST.jsonl --n 314 --out RUN/score.jsonl
    python examples/sft/crlft_score.py score RUN/final TEST.jsonl --condition novice --out RUN/score_novice.jsonl
    python examples/sft/crlft_score.py table OUT_DIR [--file score.jsonl]
    python examples/sft/crlft_score.py subset MIXED.jsonl {all,disagree} OUT_MIXED.jsonl OUT_EXPERT.jsonl

`score` answers the first N held-out instructions greedily with the model's own exported chat template
(a C-RLFT model's template puts its best class's tag, "Source: expert.", first in the system message,
as OpenChat conditions on the expert class at inference) and checks each answer with the world's
checker (`chatforge.evaluation.instructions`, the same generation and checker as the SFT stage's eval).
`--condition CLASS` writes another class's tag into the prompts first (the template leaves a known
class's tag alone), to see what the class condition does. One line per question, so that `table` can
pair runs question by question.

`table` reads OUT_DIR/<arm>_s<seed>/<file> and prints, per task type, each arm's mean over seeds ± the
SE over seeds with the per-run accuracies ± their binomial SE, and each arm's paired difference from
`plain`: mean over seeds ± two SEs, the SE over seeds of the per-seed differences and the SE over
questions of the per-question difference averaged over seeds (question sampling; the seed spread is in
the first).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from collections import defaultdict
from pathlib import Path

# The task types of the mixed-quality data (its prompts are arithmetic, facts and letter tasks).
MIXED_TYPES = ("arithmetic", "fact", "string")
ROWS = ("arithmetic", "fact", "string", "  reverse", "  sort_letters", "  count_letter", "conversation", "vault",
        "mixed types", "all")


def _spelled_input(question: str) -> str | None:
    """The letters a letter task spells out ('m a n'): the last run of single letters in the question."""
    runs = re.findall(r"\b[a-z](?: [a-z]\b)+", question)
    return runs[-1] if runs else None


def score(args: argparse.Namespace) -> None:
    import yaml

    from chatforge.evaluation.instructions import greedy_answers
    from chatforge.sampling import Sampler, SamplingConfig, chat_prompt
    from chatforge.scoring.world import instruction_correct
    from chatforge.sft.crlft import CRLFTConfig, condition
    from chatforge.sft.masking import end_of_turn_ids
    from chatforge.stages._training import load_causal_lm
    from chatforge.tokenizer.load import load_tokenizer
    from chatforge.world.answers import extract_final_answer

    tokenizer = load_tokenizer(args.model)
    model = load_causal_lm(args.model)
    records = [json.loads(line) for line in open(args.test) if line.strip()][: args.n]
    index = list(range(len(records)))
    if args.tasks:
        index = [i for i in index if records[i].get("task") in args.tasks.split(",")]
    prompts = [records[i]["messages"][:-1] for i in index]
    if args.condition:
        run_cfg = yaml.safe_load((Path(args.model).parent / "config.yaml").read_text())
        if not run_cfg.get("crlft"):
            sys.exit(f"{args.model}: --condition needs a C-RLFT run (config.yaml has no crlft section)")
        prompts = [condition(p, args.condition, CRLFTConfig(**run_cfg["crlft"])) for p in prompts]
    # What the model is asked, as its template renders it (a C-RLFT model: "Source: expert." first).
    print("first prompt as rendered:", repr(tokenizer.decode(chat_prompt(tokenizer, prompts[0]))[:200]))
    if args.temperature == 0:
        answers = [[a] for a in greedy_answers(model, tokenizer, prompts, args.max_new_tokens, args.batch_size)]
    else:
        cfg = SamplingConfig(temperature=args.temperature, n=args.samples, seed=args.seed, max_new_tokens=args.max_new_tokens,
                             max_batch_size=args.batch_size, stop_token_ids=end_of_turn_ids(tokenizer))
        done = Sampler(model, tokenizer).generate([chat_prompt(tokenizer, p) for p in prompts], cfg)
        answers = [[c.text.strip() for c in samples] for samples in done]
    right = 0.0
    with open(args.out, "w") as fh:
        for i, samples in zip(index, answers):
            record = records[i]
            ok = [int(instruction_correct(record["messages"][:-1], a)) for a in samples]
            line = {"i": i, "task": record.get("task"), "task_type": record.get("task_type"),
                    "correct": sum(ok) / len(ok), "answer": samples[0]}
            if record.get("task") in ("reverse", "sort_letters"):
                # The novice's learnable letter error: the input letters given back unchanged.
                spelled = _spelled_input(record["messages"][-2]["content"])
                line["copy"] = sum(extract_final_answer(a) == spelled for a in samples) / len(samples)
            right += line["correct"]
            fh.write(json.dumps(line) + "\n")
    print(f"{args.out}: {right:g} of {len(index)} right (mean over {len(answers[0])} answer(s) per question)")


def _rows(record: dict) -> list[str]:
    """The table rows a question counts in."""
    rows = [str(record["task_type"]), "all"]
    if record["task_type"] == "string":
        rows.append("  " + str(record["task"]))
    if record["task_type"] in MIXED_TYPES:
        rows.append("mixed types")
    return rows


def _mean_se(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, float("nan")
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1) / len(values))


def table(args: argparse.Namespace) -> None:
    runs: dict[str, dict[int, list[dict]]] = defaultdict(dict)
    for path in sorted(Path(args.out_dir).glob(f"*_s*/{args.file}")):
        m = re.fullmatch(r"(.+)_s(\d+)", path.parent.name)
        if m:
            runs[m.group(1)][int(m.group(2))] = [json.loads(line) for line in open(path)]
    if not runs:
        sys.exit(f"{args.out_dir}: no <arm>_s<seed>/{args.file}")
    arms = sorted(runs, key=lambda a: (a != "plain", a != "expert", a))
    # correct[arm][seed][row] = list of 0/1 per question, in question order
    correct = {a: {s: defaultdict(list) for s in runs[a]} for a in arms}
    for a in arms:
        for s, recs in runs[a].items():
            for r in recs:
                for row in _rows(r):
                    correct[a][s][row].append(r["correct"])
    print("| task type | n | " + " | ".join(f"{a} (seeds {','.join(map(str, sorted(runs[a])))})" for a in arms)
          + " | " + " | ".join(f"{a} − plain" for a in arms if a != "plain" and "plain" in runs) + " |")
    print("|---" * (2 + len(arms) + sum(a != "plain" and "plain" in runs for a in arms)) + "|")
    for row in ROWS:
        n = {len(correct[a][s][row]) for a in arms for s in runs[a]}
        if n == {0}:
            continue
        cells = []
        for a in arms:
            accs = [sum(correct[a][s][row]) / len(correct[a][s][row]) for s in sorted(runs[a])]
            m, se = _mean_se(accs)
            # A run's SE over the questions (binomial for greedy 0/1 scores).
            per_run = ", ".join(f"{p:.3f}±{_mean_se(correct[a][s][row])[1]:.3f}" for p, s in zip(accs, sorted(runs[a])))
            cells.append(f"**{m:.3f} ± {se:.3f}** ({per_run})")
        for a in arms:
            if a == "plain" or "plain" not in runs:
                continue
            seeds = sorted(set(runs[a]) & set(runs["plain"]))
            if not seeds:
                cells.append("no common seed")
                continue
            diffs = [(sum(correct[a][s][row]) - sum(correct["plain"][s][row])) / len(correct[a][s][row]) for s in seeds]
            m, se_seed = _mean_se(diffs)
            per_q = [sum(correct[a][s][row][i] - correct["plain"][s][row][i] for s in seeds) / len(seeds)
                     for i in range(len(correct[a][seeds[0]][row]))]
            _, se_q = _mean_se(per_q)
            cells.append(f"{m:+.3f} (SE seeds {se_seed:.3f}, questions {se_q:.3f})")
        print(f"| {row.strip() if not row.startswith('  ') else '↳ ' + row.strip()} | {max(n)} | " + " | ".join(cells) + " |")
    print("\nanswers that give the input letters back unchanged (the novice's letter error), reverse + sort_letters:")
    for a in arms:
        shares = [sum(r.get("copy", 0) for r in recs) / max(1, sum("copy" in r for r in recs)) for recs in runs[a].values()]
        print(f"  {a}: " + ", ".join(f"{x:.3f}" for x in shares))


def subset(args: argparse.Namespace) -> None:
    """The training files: the mixed-quality rows (all, or only the prompts the novice gets wrong) and their expert rows."""
    lines = [line if line.endswith("\n") else line + "\n" for line in open(args.mixed) if line.strip()]
    rows = [json.loads(line) for line in lines]
    keep = [True] * len(rows)
    if args.which == "disagree":
        wrong = {r["prompt_id"] for r in rows if r["source"] == "novice" and not r["correct"]}
        keep = [r["prompt_id"] in wrong for r in rows]
    # The world's lines as they are (no re-serialisation), so `all` is the file itself; written to a
    # temporary file and renamed, so a run reading the file while another comparison starts never sees half of it.
    for path, chosen in ((args.out_mixed, [line for line, k in zip(lines, keep) if k]),
                         (args.out_expert, [line for line, r, k in zip(lines, rows, keep) if k and r["source"] == "expert"])):
        tmp = Path(f"{path}.tmp{os.getpid()}")
        tmp.write_text("".join(chosen))
        os.replace(tmp, path)
    rows = [r for r, k in zip(rows, keep) if k]
    print(f"{args.out_mixed}: {len(rows)} rows ({args.which}); {args.out_expert}: the expert's")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("score")
    s.add_argument("model")
    s.add_argument("test")
    s.add_argument("--n", type=int, default=314)
    s.add_argument("--out", required=True)
    s.add_argument("--condition", default=None, help="a C-RLFT class to condition the prompts on (default: the template's)")
    s.add_argument("--max-new-tokens", type=int, default=96)
    s.add_argument("--batch-size", type=int, default=16)
    s.add_argument("--temperature", type=float, default=0.0, help="0: greedy (the docs table); > 0: sample")
    s.add_argument("--samples", type=int, default=1, help="samples per question when sampling (correct = their mean)")
    s.add_argument("--seed", type=int, default=0, help="sampling seed")
    s.add_argument("--tasks", default=None, help="comma-separated world tasks to score (default: all)")
    t = sub.add_parser("table")
    t.add_argument("out_dir")
    t.add_argument("--file", default="score.jsonl")
    u = sub.add_parser("subset")
    u.add_argument("mixed")
    u.add_argument("which", choices=["all", "disagree"])
    u.add_argument("out_mixed")
    u.add_argument("out_expert")
    args = parser.parse_args()
    {"score": score, "table": table, "subset": subset}[args.cmd](args)


if __name__ == "__main__":
    main()
