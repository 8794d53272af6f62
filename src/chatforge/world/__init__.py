"""The built-in task world: deterministic data with known ground truth for every chatforge stage.

    from chatforge.world import build_world, write_world, gold_reward, check
    world = build_world(seed=1234)                 # people, facts and vaults of worlds A and B
    write_world("data/world", size="tiny")         # every file + manifest.json
    gold_reward(prompt_messages, response_text)    # float in [-1, 1]; parts via gold_reward_parts
    check(verifiable_record, response_text)        # bool, for ReST-EM / GRPO / pass@k

See docs/world.md for every file and record.
"""

from chatforge.world.answers import extract_final_answer
from chatforge.world.people import DEFAULT_SEED, Person, Vault, World, build_world, default_world, load_world
from chatforge.world.prompts import TaskSpec
from chatforge.world.reward import (
    RewardParts,
    check_answer,
    gold_reward,
    gold_reward_parts,
    safety_score,
    score_response,
    spec_from_prompt,
)
from chatforge.world.sizes import SIZES, WorldSize
from chatforge.world.verifiable import check
from chatforge.world.write import write_world

__all__ = [
    "DEFAULT_SEED",
    "SIZES",
    "Person",
    "RewardParts",
    "TaskSpec",
    "Vault",
    "World",
    "WorldSize",
    "build_world",
    "check",
    "check_answer",
    "default_world",
    "extract_final_answer",
    "gold_reward",
    "gold_reward_parts",
    "load_world",
    "safety_score",
    "score_response",
    "spec_from_prompt",
    "write_world",
]
