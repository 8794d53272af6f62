"""stages/_training: what every training stage gets from the skeleton, with a toy stage on a tiny model."""

from __future__ import annotations

import json
from typing import Literal

import pytest
import torch
from pydantic import Field

from chatforge.config.base import StrictModel
from chatforge.engine.config import OptimConfig, TrainConfig
from chatforge.engine.schedules import ScheduleConfig
from chatforge.sft.modes import LoraSettings
from chatforge.stages._training import Plan, TrainingStage, default_schedule, train
from tiny_models import make_tiny_model


class ToyConfig(StrictModel):
    out: str
    mode: Literal["full", "lora"] = "full"
    lora: LoraSettings = Field(default_factory=lambda: LoraSettings(target_modules=["q_proj", "v_proj"], save_adapter=True))
    train: TrainConfig = Field(
        default_factory=lambda: TrainConfig(max_steps=3, micro_batch_size=2, device="cpu", progress=False, save_every=0)
    )
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=1e-2))
    schedule: ScheduleConfig = Field(default_factory=default_schedule(kind="constant"))


class FixedRows:
    """The same two rows every step (a `Batches`)."""

    def next_batch(self):
        ids = torch.arange(4, 12).reshape(2, 4)
        return {"input_ids": ids, "labels": ids.roll(-1, dims=1)}

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


class ToyStage(TrainingStage):
    def __init__(self, tokenizer):
        self.tokenizer, self.calls = tokenizer, []

    def prepare(self, ctx):
        self.calls.append("prepare")
        ctx.rejects.add("toy.jsonl", "line 1", "bad_json")
        from chatforge.stages.pretrain import LanguageModelling

        model = make_tiny_model(vocab_size=len(self.tokenizer))
        return Plan(model, LanguageModelling(), FixedRows(), self.tokenizer, describe="toy: {trainable} of {total}",
                    summary={"rows": 2})

    def started(self, ctx, plan, engine):
        self.calls.append(("started", engine.step))

    def finish(self, ctx, plan, trained):
        self.calls.append("finish")
        assert (ctx.run_dir.final / "config.json").is_file()  # final/ is written before finish
        return {"final_loss": trained.result.last_metrics["loss"]}

    def closing(self, ctx, summary):
        return f"toy done: {summary['steps']} steps"


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_skeleton_sets_up_trains_exports_and_summarises(tmp_path, tiny_tokenizer, mode, capsys):
    from transformers import AutoModelForCausalLM

    cfg = ToyConfig(out=str(tmp_path / "run"), mode=mode)
    stage = ToyStage(tiny_tokenizer)
    summary = train(cfg, stage)
    out = capsys.readouterr().out
    assert stage.calls == ["prepare", ("started", 0), "finish"]
    assert summary["mode"] == mode and summary["steps"] == 3 and summary["rows"] == 2
    assert summary["rejected"] == {"bad_json": 1} and "final_loss" in summary
    assert (summary["trainable_parameters"] < summary["parameters"]) == (mode == "lora")
    run = tmp_path / "run"
    assert json.loads((run / "report" / "summary.json").read_text())["steps"] == 3
    assert (run / "config.yaml").read_text().count(f"mode: {mode}") == 1
    assert json.loads((run / "rejected.jsonl").read_text())["reason"] == "bad_json"
    assert f"toy: {summary['trainable_parameters']} of {summary['parameters']}" in out
    assert out.rstrip().endswith("toy done: 3 steps")
    reloaded = AutoModelForCausalLM.from_pretrained(run / "final")  # plain transformers, LoRA merged
    assert not any("lora" in k for k in reloaded.state_dict())
    assert (run / "adapter").is_dir() == (mode == "lora")  # lora.save_adapter
