"""`chatforge <stage> [CONFIG.yaml] [key.sub=value ...] [--print-config] [--help]`.

Every stage module exposes `Config` (a typed pydantic model) and `run(cfg)`. A module may instead
expose `main(argv) -> int` when its command line is not a config (none do yet). Stages are imported
lazily so `chatforge --help` stays fast.
"""

from __future__ import annotations

import importlib
import os
import sys
import textwrap
from types import ModuleType

from chatforge.errors import ChatforgeError

# name -> (module, one-line summary). Multi-word names are subcommands ("tokenizer extend").
STAGES: dict[str, tuple[str, str]] = {
    "run": ("chatforge.stages.run", "run a recipe: stages in order into one directory, skip finished ones, resume, report card"),
    "doctor": ("chatforge.doctor", "print versions, hardware and drift from requirements.lock, with the fix (for bug reports)"),
    "demo": ("chatforge.stages.demo", "run the main job on the built-in default (tokenizer, pretrain, eval)"),
    "tokenizer": ("chatforge.stages.tokenizer", "train a byte-level BPE or WordPiece tokenizer"),
    "tokenizer extend": ("chatforge.stages.tokenizer_extend", "add domain tokens to a BPE tokenizer (old text unchanged), resize a model"),
    "pretrain": ("chatforge.stages.pretrain", "pretrain or continue pretraining a causal LM"),
    "sft": ("chatforge.stages.sft", "supervised fine-tuning: chat conversations, answer tokens only (full, LoRA, freeze)"),
    "rm": ("chatforge.stages.rm", "reward model: scalar head on a causal LM, Bradley-Terry or K-wise ranking loss"),
    "dpo": ("chatforge.stages.dpo", "direct preference optimisation: DPO, conservative, hinge, IPO, reference-free, +NLL"),
    "rest": ("chatforge.stages.rest", "self-training on verified samples: ReST-EM or rejection-sampling fine-tuning"),
    "ppo": ("chatforge.stages.ppo", "PPO with a critic: rollouts, scorers, per-token KL to a reference, GAE, PPO-ptx"),
    "grpo": ("chatforge.stages.grpo", "critic-free RL: GRPO (Dr. GRPO options) or RLOO (loss.advantage=rloo), KL to a reference"),
    "online-dpo": ("chatforge.stages.online_dpo", "online DPO: each round samples pairs from the policy, a scorer labels them"),
    "bon": ("chatforge.stages.bon", "best-of-N: sample N_max once, score with a proxy, gold reward and KL for N = 1..N_max"),
    "eval": ("chatforge.stages.eval", "evaluate models side by side: ppl/bpb, multiple choice, pass@k, reward accuracy, LLM judge"),
    "eval-lm": ("chatforge.stages.eval_lm", "perplexity and bits-per-byte of a model on held-out text"),
    "serve": ("chatforge.stages.serve", "OpenAI-compatible HTTP server (chat, completions, streaming) for a model dir"),
    "chat": ("chatforge.stages.chat", "terminal chat with a model dir: history, system prompt, sampling settings"),
    "schedule": ("chatforge.stages.schedule", "print or plot (--plot out.png) a learning-rate schedule"),
    "clean": ("chatforge.stages.clean", "clean web text (HTML, WARC, JSONL, Parquet) into labelled pretraining shards, on datatrove"),
    "synth": ("chatforge.stages.synth", "self-instruct: generate, filter and dedup instructions from seed tasks with any model"),
    "world write": ("chatforge.world.stage", "write the built-in task world's files (facts, tasks, preferences, web pages)"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from chatforge import __version__

        print(f"chatforge {__version__}")
        return 0
    name = _match_stage(argv)
    if name is None:
        import difflib

        guess = difflib.get_close_matches(argv[0], [s.split()[0] for s in STAGES], n=1)
        hint = f" Did you mean {guess[0]!r}?" if guess else ""
        print(f"error: unknown stage {argv[0]!r}.{hint} Run `chatforge --help` for the list.", file=sys.stderr)
        return 2
    rest = argv[len(name.split()) :]
    try:
        from chatforge.models.quiet import quiet_transformers_bars

        module = importlib.import_module(STAGES[name][0])
        with quiet_transformers_bars():  # transformers' bar per model load or save; the stage's own bars stay
            if hasattr(module, "main"):
                return int(module.main(rest) or 0)
            return run_config_stage(name, module, rest)
    except ChatforgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if os.environ.get("CHATFORGE_DEBUG"):
            raise
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`chatforge ... | head`): stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def _match_stage(argv: list[str]) -> str | None:
    for width in (2, 1):
        candidate = " ".join(argv[:width])
        if len(argv) >= width and candidate in STAGES:
            return candidate
    return None


def _usage() -> str:
    width = max(len(n) for n in STAGES)
    lines = [
        "usage: chatforge <stage> [CONFIG.yaml] [key.sub=value ...] [--print-config] [--help]",
        "",
        "stages:",
    ]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in STAGES.items()]
    lines += ["", "Run `chatforge <stage> --help` for a stage's config keys."]
    return "\n".join(lines)


def split_args(rest: list[str]) -> tuple[str | None, list[str], set[str]]:
    """Separate the optional config path, the overrides, and the bare flags (--help, --print-config)."""
    path: str | None = None
    overrides: list[str] = []
    flags: set[str] = set()
    bare_flags = {"--help", "-h", "--print-config"}
    i = 0
    while i < len(rest):
        arg = rest[i]
        if arg in bare_flags:
            flags.add(arg)
        elif arg.startswith("--") and "=" not in arg:
            if i + 1 >= len(rest) or rest[i + 1].startswith("--"):
                raise ChatforgeError(f"option {arg} needs a value (write {arg}=VALUE or {arg[2:]}=VALUE)")
            overrides.append(f"{arg[2:]}={rest[i + 1]}")
            i += 1
        elif "=" in arg:
            overrides.append(arg.removeprefix("--"))
        elif path is None:
            path = arg
        else:
            raise ChatforgeError(f"unexpected argument {arg!r}: give one CONFIG.yaml and key=value overrides")
        i += 1
    return path, overrides, flags


def run_config_stage(name: str, module: ModuleType, rest: list[str]) -> int:
    from chatforge.config.load import describe_fields, dump_config, load_config

    path, overrides, flags = split_args(rest)
    if flags & {"--help", "-h"}:
        print(stage_help(name, module, describe_fields))
        return 0
    cfg = load_config(module.Config, path, overrides)
    if "--print-config" in flags:
        print(dump_config(cfg), end="")
        return 0
    module.run(cfg)
    return 0


def stage_help(name: str, module: ModuleType, describe_fields) -> str:
    doc = textwrap.dedent(module.__doc__ or STAGES[name][1]).strip()
    rows = describe_fields(module.Config)
    width = min(max((len(k) for k, _, _ in rows), default=10), 36)
    lines = [f"usage: chatforge {name} [CONFIG.yaml] [key.sub=value ...] [--print-config]", "", doc, "", "config keys:"]
    for key, kind, desc in rows:
        lines.append(f"  {key:<{width}}  {desc}" + (f"  [{kind}]" if kind else ""))
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
