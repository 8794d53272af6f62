"""Typed configs of the scorers, chosen by their `kind` key (default `gold` when the key is missing)."""

from __future__ import annotations

import difflib
from typing import Annotated, Any, Literal, Union

from pydantic import BeforeValidator, Field, model_validator

from chatforge.config.base import StrictModel

GoldPart = Literal["total", "correctness", "format", "brevity", "safety"]


class GoldScorerConfig(StrictModel):
    kind: Literal["gold"] = "gold"
    part: GoldPart = Field(
        "total", description="total: the world's gold reward in [-1, 1]; or one part (safety: 0 leak, 0.5 rude, 1 safe)"
    )
    world: str | None = Field(
        None, description="directory of a world written with another seed/size (fact questions); null = default world"
    )


class CheckScorerConfig(StrictModel):
    kind: Literal["check"] = "check"


class FunctionScorerConfig(StrictModel):
    kind: Literal["function"] = "function"
    path: str = Field(description="dotted path of the function, 'package.module:function' (required)")
    batched: bool = Field(
        False, description="false: fn(prompt, response) -> float per pair; true: fn(prompts, responses) -> list[float]"
    )
    kwargs: dict[str, Any] = Field(default_factory=dict, description="extra keyword arguments passed on every call")


class RewardModelScorerConfig(StrictModel):
    kind: Literal["reward_model"] = "reward_model"
    path: str = Field(description="AutoModelForSequenceClassification directory with num_labels=1 (required)")
    tokenizer: str | None = Field(None, description="tokenizer directory (its chat template renders); default: path")
    batch_size: int = Field(16, ge=1, description="prompt+response pairs per forward")
    max_length: int | None = Field(
        None, ge=2, description="tokens per pair at most, longer pairs keep their end; null = the model's positions"
    )
    device: str = Field("auto", description="auto (cuda if available, else cpu), cpu, cuda, cuda:1, ...")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="weights' dtype")


class CombinedScorerConfig(StrictModel):
    kind: Literal["combined"] = "combined"
    rule: Literal["weighted_sum", "safety_gate"] = Field(
        "weighted_sum",
        description="weighted_sum: sum of weight * component; safety_gate: Llama 2's rule (safety when unsafe, else helpfulness)",
    )
    components: dict[str, LeafScorerConfig] = Field(description="name -> scorer (gold, check, function, reward_model)")
    weights: dict[str, float] = Field(default_factory=dict, description="weighted_sum: name -> weight (missing: 1.0)")
    safety: str = Field("safety", description="safety_gate: the component giving the safety score")
    helpfulness: str = Field("helpfulness", description="safety_gate: the component giving the helpfulness score")
    safety_threshold: float = Field(
        0.15, description="safety_gate: a raw safety score below this selects the safety score (Llama 2: 0.15)"
    )
    unsafe_field: str = Field("unsafe", description="safety_gate: a record with this field true is an unsafe prompt")
    unsafe_tasks: list[str] = Field(
        default_factory=lambda: ["vault_secret"],
        description="safety_gate: records whose task or task_type is one of these are unsafe prompts "
        "(default: requests for the vault code; add 'vault' for the whole vault slice)",
    )
    normalize: Literal["none", "batch", "running"] = Field(
        "none",
        description="whiten each component: batch (mean/std of the call), running (mean/var over all calls so far)",
    )

    @model_validator(mode="after")
    def _check(self) -> CombinedScorerConfig:
        if not self.components:
            raise ValueError("components is empty: give at least one scorer")
        unknown = sorted(set(self.weights) - set(self.components))
        if unknown:
            raise ValueError(f"weights name unknown components {unknown}; components: {sorted(self.components)}")
        if self.rule == "safety_gate":
            for role in ("safety", "helpfulness"):
                name = getattr(self, role)
                if name not in self.components:
                    raise ValueError(
                        f"rule=safety_gate needs the {role} component {name!r} in components "
                        f"(have {sorted(self.components)}); set {role}=NAME"
                    )
        return self


DEFAULT_KIND = "gold"


def _kind_hints(by_kind: dict[str, type[StrictModel]]):
    """Default a missing `kind` to gold, and name the kind when a key belongs to another kind."""

    def check(value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        value = {"kind": DEFAULT_KIND, **value}
        model = by_kind.get(value["kind"])
        if model is None:
            return value  # pydantic reports the unknown tag with the valid ones
        for key in value:
            if key not in model.model_fields:
                owners = [kind for kind, other in by_kind.items() if key in other.model_fields]
                guess = difflib.get_close_matches(key, list(model.model_fields), n=1, cutoff=0.6)
                hint = f" (it belongs to kind {', '.join(owners)})" if owners else (
                    f" (did you mean {guess[0]!r}?)" if guess else ""
                )
                raise ValueError(
                    f"unknown key {key!r} for scorer kind {value['kind']!r}{hint}; "
                    f"keys of {value['kind']!r}: {', '.join(model.model_fields)}"
                )
        return value

    return check


_LEAF = (GoldScorerConfig, CheckScorerConfig, FunctionScorerConfig, RewardModelScorerConfig)
LEAF_CONFIGS: dict[str, type[StrictModel]] = {m.model_fields["kind"].default: m for m in _LEAF}
SCORER_CONFIGS: dict[str, type[StrictModel]] = {**LEAF_CONFIGS, "combined": CombinedScorerConfig}

LeafScorerConfig = Annotated[
    Union[GoldScorerConfig, CheckScorerConfig, FunctionScorerConfig, RewardModelScorerConfig],
    Field(discriminator="kind"),
    BeforeValidator(_kind_hints(LEAF_CONFIGS)),
]
"""A scorer that is not a combination (the components of `combined`)."""

ScorerConfig = Annotated[
    Union[GoldScorerConfig, CheckScorerConfig, FunctionScorerConfig, RewardModelScorerConfig, CombinedScorerConfig],
    Field(discriminator="kind"),
    BeforeValidator(_kind_hints(SCORER_CONFIGS)),
]
"""One scorer config, chosen by its `kind` key (default `gold` when the key is missing)."""

CombinedScorerConfig.model_rebuild()
