"""Read a recipe, resolve every stage's config, and decide what runs, before anything runs.

Resolution validates every stage's config through the same loader as `chatforge <stage>`, so a
typo, a wrong type or a broken `${stage.key}` reference fails at once, naming the stage and key.
The decision per stage (`Step.action`):

    run      never ran (no marker in its directory)
    resume   interrupted with the same fingerprint: the stage resumes from its own checkpoints
    skip     finished, outputs present, fingerprint unchanged (config, input files, input stages' run ids)
    rerun    finished or interrupted under another fingerprint, or forced (--from/--only): its
             directory is cleared first, so no stale checkpoint is resumed
    keep     not selected (--from / --only) and finished: its outputs are used as they are
"""

from __future__ import annotations

import difflib
import importlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from chatforge.config.load import _set_dotted, deep_merge, read_yaml, validate_config
from chatforge.errors import ConfigError
from chatforge.recipes.hashing import OUTPUT_KEYS, FileHasher, changed_keys, fingerprint, input_paths
from chatforge.recipes.references import (
    dotted_get,
    referenced_values,
    references_in,
    split_reference,
    substitute,
)
from chatforge.recipes.spec import NOT_RECIPE_STAGES, Recipe

MARKER = "recipe_stage.json"
CARD = "card"  # the report card's measurements: the plan's last step, after the stages


@dataclass
class Step:
    name: str
    kind: str  # a STAGES key, or "card"
    dir: Path
    cfg: BaseModel
    config: dict[str, Any]  # the resolved config as JSON
    upstream: list[str]
    files: list[Path]
    action: str = "run"
    reason: str = ""
    fingerprint: str | None = None
    hashes: dict[str, str] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)  # key -> resolved value, for every key the recipe gave a reference

    @property
    def module(self) -> str:
        from chatforge.cli import STAGES

        return STAGES[self.kind][0] if self.kind in STAGES else "chatforge.recipes.card.measure"


def load_recipe(path: str | Path) -> tuple[Recipe, dict]:
    path = Path(path)
    data = read_yaml(path)
    return validate_config(Recipe, data, source=str(path)), data


def recipe_dir(recipe: Recipe, path: str | Path, out: str | None = None) -> Path:
    name = recipe.name or Path(path).stem
    return Path(out or recipe.out or f"runs/{name}")


def read_marker(directory: Path) -> dict | None:
    try:
        return json.loads((directory / MARKER).read_text())
    except (OSError, ValueError):
        return None


def resolve(recipe: Recipe, path: str | Path, root: Path) -> list[Step]:
    """Every stage's validated config (references substituted, `out` set), in order; then the card."""
    from chatforge.cli import STAGES

    names = list(recipe.stages)
    steps: dict[str, Step] = {}
    for index, (name, entry) in enumerate(recipe.stages.items()):
        where = f"{path}: stage {name!r}"
        if name in (CARD, "recipe", "env") or "." in name or "/" in name:
            raise ConfigError(f"{where}: {name!r} cannot name a stage (reserved, or has '.' or '/')")
        kind = entry.stage or name
        if kind not in STAGES or kind in NOT_RECIPE_STAGES:
            valid = [s for s in STAGES if s not in NOT_RECIPE_STAGES]
            guess = difflib.get_close_matches(kind, valid, n=1)
            hint = f"; did you mean {guess[0]!r}?" if guess else ""
            raise ConfigError(f"{where}: unknown stage {kind!r}{hint} (stages: {', '.join(valid)}; set `stage:` when the name differs)")
        module = importlib.import_module(STAGES[kind][0])
        if not hasattr(module, "Config"):
            raise ConfigError(f"{where}: stage {kind!r} has no config to run from a recipe")
        data = _entry_data(entry.config, entry.overrides, where)
        if isinstance(entry.config, str):
            data.pop("out", None)  # a config file made for `chatforge <stage>` names its own run directory
        if "out" in data:
            raise ConfigError(f"{where}: remove `out`: the recipe sets it ({root / name})")
        lookup = _lookup(steps, names[index + 1 :], root, name)
        raw, data = data, _substitute(data, lookup, where)
        directory = root / name
        if "out" in module.Config.model_fields:
            data["out"] = _out_value(module.Config, directory)
        cfg = validate_config(module.Config, data, source=where)
        config = cfg.model_dump(mode="json")
        upstream = _upstream(entry.config, entry.overrides)
        steps[name] = Step(name, kind, directory, cfg, config, upstream, input_paths(config, root),
                           inputs=_inputs(raw, data))
    out = list(steps.values())
    if recipe.card is not None:
        where = f"{path}: card"
        raw = recipe.card.model_dump(mode="json", exclude_unset=True)
        data = _substitute(raw, _lookup(steps, [], root, CARD), where)
        from chatforge.recipes.card.config import CardConfig

        cfg = validate_config(CardConfig, data, source=where)
        config = cfg.model_dump(mode="json")
        upstream = [r for r in _upstream(recipe.card.model_dump(mode="json"), {})]
        out.append(Step(CARD, CARD, root / CARD, cfg, config, upstream, input_paths(config, root), inputs=_inputs(raw, data)))
    return out


def _inputs(raw: dict, resolved: dict) -> dict[str, Any]:
    """What the stage reads through references (its own output keys left out: `cache_dir` is written)."""
    return {k: v for k, v in referenced_values(raw, resolved).items() if k.rsplit(".", 1)[-1] not in OUTPUT_KEYS}


def _substitute(data: dict, lookup, where: str) -> dict:
    try:
        return substitute(data, lookup)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _entry_data(config: str | dict, overrides: dict[str, Any], where: str) -> dict[str, Any]:
    if isinstance(config, str):
        file = Path(config)
        if not file.is_file():
            raise ConfigError(f"{where}: config file not found: {config} (paths are relative to the current directory)")
        data = read_yaml(file)
    else:
        data = dict(config)
    over: dict[str, Any] = {}
    for key, value in overrides.items():
        _set_dotted(over, str(key), value)
    return deep_merge(data, over)


def _upstream(config: Any, overrides: Any) -> list[str]:
    names: list[str] = []
    for ref in references_in(config) + references_in(overrides):
        stage = ref.split(".", 1)[0]
        if stage not in ("recipe", "env") and stage not in names:
            names.append(stage)
    return names


def _out_value(config_cls: type[BaseModel], directory: Path) -> str:
    """The stage's `out`: its directory, or a file in it when the stage's output is one file (eval.json)."""
    field_info = config_cls.model_fields["out"]
    default = None if field_info.is_required() else field_info.get_default(call_default_factory=True)
    if default is not None and Path(str(default)).suffix:
        return str(directory / Path(str(default)).name)
    return str(directory)


def _lookup(done: dict[str, Step], later: list[str], root: Path, current: str):
    def lookup(ref: str) -> Any:
        stage, keys = split_reference(ref)
        if stage == "recipe":
            if keys == ["dir"]:
                return str(root)
            raise ConfigError(f"reference ${{{ref}}}: the recipe has only ${{recipe.dir}}")
        if stage == "env":  # ${env.NAME}: a setting the user gives per machine (a local model directory)
            value = os.environ.get(".".join(keys))
            if not value:
                raise ConfigError(f"reference ${{{ref}}}: environment variable {'.'.join(keys)} is not set")
            return value
        if stage == current:
            raise ConfigError(f"reference ${{{ref}}}: a stage cannot refer to itself")
        if stage not in done:
            if stage in later:
                raise ConfigError(f"reference ${{{ref}}}: stage {stage!r} runs later; a stage can only read earlier stages")
            guess = difflib.get_close_matches(stage, list(done), n=1)
            hint = f"; did you mean {guess[0]!r}?" if guess else ""
            raise ConfigError(f"reference ${{{ref}}}: no stage {stage!r} before this one{hint} (earlier: {', '.join(done) or 'none'})")
        step = done[stage]
        key = keys[0]
        if key == "dir" and len(keys) == 1:
            return str(step.dir)
        if key == "final" and len(keys) == 1:
            return str(step.dir / "final")
        if key == "out" and len(keys) == 1:
            return step.config.get("out", str(step.dir))
        if key == "config" and len(keys) > 1:
            return dotted_get(step.config, keys[1:], ref)
        raise ConfigError(f"reference ${{{ref}}}: unknown key {'.'.join(keys)!r} (use dir, final, out or config.KEY)")

    return lookup


def decide(steps: list[Step], root: Path, hasher: FileHasher, first: str | None = None, only: str | None = None) -> None:
    """Set each step's action and reason (and, where it can be known now, its fingerprint)."""
    names = [s.name for s in steps]
    for flag, value in (("--from", first), ("--only", only)):
        if value is not None and value not in names:
            guess = difflib.get_close_matches(value, names, n=1)
            hint = f"; did you mean {guess[0]!r}?" if guess else ""
            raise ConfigError(f"{flag} {value}: no such stage{hint} (stages: {', '.join(names)})")
    start = names.index(first) if first else 0
    by_name = {s.name: s for s in steps}
    fresh: set[str] = set()  # stages that will produce new outputs (run / rerun): their run ids change
    for i, step in enumerate(steps):
        marker = read_marker(step.dir)
        selected = (only is None or step.name == only) and i >= start
        forced = (only is not None and step.name == only) or (first is not None and i >= start)
        if step.dir.exists() and marker is None and any(step.dir.iterdir()):
            raise ConfigError(f"{step.dir} exists but was not written by `chatforge run` (no {MARKER}); move it away")
        if not selected:
            if marker is None or marker.get("state") != "done":
                needed = only is not None and step.name in _ancestors(by_name[only], by_name)
                if needed or (first is not None and i < start):
                    why = f"--only {only}" if only else f"--from {first}"
                    raise ConfigError(f"{why}: stage {step.name!r} before it has not finished; run the recipe without {why.split()[0]} first")
            step.action, step.reason = "keep", f"not selected ({'--only ' + only if only else '--from ' + str(first)})"
            continue
        upstream_fresh = [u for u in step.upstream if u in fresh]
        if upstream_fresh:
            step.action = "rerun" if marker else "run"
            step.reason = f"input {', '.join(upstream_fresh)} runs" if marker else "not run yet"
            fresh.add(step.name)
            continue
        step.hashes = {str(p): hasher.path(p) for p in step.files}
        inputs = {u: (read_marker(by_name[u].dir) or {}).get("run_id", "") for u in step.upstream}
        step.fingerprint = fingerprint(step.kind, step.config, inputs, step.hashes)
        same = marker is not None and marker.get("fingerprint") == step.fingerprint
        if marker is None:
            step.action, step.reason = "run", "not run yet"
        elif same and marker.get("state") == "running":
            step.action, step.reason = "resume", "interrupted: resumes from its checkpoints" + (" (forced)" if forced else "")
        elif same and not forced and _outputs_present(step, marker):
            step.action, step.reason = "skip", "finished; config and inputs unchanged"
        else:
            step.action = "rerun"
            step.reason = "forced" if forced and same else _why_changed(step, marker, inputs)
        if step.action != "skip":
            fresh.add(step.name)


def _ancestors(step: Step, by_name: dict[str, Step]) -> set[str]:
    seen: set[str] = set()
    todo = list(step.upstream)
    while todo:
        name = todo.pop()
        if name not in seen and name in by_name:
            seen.add(name)
            todo += by_name[name].upstream
    return seen


def _outputs_present(step: Step, marker: dict) -> bool:
    return all((step.dir / name).exists() for name in marker.get("outputs", []))


def _why_changed(step: Step, marker: dict, inputs: dict[str, str]) -> str:
    if marker.get("state") == "done" and not _outputs_present(step, marker):
        return "outputs missing"
    keys = changed_keys(marker.get("config", {}), step.config)
    if keys:
        shown = ", ".join(keys[:3]) + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")
        return f"config changed: {shown}"
    changed_inputs = [u for u, rid in inputs.items() if marker.get("inputs", {}).get(u) != rid]
    if changed_inputs:
        return f"input {', '.join(changed_inputs)} ran again"
    files = [p for p, h in step.hashes.items() if marker.get("files", {}).get(p) != h]
    if files:
        return f"input file changed: {', '.join(files[:2])}"
    return "fingerprint changed"


def _made_by(value: Any, steps: list[Step]) -> str:
    """` (from STAGE)` when `value` is a path inside an earlier stage's directory."""
    if isinstance(value, str) and value:
        path = Path(value).resolve()
        for step in steps:
            if path.is_relative_to(step.dir.resolve()):
                return f"  (from {step.name})"
    return ""


def format_plan(steps: list[Step], root: Path, name: str, inputs: bool = False) -> str:
    """A line per step: its action and why; with `inputs`, below it what it reads: each key the recipe
    filled by a reference, resolved, and each file from outside the recipe directory."""
    width = max(len(s.name) for s in steps)
    kinds = max(len(s.kind) for s in steps)
    lines = [f"recipe {name} -> {root}/ ({len(steps)} steps)"]
    for i, s in enumerate(steps, 1):
        lines.append(f"  {i:>2}. {s.name:<{width}}  {s.kind:<{kinds}}  {s.action:<6}  {s.reason}")
        if inputs:
            indent = " " * 8
            shown = {str(v) for v in s.inputs.values()}
            lines += [f"{indent}{key} = {value}{_made_by(value, steps)}" for key, value in s.inputs.items()]
            lines += [f"{indent}reads {p} (outside the recipe)" for p in map(str, s.files) if p not in shown]
    return "\n".join(lines)
