"""Task kinds of `chatforge eval`, one module each: config class (tagged by `kind`) + `run(ctx, cfg) -> dict`.

    lm               perplexity, bits-per-byte                       tasks/lm.py
    multiple_choice  C-Eval / MMLU accuracy, per subject              tasks/multiple_choice.py
    generation       exact match, pass@k, majority vote               tasks/generation.py
    reward_accuracy  reward model or DPO implicit reward on pairs     tasks/reward_accuracy.py
    judge            LLM-as-judge, pairwise (both orders) or rubric   tasks/judge.py
"""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field

from chatforge.evaluation.tasks import generation, judge, lm, multiple_choice, reward_accuracy
from chatforge.evaluation.tasks.base import ModelContext

TASKS = {
    "lm": (lm.LmTask, lm.run),
    "multiple_choice": (multiple_choice.MultipleChoiceTask, multiple_choice.run),
    "generation": (generation.GenerationTask, generation.run),
    "reward_accuracy": (reward_accuracy.RewardAccuracyTask, reward_accuracy.run),
    "judge": (judge.JudgeTask, judge.run),
}

TaskConfig = Annotated[
    Union[  # noqa: UP007 - pydantic's discriminated union
        lm.LmTask,
        multiple_choice.MultipleChoiceTask,
        generation.GenerationTask,
        reward_accuracy.RewardAccuracyTask,
        judge.JudgeTask,
    ],
    Field(discriminator="kind"),
]

__all__ = ["TASKS", "ModelContext", "TaskConfig"]
