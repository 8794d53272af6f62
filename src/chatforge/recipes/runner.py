"""Run a recipe: print the plan, run each stage that needs it into its directory, and write the report card.

Each stage runs in this process through its own `run(cfg)`, exactly as `chatforge <stage>` would.
Around it the runner keeps a marker file (`<stage>/recipe_stage.json`): written with state
`running` before the stage starts and `done` after it returns, with the fingerprint, a new run id,
the time, the peak memory and the files it wrote. A SIGKILL leaves `running`; the next run resumes
that stage (its own checkpoints) and skips every `done` one.

Before the plan is printed (and so before any stage runs, `--dry-run` included), every stage that
will run passes its preflight (`recipes/preflight.py`): the cheap checks of its config and of the
inputs no earlier stage makes, which the stage itself would make only once started.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from chatforge.errors import ChatforgeError
from chatforge.models.quiet import quiet_transformers_bars
from chatforge.recipes.hashing import FileHasher, fingerprint
from chatforge.recipes.plan import (
    CARD,
    MARKER,
    Step,
    decide,
    format_plan,
    load_recipe,
    read_marker,
    recipe_dir,
    resolve,
)
from chatforge.recipes.preflight import preflight


@dataclass
class RecipeResult:
    root: Path
    steps: list[Step]
    report: Path | None
    chat_model: str | None


def run_recipe(path: str | Path, out: str | None = None, first: str | None = None, only: str | None = None,
               dry_run: bool = False, report: bool = True, say=print) -> RecipeResult:
    recipe, _ = load_recipe(path)
    root = recipe_dir(recipe, path, out)
    name = recipe.name or Path(path).stem
    steps = resolve(recipe, path, root)  # every config validated before anything runs
    hasher = FileHasher(root / ".input_hashes.json")
    decide(steps, root, hasher, first, only)
    for warning in preflight(steps, str(path)):  # each stage's cheap checks of what it will read, before any runs
        say(f"warning: {warning}")
    say(format_plan(steps, root, name, inputs=dry_run))
    if dry_run:
        return RecipeResult(root, steps, None, chat_model(recipe, steps))
    root.mkdir(parents=True, exist_ok=True)
    with DirectoryLock(root), quiet_transformers_bars():  # no "Loading weights" bar per model load (52 in smoke)
        (root / "recipe.yaml").write_text(Path(path).read_text(encoding="utf-8"), encoding="utf-8")
        decide(steps, root, hasher, first, only)  # again under the lock: another run may have finished a stage
        todo = [s for s in steps if s.action in ("run", "rerun", "resume")]
        started = time.perf_counter()
        for number, step in enumerate(todo, 1):
            run_step(step, steps, hasher, f"[{number}/{len(todo)}]", say)
        hasher.save()
    say(f"recipe {name}: {len(todo)} of {len(steps)} steps ran in {_duration(time.perf_counter() - started)}")
    chat = chat_model(recipe, steps)  # now that the stages ran: before, only a model from outside existed
    report_path = None
    if report:
        from chatforge.recipes.card.report import write_report

        with quiet_transformers_bars():
            report_path = write_report(root, Path(path), recipe, steps)
        say(f"report card: {report_path} (and {report_path.with_suffix('.md')})")
    if chat:
        say(f"chat with the final model: chatforge serve {chat}   (then open http://127.0.0.1:8000/ in a browser)")
        say(f"  or in the terminal:       chatforge chat {chat}")
    return RecipeResult(root, steps, report_path, chat)


def report_only(path: str | Path, out: str | None = None, say=print) -> Path:
    """Write the report card of the recipe directory as it is (stages not run yet show as such)."""
    from chatforge.recipes.card.report import write_report

    recipe, _ = load_recipe(path)
    root = recipe_dir(recipe, path, out)
    report_path = write_report(root, Path(path), recipe, resolve(recipe, path, root))
    say(f"report card: {report_path} (and {report_path.with_suffix('.md')})")
    return report_path


def chat_model(recipe, steps: list[Step]) -> str | None:
    """The model the closing lines offer: `chat_model`, else the card's last model, else the last final/."""
    if recipe.chat_model:
        return recipe.chat_model
    card = next((s for s in steps if s.kind == "card"), None)
    if card is not None:  # the last column that exists (ReST-EM that kept nothing makes no model)
        models = list(card.config["models"].values())
        return next((m for m in reversed(models) if (Path(m) / "config.json").is_file()), models[-1])
    for step in reversed(steps):
        if step.kind not in ("rm", "eval", "eval-lm", "bon", "tokenizer", "world write"):
            return str(step.dir / "final")
    return None


def run_step(step: Step, steps: list[Step], hasher: FileHasher, counter: str, say=print) -> None:
    by_name = {s.name: s for s in steps}
    if step.action == "rerun" and step.dir.exists():
        shutil.rmtree(step.dir)  # decide() made sure the runner wrote it: no stale checkpoint resumes
    step.dir.mkdir(parents=True, exist_ok=True)
    inputs = {u: (read_marker(by_name[u].dir) or {}).get("run_id", "") for u in step.upstream}
    step.hashes = {str(p): hasher.path(p) for p in step.files}
    step.fingerprint = fingerprint(step.kind, step.config, inputs, step.hashes)
    previous = read_marker(step.dir) or {}
    marker = {
        "stage": step.kind, "name": step.name, "state": "running", "fingerprint": step.fingerprint,
        "config": step.config, "inputs": inputs, "files": step.hashes,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "attempts": previous.get("attempts", 0) + 1 if step.action == "resume" else 1,
    }
    _write_marker(step.dir, marker)
    say(f"{counter} {step.name} ({step.kind}): {'resuming' if step.action == 'resume' else 'start'} ({step.reason})")
    start = time.perf_counter()
    module = importlib.import_module(step.module)
    with PeakMemory() as memory, Tee(step.dir / "stage.log"):
        if step.kind == CARD:  # the card has no `out` key: it writes into its step directory
            module.run(step.cfg, step.dir)
        else:
            module.run(step.cfg)
    seconds = time.perf_counter() - start
    _release_memory()  # what the stage left behind does not count against the next one
    marker.update(
        state="done", run_id=uuid.uuid4().hex, seconds=round(seconds, 2), finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        peak_rss_bytes=memory.peak_rss, peak_cuda_bytes=memory.peak_cuda,
        outputs=sorted(p.name for p in step.dir.iterdir() if p.name not in (MARKER, "stage.log")),
    )
    _write_marker(step.dir, marker)
    mem = f", peak RSS {memory.peak_rss / 2**20:.0f} MiB" if memory.peak_rss else ""
    say(f"{counter} {step.name}: done in {_duration(seconds)}{mem}")


def _release_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _write_marker(directory: Path, marker: dict) -> None:
    tmp = directory / (MARKER + ".tmp")
    tmp.write_text(json.dumps(marker, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    tmp.replace(directory / MARKER)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s"


class DirectoryLock:
    """One `chatforge run` per recipe directory: two would write the same checkpoints and markers."""

    def __init__(self, root: Path):
        self.path = root / ".chatforge-run.lock"

    def __enter__(self) -> DirectoryLock:
        import fcntl

        self.file = self.path.open("a+")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.seek(0)
            holder = self.file.read().strip() or "?"
            self.file.close()
            raise ChatforgeError(f"another `chatforge run` (pid {holder}) is running in {self.path.parent}; wait for it or stop it") from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(str(os.getpid()))
        self.file.flush()
        return self

    def __exit__(self, *exc) -> None:
        import fcntl

        fcntl.flock(self.file, fcntl.LOCK_UN)
        self.file.close()


class PeakMemory:
    """The process's peak resident memory while a stage runs (sampled every 0.2 s from /proc, since
    ru_maxrss never goes down between stages), and the peak CUDA allocation."""

    def __init__(self, every: float = 0.2):
        self.every = every
        self.peak_rss = 0
        self.peak_cuda = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while True:
            self.peak_rss = max(self.peak_rss, current_rss())
            if self._stop.wait(self.every):
                return

    def __enter__(self) -> PeakMemory:
        import torch

        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        import torch

        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak_rss = max(self.peak_rss, current_rss())
        if torch.cuda.is_available():
            self.peak_cuda = int(torch.cuda.max_memory_allocated())


def current_rss() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Tee:
    """Copy what a stage prints to stdout into its stage.log as well (the report card shows its tail)."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> Tee:
        self.file = self.path.open("a", encoding="utf-8")
        self.stdout = sys.stdout
        sys.stdout = self
        return self

    def write(self, text: str) -> int:
        self.file.write(text)
        self.file.flush()
        return self.stdout.write(text)

    def flush(self) -> None:
        self.stdout.flush()

    def isatty(self) -> bool:
        return self.stdout.isatty()

    def fileno(self) -> int:
        return self.stdout.fileno()

    def __getattr__(self, name: str):  # encoding, errors, buffer...: the terminal's
        return getattr(self.stdout, name)

    def __exit__(self, *exc) -> None:
        sys.stdout = self.stdout
        self.file.close()
