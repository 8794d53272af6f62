"""Probes inside a training run, through the engine's `evaluate` callable (no engine changes).

`ProbeHook(cfg, tokenizer, run_dir)` wraps the stage's own evaluate function. The engine is given a
copy of the train config whose `eval_every` is gcd(the stage's eval_every, dynamics.every) and with
`eval_at_start` on; at each call the hook measures the probes when the step is a multiple of
`dynamics.every` (or 0, or the last step) and runs the stage's evaluation only where the stage's own
config would have (its eval_every, eval_at_start, the last step). The hook reads the step from the
engine it is attached to (`hook.attach(engine)` right after the engine is built).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch

from chatforge.dynamics.config import DynamicsConfig
from chatforge.dynamics.measure import measure
from chatforge.dynamics.probes import encode_probes
from chatforge.dynamics.report import append_row, detect_squeezing, plot_dynamics, read_rows


class ProbeHook:
    def __init__(self, cfg: DynamicsConfig, tokenizer, out_dir: Path, write: bool = True, say=print):
        self.cfg, self.tokenizer, self.write, self.say = cfg, tokenizer, write, say
        self.path = Path(out_dir) / "dynamics.jsonl"
        self.png = Path(out_dir) / "report" / "dynamics.png"
        self.probes = encode_probes(cfg, tokenizer)
        self.engine = None
        self.stage_evaluate: Callable | None = None
        self.stage_every, self.stage_at_start, self.max_steps = 0, False, 0
        say(f"dynamics: {len(self.probes)} probes x {len(self.probes.kinds) + self.probes.greedy} kinds every "
            f"{cfg.every} steps -> {self.path}" + (f" (dropped {self.probes.dropped})" if self.probes.dropped else ""))

    def wrap(self, evaluate: Callable | None, train):
        """(the evaluate callable and the train config to give the engine)."""
        self.stage_evaluate = evaluate
        self.stage_every, self.stage_at_start, self.max_steps = train.eval_every, train.eval_at_start, train.max_steps
        every = math.gcd(train.eval_every, self.cfg.every) if evaluate is not None and train.eval_every else self.cfg.every
        return self, train.model_copy(update={"eval_every": every, "eval_at_start": True})

    def attach(self, engine) -> None:
        self.engine = engine

    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        step = self.engine.step
        last = step == self.max_steps
        metrics = {}
        if self.stage_evaluate is not None and (
            (step == 0 and self.stage_at_start) or (step > 0 and self.stage_every and step % self.stage_every == 0) or last
        ):
            metrics = self.stage_evaluate(model)
        if step % self.cfg.every == 0 or last:
            row = measure(model, self.tokenizer, self.probes, self.cfg.batch_size, self.cfg.greedy_max_new_tokens)
            if self.write:
                append_row(self.path, step, row)
            self.say(
                f"dynamics step {step}: " + ", ".join(
                    f"{k.removeprefix('logp/')} {row[k]:.2f}" for k in ("logp/chosen", "logp/rejected", "logp/greedy") if k in row
                ) + (f", argmax mass {row['argmax_mass/chosen']:.3f}" if "argmax_mass/chosen" in row else "")
            )
        return metrics

    def finish(self, title: str) -> dict | None:
        """The squeezing verdict for summary.json, and report/dynamics.png (main process)."""
        if not self.write or not self.path.exists():
            return None
        rows = read_rows(self.path)
        plot_dynamics(self.path, self.png, title)
        verdict = detect_squeezing(rows, self.cfg.squeeze_drop, self.cfg.squeeze_rise)
        self.say(f"dynamics: squeezing {'YES' if verdict['squeezing'] else 'no'} ({verdict.get('reason')}); plot {self.png}")
        return {
            "file": str(self.path), "plot": str(self.png), "steps": [r["step"] for r in rows], "probes": len(self.probes),
            "notes": self.probes.notes, "squeezing": verdict,
            "first": {k: v for k, v in rows[0].items() if k.startswith(("logp/", "argmax", "greedy/"))},
            "last": {k: v for k, v in rows[-1].items() if k.startswith(("logp/", "argmax", "greedy/"))},
        }
