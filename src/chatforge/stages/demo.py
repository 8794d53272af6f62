"""The main job on the built-in default: train a tokenizer, pretrain the ~10M model, evaluate.

Runs `chatforge pretrain` with the demo settings below on the built-in corpus (the English text of
Python's `pydoc_data.topics`), then prints held-out bits-per-byte against the unigram baseline and
where the loss curve PNG is. Every key of `pretrain` can be overridden with `pretrain.KEY=VALUE`.
Later stages (SFT, reward models, preference and RL optimisation) join this job as they land.
"""

from __future__ import annotations

from pydantic import Field

from chatforge.config.base import StrictModel
from chatforge.stages import pretrain
from chatforge.stages.pretrain import Config as PretrainConfig

DEMO_PRETRAIN = {
    "out": "runs/demo/pretrain",
    "model": {"preset": "llama-10m"},
    "data": {"seq_len": 256, "val_fraction": 0.05},
    "train": {"max_steps": 150, "micro_batch_size": 16, "eval_every": 25, "save_every": 50},
    "optim": {"lr": 2e-3, "weight_decay": 0.1},
    "schedule": {"kind": "cosine", "warmup_steps": 15, "min_lr_ratio": 0.1},
}


class Config(StrictModel):
    # `pretrain.train.progress=false` changes one key of the demo's settings, not of the bare stage's
    # (StrictModel: a section given in part keeps its default's other keys).
    pretrain: PretrainConfig = Field(
        default_factory=lambda: PretrainConfig.model_validate(DEMO_PRETRAIN), description="the pretraining stage"
    )


def run(cfg: Config) -> dict:
    return {"pretrain": pretrain.run(cfg.pretrain)}
