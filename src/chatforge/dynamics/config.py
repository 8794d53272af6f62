"""The `dynamics:` section of an SFT or DPO config: which probes, how often, the squeezing thresholds."""

from __future__ import annotations

from pydantic import Field, field_validator

from chatforge.config.base import StrictModel

# Text kinds the task world's probes.jsonl holds (world/probes.py), in plotting order.
FILE_KINDS: tuple[str, ...] = (
    "chosen", "rejected", "chosen_paraphrase", "chosen_new_format", "rejected_paraphrase", "rejected_new_format",
    "irrelevant_train", "irrelevant_test", "chosen_permuted", "random_tokens",
)
# Kinds built here at the token level (any tokenizer), and the model's own answer.
TOKEN_KINDS: tuple[str, ...] = ("chosen_token_permuted", "random_ids")
ALL_KINDS: tuple[str, ...] = (*FILE_KINDS, *TOKEN_KINDS, "greedy")


class DynamicsConfig(StrictModel):
    probes: str = Field(
        description="probe file: the task world's DIR/probes/probes.jsonl ({prompt, responses: {kind: text}}) "
        "or preference pairs ({prompt, chosen, rejected}); the kinds it lacks are derived (chatforge.dynamics.probes)"
    )
    heldout: str | None = Field(
        None, description="held-out preference pairs whose chosen answers serve as irrelevant_test where the probe "
        "file has none; default: another probe's chosen answer"
    )
    max_probes: int = Field(64, ge=1, description="probes measured at most (the file's first ones)")
    every: int = Field(10, ge=1, description="measure every N optimizer steps (and at step 0 and at the end)")
    kinds: list[str] | None = Field(None, description=f"probe kinds to measure; default all of {', '.join(ALL_KINDS)}")
    greedy_max_new_tokens: int = Field(64, ge=1, description="length limit of the greedy answer")
    batch_size: int = Field(16, ge=1, description="probe sequences per forward")
    max_length: int = Field(512, ge=8, description="tokens per probe conversation (prompt + response) at most")
    seed: int = Field(0, description="seed of the token permutation and the random ids")
    squeeze_drop: float = Field(
        0.5, ge=0.0, description="squeezing: chosen and rejected mean log-probs must each fall by more than this (nats)"
    )
    squeeze_rise: float = Field(
        0.1, ge=0.0, description="squeezing: the greedy answer's mean log-prob must rise by more than this (nats)"
    )

    @field_validator("kinds")
    @classmethod
    def _known(cls, kinds: list[str] | None) -> list[str] | None:
        if kinds is None:
            return None
        unknown = [k for k in kinds if k not in ALL_KINDS]
        if unknown:
            raise ValueError(f"unknown probe kind(s) {unknown}; choose from {', '.join(ALL_KINDS)}")
        if not kinds:
            raise ValueError("kinds is empty; leave it unset for all kinds")
        return kinds

    def wanted(self) -> tuple[str, ...]:
        """The kinds to measure, in plotting order."""
        return tuple(k for k in ALL_KINDS if self.kinds is None or k in self.kinds)
