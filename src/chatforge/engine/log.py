"""Metrics to `metrics.jsonl` (plus optional TensorBoard / W&B), and a progress bar with tokens/s and ETA."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from chatforge.errors import ChatforgeError


class MetricsLogger:
    """One JSON object per logged step. Only rank 0 writes."""

    def __init__(self, path: Path, enabled: bool, report_to: list[str], run_name: str, config: dict[str, Any], resume_step: int):
        self.path = path
        self.enabled = enabled
        self._fh = None
        self._tb = None
        self._wandb = None
        if not enabled:
            return
        if resume_step > 0 and path.exists():
            self._truncate_after(resume_step)
        elif path.exists():
            path.unlink()
        self._fh = path.open("a", encoding="utf-8")
        if "tensorboard" in report_to:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ChatforgeError("report_to: tensorboard needs `pip install tensorboard`") from None
            self._tb = SummaryWriter(log_dir=str(path.parent / "tensorboard"))
        if "wandb" in report_to:
            try:
                import wandb
            except ImportError:
                raise ChatforgeError("report_to: wandb needs `pip install wandb`") from None
            self._wandb = wandb.init(project="chatforge", name=run_name, config=config, dir=str(path.parent), resume="allow")

    def _truncate_after(self, step: int) -> None:
        """A resumed run rewrites the steps after its checkpoint, so drop what the crashed run logged."""
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    kept.append(line)
            except json.JSONDecodeError:
                continue  # a line cut by the crash
        self.path.write_text("".join(k + "\n" for k in kept), encoding="utf-8")

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": step, **{k: _clean(v) for k, v in metrics.items()}}
        self._fh.write(json.dumps(row) + "\n")
        self._fh.flush()
        if self._tb is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self._tb.add_scalar(key, value, step)
        if self._wandb is not None:
            self._wandb.log(metrics, step=step)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class Progress:
    """A tqdm bar over optimizer steps showing loss, tokens/s and ETA; silent when disabled."""

    def __init__(self, total: int, initial: int, enabled: bool, desc: str):
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True,
                file=sys.stderr, mininterval=1.0,
            )

    def update(self, loss: float, tokens_per_s: float, lr: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"loss {loss:.4f} | {tokens_per_s:,.0f} tok/s | lr {lr:.2e}", refresh=False)
            self.bar.update(1)

    def write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Throughput:
    """Tokens/s over a sliding window of recent steps (the first steps include warm-up cost)."""

    def __init__(self, window: int = 20):
        self.window = window
        self.samples: list[tuple[float, int]] = []

    def add(self, seconds: float, tokens: int) -> float:
        self.samples.append((seconds, tokens))
        self.samples = self.samples[-self.window :]
        total_s = sum(s for s, _ in self.samples)
        return sum(t for _, t in self.samples) / total_s if total_s > 0 else 0.0


def now() -> float:
    return time.perf_counter()
