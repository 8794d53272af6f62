"""`${stage.key}` references between the stages of a recipe: finding them and substituting them.

A recipe names an earlier stage's outputs instead of spelling out paths:

    ${sft.final}                 the sft stage's final/ model directory
    ${world.dir}/verifiable/...  the world stage's directory, inside a longer string
    ${pretrain.out}              whatever the pretrain stage's `out` is (a directory, or eval.json)
    ${pretrain.config.data.seq_len}   a value of an earlier stage's resolved config (keeps its type
                                      when it is the whole string)
    ${recipe.dir}                the recipe directory itself
    ${env.NAME}                  the environment variable NAME (an error when unset), for what
                                 differs per machine, such as a local model directory

Everything here is pure: the runner supplies what each name resolves to.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from chatforge.errors import ConfigError

REFERENCE = re.compile(r"\$\{([^}]*)\}")


def references_in(value: Any) -> list[str]:
    """Every `${...}` body inside `value` (nested dicts and lists), in order of appearance."""
    if isinstance(value, str):
        return [m.group(1).strip() for m in REFERENCE.finditer(value)]
    if isinstance(value, dict):
        return [r for v in value.values() for r in references_in(v)]
    if isinstance(value, (list, tuple)):
        return [r for v in value for r in references_in(v)]
    return []


def substitute(value: Any, lookup: Callable[[str], Any], where: str = "") -> Any:
    """`value` with every `${ref}` replaced by `lookup(ref)`.

    A string that is exactly one reference takes the looked-up value as it is (so a number stays a
    number); a reference inside a longer string is formatted into it. `lookup` raises ConfigError
    for an unknown reference; `where` (the key path) is added to that message."""
    if isinstance(value, str):
        whole = REFERENCE.fullmatch(value.strip())
        try:
            if whole:
                return lookup(whole.group(1).strip())
            return REFERENCE.sub(lambda m: str(lookup(m.group(1).strip())), value)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}" if where else str(exc)) from None
    if isinstance(value, dict):
        return {k: substitute(v, lookup, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, lookup, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def split_reference(ref: str) -> tuple[str, list[str]]:
    """`"sft.config.train.max_steps"` -> `("sft", ["config", "train", "max_steps"])`."""
    parts = [p for p in ref.split(".")]
    if len(parts) < 2 or not all(parts):
        raise ConfigError(f"reference ${{{ref}}} is not of the form ${{stage.key}} (e.g. ${{sft.final}})")
    return parts[0], parts[1:]


def dotted_get(tree: Any, keys: list[str], ref: str) -> Any:
    node = tree
    for i, key in enumerate(keys):
        if not isinstance(node, dict) or key not in node:
            done = ".".join(keys[:i]) or "config"
            valid = ", ".join(sorted(node)) if isinstance(node, dict) else "(not a section)"
            raise ConfigError(f"reference ${{{ref}}}: {done} has no key {key!r} (keys: {valid})")
        node = node[key]
    return node


def referenced_values(raw: Any, resolved: Any, where: str = "") -> dict[str, Any]:
    """{dotted key: resolved value} of every value of `raw` that holds a reference, read at the same
    place of `resolved` (the substituted tree): what a stage takes from earlier stages and the machine."""
    if isinstance(raw, str):
        return {where or "(value)": resolved} if references_in(raw) else {}
    out: dict[str, Any] = {}
    if isinstance(raw, dict) and isinstance(resolved, dict):
        for key, value in raw.items():
            if key in resolved:
                out.update(referenced_values(value, resolved[key], f"{where}.{key}" if where else str(key)))
    elif isinstance(raw, list) and isinstance(resolved, list):
        for i, (value, new) in enumerate(zip(raw, resolved)):
            out.update(referenced_values(value, new, f"{where}[{i}]"))
    return out
