"""Every YAML under examples/ loads and validates against its stage's config; every recipe resolves.

A config that drifts from its stage (a renamed field, a removed option, a wrong type) fails here, not
when a reader first runs it. A new example must be listed in STAGE_OF (or NOT_CONFIGS with why), so
no file is left unchecked.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from chatforge.cli import STAGES
from chatforge.config.load import load_config

ROOT = Path(__file__).resolve().parents[1]

# examples/<path> -> the stage whose Config it is; a directory entry (ending in "/") covers its files
# not listed on their own.
STAGE_OF = {
    "bon/": "bon",
    "clean/": "clean",
    "clean/clean_vs_raw/pretrain_clean.yaml": "pretrain",
    "clean/clean_vs_raw/pretrain_raw.yaml": "pretrain",
    "clean/clean_vs_raw/tokenizer.yaml": "tokenizer",
    "clean/loop/pretrain1.yaml": "pretrain",
    "continual/": "pretrain",
    "continual/tokenizer.yaml": "tokenizer",
    "dpo/": "dpo",
    "dynamics/dpo_after_both.yaml": "dpo",
    "dynamics/dpo_after_chosen.yaml": "dpo",
    "dynamics/dpo_plain.yaml": "dpo",
    "dynamics/sft_both.yaml": "sft",
    "dynamics/sft_chosen.yaml": "sft",
    "eval/": "eval",
    "gpu/pretrain_llama_125m.yaml": "pretrain",
    "rest/": "rest",
    "rl/world_grpo.yaml": "grpo",
    "rl/world_online_dpo.yaml": "online-dpo",
    "rl/world_ppo.yaml": "ppo",
    "rl/world_letters_grpo.yaml": "grpo",
    "rl/world_letters_online_dpo.yaml": "online-dpo",
    "rl/world_letters_ppo.yaml": "ppo",
    "rl/world_spelled_arithmetic_grpo.yaml": "grpo",
    "rm/": "rm",
    "science/": "pretrain",
    "sft/": "sft",
    "staged/": "pretrain",
    "synth/": "synth",
    "world/dpo.yaml": "dpo",
    "world/pretrain.yaml": "pretrain",
    "world/rest.yaml": "rest",
    "world/rm.yaml": "rm",
    "world/sft.yaml": "sft",
    "world/tokenizer.yaml": "tokenizer",
}
# Files under examples/ that are not chatforge stage configs, and what they are.
NOT_CONFIGS = {
    "eval/lm_eval_task/": "lm-evaluation-harness task definitions (read by lm_eval, not by chatforge)",
}


def _examples() -> list[str]:
    return sorted(str(p.relative_to(ROOT / "examples")) for p in (ROOT / "examples").rglob("*.y*ml"))


def _stage_of(relative: str) -> str | None:
    if relative in STAGE_OF:
        return STAGE_OF[relative]
    for prefix in sorted((k for k in STAGE_OF if k.endswith("/")), key=len, reverse=True):
        if relative.startswith(prefix):
            return STAGE_OF[prefix]
    return None


def _skipped(relative: str) -> bool:
    return any(relative.startswith(prefix) for prefix in NOT_CONFIGS)


def test_every_example_is_listed_with_its_stage():
    unlisted = [r for r in _examples() if _stage_of(r) is None and not _skipped(r)]
    assert not unlisted, f"add these examples to STAGE_OF (or NOT_CONFIGS) in {Path(__file__).name}: {unlisted}"
    assert all(stage in STAGES for stage in STAGE_OF.values())


@pytest.mark.parametrize("relative", [r for r in _examples() if not _skipped(r) and _stage_of(r) is not None])
def test_example_validates_against_its_stage_config(relative):
    stage = _stage_of(relative)
    module = importlib.import_module(STAGES[stage][0])
    cfg = load_config(module.Config, ROOT / "examples" / relative)
    assert isinstance(cfg, module.Config)


@pytest.mark.parametrize("recipe", sorted(str(p.relative_to(ROOT)) for p in (ROOT / "recipes").glob("*.y*ml")))
def test_recipe_resolves_every_stage_config(recipe, tmp_path, monkeypatch):
    import re

    from chatforge.recipes.plan import load_recipe, resolve

    # A recipe may take a path from the environment (`${env.NAME}`); a placeholder validates the rest.
    for name in re.findall(r"\$\{env\.([A-Za-z_][A-Za-z0-9_]*)\}", (ROOT / recipe).read_text()):
        monkeypatch.setenv(name, str(tmp_path / name))

    parsed, _ = load_recipe(ROOT / recipe)
    steps = resolve(parsed, ROOT / recipe, tmp_path)
    assert [s.name for s in steps if s.kind != "card"] == list(parsed.stages)
