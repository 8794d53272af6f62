"""What an online-RL run shows while it trains: per-rollout statistics, sample tables, early warnings.

Every rollout batch adds one row to `OUT/rollouts.jsonl` (proxy and gold reward, each scorer
component, KL to the reference, entropy, response length, β, generation tokens/s). Every
`samples_every` batches, a table of `samples_shown` rollouts (prompt, response, each reward, KL)
goes to `OUT/samples.md`. The early warnings compare the last `window` batches with the `window`
before them (or with the first `window` of the run) and are printed and written to
`OUT/warnings.jsonl` when they start, not found afterwards:

- over-optimisation: the proxy reward rises while the gold reward falls;
- length drift: the mean response length moved by more than `length_drift` of its start;
- entropy collapse: the mean token entropy fell below `entropy_floor` of its start.

Everything lives in `state_dict()`, and the files are rewritten from it, so a resumed run's files
hold exactly the rows of an uninterrupted one.
"""

from __future__ import annotations

import json
from pathlib import Path

from chatforge.rl.config import DiagnosticsConfig


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def early_warnings(history: list[dict], cfg: DiagnosticsConfig) -> dict[str, str]:
    """kind -> message for each condition that holds at the end of `history` (see module docstring)."""
    w = cfg.window
    out: dict[str, str] = {}
    if len(history) < 2 * w:
        return out
    recent, before, first = history[-w:], history[-2 * w : -w], history[:w]

    def avg(rows, key):
        return _mean([r[key] for r in rows])

    proxy_up = avg(recent, "proxy") - avg(before, "proxy")
    gold_down = avg(before, "gold") - avg(recent, "gold")
    if proxy_up > 0 and gold_down > 0:
        out["over_optimisation"] = (
            f"proxy reward rising (+{proxy_up:.3f}) while gold falls (-{gold_down:.3f}) over the last {w} rollout batches"
        )
    start_len, now_len = avg(first, "length"), avg(recent, "length")
    if start_len > 0 and abs(now_len / start_len - 1.0) > cfg.length_drift:
        out["length_drift"] = f"mean response length {start_len:.1f} -> {now_len:.1f} tokens"
    start_ent, now_ent = avg(first, "entropy"), avg(recent, "entropy")
    if start_ent > 0 and now_ent < cfg.entropy_floor * start_ent:
        out["entropy_collapse"] = f"mean token entropy {start_ent:.3f} -> {now_ent:.3f} nats"
    return out


class RolloutLog:
    def __init__(self, out_dir: Path, cfg: DiagnosticsConfig, say=print, write: bool = True):
        self.out_dir, self.cfg, self.say, self.write = Path(out_dir), cfg, say, write
        self.history: list[dict] = []
        self.tables: list[dict] = []  # {"rollout": i, "rows": [...]}
        self.warnings: list[dict] = []  # {"rollout": i, "kind": k, "message": m}
        self.active: set[str] = set()

    def add(self, stats: dict, samples: list[dict]) -> None:
        self.history.append(stats)
        index = stats["rollout"]
        if self.cfg.samples_every and index % self.cfg.samples_every == 0:
            self.tables.append({"rollout": index, "rows": samples[: self.cfg.samples_shown]})
        now = early_warnings(self.history, self.cfg)
        for kind, message in now.items():
            if kind not in self.active:  # say it when it starts
                self.warnings.append({"rollout": index, "kind": kind, "message": message})
                self.say(f"WARNING rollout {index}: {kind}: {message}")
        self.active = set(now)
        self.flush()

    def flush(self) -> None:
        if not self.write:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        _write_lines(self.out_dir / "rollouts.jsonl", [json.dumps(r) for r in self.history])
        _write_lines(self.out_dir / "warnings.jsonl", [json.dumps(w) for w in self.warnings])
        (self.out_dir / "samples.md").write_text("\n".join(_table(t) for t in self.tables), encoding="utf-8")

    def state_dict(self) -> dict:
        return {
            "history": [dict(r) for r in self.history], "tables": list(self.tables),
            "warnings": list(self.warnings), "active": sorted(self.active),
        }

    def load_state_dict(self, state: dict) -> None:
        self.history = [dict(r) for r in state["history"]]
        self.tables, self.warnings = list(state["tables"]), list(state["warnings"])
        self.active = set(state["active"])
        self.flush()


def _write_lines(path: Path, lines: list[str]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    tmp.replace(path)


def _cell(text) -> str:
    if isinstance(text, float):
        return f"{text:.3f}"
    return str(text).replace("|", "\\|").replace("\n", " ⏎ ")[:160]


def _table(table: dict) -> str:
    rows = table["rows"]
    if not rows:
        return ""
    keys = list(rows[0])
    lines = [f"### rollout batch {table['rollout']}", "", "| " + " | ".join(keys) + " |", "|---" * len(keys) + "|"]
    lines += ["| " + " | ".join(_cell(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def plot_rollouts(history: list[dict], path: Path, title: str) -> None:
    """Proxy vs gold reward, KL, entropy, response length and generation speed per rollout batch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    x = [r["rollout"] for r in history]
    panels = [
        ("reward", [("proxy", "proxy"), ("gold", "gold")] + [(k, k) for k in history[0] if k.startswith("component/")]),
        ("KL to reference (nats / response)", [("kl", "kl")]),
        ("β", [("beta", "beta")]),
        ("entropy (nats / token)", [("entropy", "entropy")]),
        ("response length (tokens)", [("length", "length")]),
        ("generation tokens/s", [("gen_tokens_per_s", "gen tokens/s")]),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for ax, (label, series) in zip(axes.flat, panels):
        for key, name in series:
            ax.plot(x, [r.get(key, float("nan")) for r in history], label=name)
        ax.set_xlabel("rollout batch")
        ax.set_ylabel(label)
        if len(series) > 1:
            ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
