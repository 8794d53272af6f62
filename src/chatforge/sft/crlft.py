"""C-RLFT (OpenChat, arXiv 2309.11235): class-conditioned SFT on data of mixed quality.

Every conversation carries a source class (e.g. `expert` / `novice`) with a coarse reward. Training
conditions the prompt on the class, so the model learns what each class's answers look like, and
weights the answer tokens by the class: OpenChat's released code uses the reward itself as the
token weight (1.0 expert, 0.1 novice; `weighting: reward`, the default); the paper derives
exp(r / beta) weights (`weighting: exp`). At inference the prompt is conditioned on the best class.

The condition goes into the system message (`condition_text`, before any system text the
conversation has): OpenChat writes it in front of every role prefix (`GPT4 User: ...`), which a chat
template with fixed role names cannot express; a system-message condition is the template-safe
equivalent the paper also discusses ("class-specific system prompt").
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

from pydantic import Field, model_validator

from chatforge.config.base import StrictModel


class CRLFTConfig(StrictModel):
    class_field: str = Field("source", description="record field holding the source class")
    rewards: dict[str, float] = Field(
        default_factory=lambda: {"expert": 1.0, "novice": 0.1}, description="coarse reward per class"
    )
    weighting: Literal["reward", "exp"] = Field(
        "reward", description="token weight: reward (OpenChat's code) or exp(reward / beta) (the paper)"
    )
    beta: float = Field(1.0, gt=0, description="temperature of the exp weighting")
    condition_text: str = Field("Source: {cls}.", description="class condition written into the system message")
    best_class: str | None = Field(None, description="class used at inference (default: the highest reward)")

    @model_validator(mode="after")
    def _check(self) -> CRLFTConfig:
        if not self.rewards:
            raise ValueError("rewards must name at least one class")
        if self.best_class is not None and self.best_class not in self.rewards:
            raise ValueError(f"best_class {self.best_class!r} is not one of the classes {sorted(self.rewards)}")
        if "{cls}" not in self.condition_text:
            raise ValueError("condition_text must contain {cls}")
        return self

    @property
    def inference_class(self) -> str:
        return self.best_class or max(self.rewards, key=self.rewards.__getitem__)

    def weight(self, cls: str) -> float:
        reward = self.rewards[cls]
        return reward if self.weighting == "reward" else math.exp(reward / self.beta)


def condition(messages: list[dict], cls: str, cfg: CRLFTConfig) -> list[dict]:
    """`messages` with the class condition at the start of the system message (added if none)."""
    tag = cfg.condition_text.format(cls=cls)
    if messages and messages[0]["role"] == "system":
        first = {**messages[0], "content": f"{tag} {messages[0]['content']}"}
        return [first, *messages[1:]]
    return [{"role": "system", "content": tag}, *messages]


def condition_conversation(conversation, cfg: CRLFTConfig):
    """(conditioned conversation, None), or (None, reason detail) when its class is unknown.

    The conversation keeps its class field, from which its token weight is `cfg.weight(class)`."""
    cls = conversation.extra.get(cfg.class_field)
    if cls not in cfg.rewards:
        return None, f"field {cfg.class_field!r} is {cls!r}, not one of the classes {sorted(cfg.rewards)}"
    return dataclasses.replace(conversation, messages=condition(conversation.messages, cls, cfg)), None
