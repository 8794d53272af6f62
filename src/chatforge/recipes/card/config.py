"""What the report card measures: the models (one column each) and the held-out sets (one row group each).

Every set is optional; a row is measured only when its set is given. Sizes are small on purpose: the
card is measured for every model of the recipe, and each figure comes with its standard error, so a
difference smaller than about two standard errors is visibly noise.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from chatforge.config.base import StrictModel


class CardConfig(StrictModel):
    models: dict[str, str] = Field(
        min_length=1, description="column label -> model directory (e.g. {base: ${pretrain.final}, sft: ${sft.final}})"
    )
    reference: str | None = Field(
        None, description="the column KL is measured against, and the reference of the implicit reward (default: sft if present)"
    )
    world: str | None = Field(
        None, description="the task world directory the sets come from (the gold reward's facts); null = the default world"
    )
    reward_model: str | None = Field(None, description="a reward model directory: its accuracy on `pairs` gets its own column")
    knowledge: str | None = Field(None, description="C-Eval-layout root (the world's ceval/): knowledge accuracy")
    knowledge_questions: int = Field(100, ge=1, description="questions per subject")
    knowledge_shots: int = Field(3, ge=0, description="dev exemplars per question")
    instructions: str | None = Field(
        None, description="held-out instructions (messages JSONL): greedy exact match per task type and gold reward"
    )
    instructions_max: int = Field(60, ge=1, description="instructions answered per model")
    verifiable: str | None = Field(None, description="held-out verifiable prompts (task, answer): pass@1 and pass@k")
    verifiable_max: int = Field(30, ge=1, description="prompts sampled per model")
    samples: int = Field(4, ge=1, description="samples per verifiable prompt (pass@k for k in ks)")
    ks: list[int] = Field(default_factory=lambda: [1, 4], description="k of pass@k (each <= samples)")
    pairs: str | None = Field(None, description="held-out preference pairs: reward accuracy")
    pairs_max: int = Field(60, ge=1, description="pairs scored per model")
    text: list[str] = Field(default_factory=list, description="held-out text files (JSONL with `text`): bits-per-byte")
    text_documents: int = Field(20, ge=2, description="documents per text file")
    kl_prompts: int = Field(16, ge=2, description="prompts whose samples estimate KL(model || reference)")
    max_new_tokens: int = Field(64, ge=1, description="longest greedy or sampled answer")
    temperature: float = Field(1.0, gt=0, description="temperature of the pass@k samples")
    seed: int = Field(0, description="seed of every sample the card draws")
    device: str = Field("auto", description="auto, cpu, cuda")

    @model_validator(mode="after")
    def _check(self) -> CardConfig:
        if self.reference is not None and self.reference not in self.models:
            raise ValueError(f"reference {self.reference!r} is not one of the models ({', '.join(self.models)})")
        too_big = [k for k in self.ks if k > self.samples]
        if too_big:
            raise ValueError(f"ks {too_big} are larger than samples={self.samples}")
        return self

    def reference_label(self) -> str | None:
        if self.reference is not None:
            return self.reference
        return "sft" if "sft" in self.models else None
