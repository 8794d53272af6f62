"""Sweep the task world's pretraining and SFT settings, several runs at a time (docs/world.md, "Sweeps").

    python examples/world/sweep.py --out runs/sweep --device cpu --jobs 1 \\
        --pretrain llama-2m:3e-3:800 --pretrain llama-3m:3e-3:800 --sft-steps 300,600

Each `--pretrain PRESET:LR:STEPS[:BATCH]` is one `chatforge pretrain examples/world/pretrain.yaml`
run (world A text + its QA text + solved arithmetic, rows of 256), scored on the knowledge test
(`knowledge_by_split.py`, option likelihood, 1 shot). Each pretrained model is then fine-tuned with
`chatforge sft examples/world/sft.yaml` for every `--sft-steps` count and scored by exact match on the
held-out instructions. Runs are independent processes, `--jobs` at a time: on a GPU, tiny models
are launch-bound, so several share the device well. `--precision fp32` (the default) keeps the
arithmetic of a CPU run, so step counts found on a GPU transfer to the CPU defaults.

Writes OUT/sweep.md (the tables) and OUT/sweep.json; the world and tokenizer are built in OUT first
unless they exist.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHATFORGE = [sys.executable, "-m", "chatforge"]


@dataclass
class Run:
    kind: str
    name: str
    command: list[str]
    seconds: float = 0.0
    returncode: int | None = None
    result: dict = field(default_factory=dict)


def sh(run: Run, log_dir: Path, env: dict) -> Run:
    start = time.time()
    with open(log_dir / f"{run.name}.log", "w") as log:
        run.returncode = subprocess.run(run.command, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    run.seconds = round(time.time() - start, 1)
    print(f"{run.kind} {run.name}: exit {run.returncode} in {run.seconds:.0f} s", flush=True)
    return run


def data_paths(data: Path) -> str:
    pre = data / "pretrain"
    return (f"data.sources=[{{path: {pre}/world_a_train.jsonl, name: world_a, weight: 0.65}}, "
            f"{{path: {pre}/world_a_qa.jsonl, name: world_a_qa, weight: 0.25}}, "
            f"{{path: {pre}/arithmetic_train.jsonl, name: arithmetic, weight: 0.10}}]")


def parse_variant(text: str) -> tuple[str, list[str]]:
    """ "LABEL=OVERRIDE;OVERRIDE" -> (label, overrides), as --pretrain-variant and --sft-variant take it."""
    label, overrides = text.split("=", 1)
    return label, overrides.split(";")


def with_data(overrides: list[str], out: Path) -> list[str]:
    """The overrides with {data} replaced by the sweep's world directory."""
    return [o.replace("{data}", str(out / "data")) for o in overrides]


def pretrain_run(spec: str, out: Path, device: str, precision: str,
                 variant: tuple[str, list[str]] = ("", [])) -> Run:
    preset, lr, steps, *rest = spec.split(":")
    batch = rest[0] if rest else "16"
    label, overrides = variant
    name = f"pt_{preset}_lr{lr}_s{steps}_b{batch}" + (f"_{label}" if label else "")
    command = [*CHATFORGE, "pretrain", str(HERE / "pretrain.yaml"), f"out={out / name}",
               f"tokenizer={out / 'tokenizer'}", data_paths(out / "data"), f"model.preset={preset}",
               f"optim.lr={lr}", f"train.max_steps={steps}", f"train.micro_batch_size={batch}",
               f"train.device={device}", f"train.precision={precision}", "train.progress=false",
               "train.save_every=0", "train.resume=never", *with_data(overrides, out)]
    return Run("pretrain", name, command)


def copy_probe_run(model: Run, out: Path) -> Run:
    return Run("copy", f"copy_{model.name}", [sys.executable, str(HERE / "copy_probe.py"), str(out / model.name / "final")])


COPY_LINE = re.compile(r"in (\d+) of (\d+)")


def read_copy(log: Path) -> dict:
    found = COPY_LINE.search(log.read_text())
    return {"right": int(found.group(1)), "total": int(found.group(2))} if found else {}


def knowledge_run(model: Run, out: Path, device: str, greedy: bool = True) -> Run:
    return Run("knowledge", f"kn_{model.name}",
               [sys.executable, str(HERE / "knowledge_by_split.py"), str(out / model.name / "final"),
                str(out / "data"), "--shots", "1", "--device", device, *(["--greedy"] if greedy else [])])


def sft_run(pretrain: Run, steps: int, lr: str, out: Path, device: str, precision: str,
            variant: tuple[str, list[str]] = ("", [])) -> Run:
    label, overrides = variant
    name = f"sft_{pretrain.name.removeprefix('pt_')}_lr{lr}_s{steps}" + (f"_{label}" if label else "")
    instructions = out / "data" / "instructions"
    command = [*CHATFORGE, "sft", str(HERE / "sft.yaml"), f"out={out / name}",
               f"model={out / pretrain.name / 'final'}", f"data.sources=[{{path: {instructions}/train.jsonl}}]",
               f"eval.path={instructions}/test.jsonl", f"optim.lr={lr}", f"train.max_steps={steps}",
               f"train.device={device}", f"train.precision={precision}", "train.progress=false",
               "train.resume=never", *with_data(overrides, out)]
    return Run("sft", name, command)


KNOWLEDGE_LINE = re.compile(r"\| (option|greedy) / (all|train people|test people) \| (\d+) \| ([0-9.]+) ± ([0-9.]+) \|")


def read_knowledge(log: Path) -> dict:
    return {f"{m.group(1)} {m.group(2)}": {"n": int(m.group(3)), "accuracy": float(m.group(4)), "se": float(m.group(5))}
            for m in KNOWLEDGE_LINE.finditer(log.read_text())}


def read_sft(run_dir: Path) -> dict:
    summary = json.loads((run_dir / "report" / "summary.json").read_text())
    em = summary["exact_match"]["sft"]
    n, p = em["total"], em["accuracy"]
    return {"accuracy": p, "se": math.sqrt(p * (1 - p) / n), "n": n, "loss": summary.get("final_train_loss"),
            "per_task": {k: round(v["accuracy"], 3) for k, v in em["per_task"].items()}}


def prepare(out: Path, env: dict, size: str) -> None:
    if not (out / "data" / "manifest.json").exists():
        subprocess.run([*CHATFORGE, "world", "write", "--out", str(out / "data"), "--size", size], check=True, env=env)
    if not (out / "tokenizer" / "tokenizer.json").exists():
        pre = out / "data" / "pretrain"
        texts = [pre / f"world_{w}_{kind}.jsonl" for kind in ("train", "qa") for w in "ab"]
        texts += [pre / "letters_train.jsonl"] if (pre / "letters_train.jsonl").exists() else []
        sources = ", ".join([*(f"{{path: {p}}}" for p in texts),
                             f"{{path: {out / 'data' / 'instructions' / 'train.jsonl'}, content: chat}}"])
        subprocess.run([*CHATFORGE, "tokenizer", str(HERE / "tokenizer.yaml"), f"out={out / 'tokenizer'}",
                        f"sources=[{sources}]"], check=True, env=env)


def table(runs: list[Run]) -> str:
    columns = [f"{m} {s}" for m in ("option", "greedy") for s in ("all", "train people", "test people")]
    lines = ["| run | seconds | " + " | ".join(columns) + " |", "|---" * (len(columns) + 2) + "|"]
    for run in (r for r in runs if r.kind == "knowledge"):
        k = run.result
        cells = [f"{k[c]['accuracy']:.3f} ± {k[c]['se']:.3f}" if c in k else "-" for c in columns]
        lines.append(f"| {run.name.removeprefix('kn_')} | {run.seconds:.0f} | " + " | ".join(cells) + " |")
    lines += ["", "| SFT run | seconds | exact match | train loss | per task |", "|---|---|---|---|---|"]
    for run in (r for r in runs if r.kind == "sft"):
        s = run.result
        if not s:
            lines.append(f"| {run.name} | {run.seconds:.0f} | failed | | |")
            continue
        per_task = ", ".join(f"{k} {v}" for k, v in sorted(s["per_task"].items()))
        lines.append(f"| {run.name} | {run.seconds:.0f} | {s['accuracy']:.3f} ± {s['se']:.3f} | "
                     f"{s['loss']:.3f} | {per_task} |")
    copies = [r for r in runs if r.kind == "copy" and r.result]
    if copies:
        lines += ["", "| model | copies a thrice-repeated random string (copy_probe.py) |", "|---|---|"]
        lines += [f"| {r.name.removeprefix('copy_')} | {r.result['right']} of {r.result['total']} |" for r in copies]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"])
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="OMP threads per run")
    parser.add_argument("--size", default="default", help="world size")
    parser.add_argument("--pretrain", action="append", required=True, help="PRESET:LR:STEPS[:BATCH], repeatable")
    parser.add_argument("--sft-steps", default="", help="comma-separated SFT step counts (empty: no SFT)")
    parser.add_argument("--sft-lr", default="1e-3", help="comma-separated SFT learning rates")
    parser.add_argument("--sft-knowledge", action="store_true",
                        help="also score every SFT model on the knowledge test (what SFT made it forget)")
    parser.add_argument("--pretrain-variant", action="append", default=[],
                        help="LABEL=OVERRIDE[;OVERRIDE...]: one more pretraining run per --pretrain spec with these "
                        "overrides ({data} = the world directory); the plain run is made unless --no-plain-pretrain")
    parser.add_argument("--no-plain-pretrain", action="store_true")
    parser.add_argument("--copy-probe", action="store_true",
                        help="also run copy_probe.py on every pretrained and fine-tuned model")
    parser.add_argument("--sft-variant", action="append", default=[],
                        help="LABEL=OVERRIDE[;OVERRIDE...]: one more SFT run per setting with these config "
                        "overrides ({data} = the world directory); the plain run is made unless --no-plain-sft")
    parser.add_argument("--no-plain-sft", action="store_true")
    args = parser.parse_args()
    out = args.out.resolve()
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONUNBUFFERED": "1"}
    started = time.time()
    prepare(out, env, args.size)
    pretrain_variants = ([] if args.no_plain_pretrain else [("", [])]) + [parse_variant(v) for v in args.pretrain_variant]
    pretrains = [pretrain_run(spec, out, args.device, args.precision, variant)
                 for spec in args.pretrain for variant in pretrain_variants]
    sft_steps = [int(s) for s in args.sft_steps.split(",") if s]
    sft_lrs = [s for s in args.sft_lr.split(",") if s]
    done: list[Run] = []
    lock = threading.Lock()

    def finished(run: Run, read) -> None:
        # The tables are rewritten after every run, so a sweep cut short still leaves what it measured.
        if run.returncode == 0:
            try:
                run.result = read(run)
            except (OSError, KeyError, ValueError) as err:
                print(f"{run.name}: cannot read its result: {err}", flush=True)
        with lock:
            done.append(run)
            (out / "sweep.md").write_text(table(done) + "\n")
            (out / "sweep.json").write_text(json.dumps([asdict(r) for r in done], indent=1) + "\n")

    def chain(pretrain: Run) -> None:
        finished(sh(pretrain, logs, env), lambda run: {})
        if pretrain.returncode == 0:
            knowledge = sh(knowledge_run(pretrain, out, args.device), logs, env)
            finished(knowledge, lambda run: read_knowledge(logs / f"{run.name}.log"))
            if args.copy_probe:
                finished(sh(copy_probe_run(pretrain, out), logs, env), lambda run: read_copy(logs / f"{run.name}.log"))

    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(chain, pretrains))
        variants = ([] if args.no_plain_sft else [("", [])]) + [parse_variant(v) for v in args.sft_variant]
        sfts = [sft_run(p, steps, lr, out, args.device, args.precision, variant)
                for p in pretrains if p.returncode == 0 for steps in sft_steps for lr in sft_lrs
                for variant in variants]
        def sft_chain(run: Run) -> None:
            finished(sh(run, logs, env), lambda r: read_sft(out / r.name))
            if args.sft_knowledge and run.returncode == 0:
                knowledge = sh(knowledge_run(run, out, args.device, greedy=False), logs, env)
                finished(knowledge, lambda r: read_knowledge(logs / f"{r.name}.log"))
            if args.copy_probe and run.returncode == 0:
                finished(sh(copy_probe_run(run, out), logs, env), lambda r: read_copy(logs / f"{r.name}.log"))

        list(pool.map(sft_chain, sfts))
    print(table(done))
    print(f"sweep: {time.time() - started:.0f} s, tables in {out / 'sweep.md'}")


if __name__ == "__main__":
    main()
