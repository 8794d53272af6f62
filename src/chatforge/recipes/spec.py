"""The recipe file: which stages run, in what order, with which configs.

    name: demo                       # default: the file's stem
    out: runs/demo                   # the recipe directory (default: runs/<name>); each stage writes <out>/<stage>
    stages:                          # run in this order
      world: {stage: world write, config: {size: tiny}}
      pretrain:
        config: examples/continual/a.yaml       # a stage config file (paths in it are relative to the cwd) ...
        overrides: {train.max_steps: 20}        # ... with dotted overrides on top
      sft:
        config:                                 # ... or the config inline
          model: ${pretrain.final}              # references to earlier stages (recipes/references.py)
          data: {sources: [{path: "${world.dir}/instructions/train.jsonl"}]}
    card: {...}                      # the report card's measurements (recipes/card/config.py)

A stage's `out` is always the recipe's: `<out>/<stage name>` (or a file in it, for a stage whose
output is one file such as `chatforge eval`'s eval.json). A config file's own `out` is ignored; an
inline config or an override that sets it is an error.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from chatforge.config.base import StrictModel
from chatforge.recipes.card.config import CardConfig

# Commands of `chatforge --help` that are not stages of a recipe: they serve, loop or wrap recipes.
NOT_RECIPE_STAGES = {"run", "demo", "serve", "chat", "schedule"}


class StageEntry(StrictModel):
    stage: str | None = Field(None, description="the chatforge stage (e.g. `world write`, `sft`); default: the entry's name")
    config: str | dict[str, Any] = Field(
        default_factory=dict, description="the stage's config: a YAML file path, or the keys inline"
    )
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="dotted keys set on top of `config` (e.g. {train.max_steps: 20})"
    )


class Recipe(StrictModel):
    name: str | None = Field(None, description="the recipe's name (default: the file's stem)")
    description: str = Field("", description="one paragraph shown at the top of the report card")
    out: str | None = Field(None, description="the recipe directory (default: runs/<name>)")
    stages: dict[str, StageEntry] = Field(
        default_factory=dict, description="stage name -> entry, run in this order (none: a card of existing models)"
    )
    card: CardConfig | None = Field(None, description="the report card's measurements of the recipe's models")
    chat_model: str | None = Field(
        None, description="the model the closing lines offer to chat with (default: the card's last model)"
    )

    @model_validator(mode="after")
    def _something_to_do(self) -> Recipe:
        if not self.stages and self.card is None:
            raise ValueError("stages: give at least one stage, or a card of existing model directories")
        return self
