"""A diverging run fails loudly: a non-finite loss or gradient norm stops the engine with a diagnosis
and a non-zero exit, and no checkpoint of non-finite weights is ever written."""

from __future__ import annotations

import json

import pytest
import torch

from chatforge.cli import main
from chatforge.engine import checkpoint as ckpt
from chatforge.engine.loop import TrainingDiverged
from chatforge.stages.pretrain import LanguageModelling
from test_engine import make_engine, uneven_rows


class PoisonAt:
    """The LM objective, with the loss multiplied by `factor` (nan, inf) from optimizer step `step` on."""

    def __init__(self, step: int, factor: float, accum: int = 1):
        self.inner, self.step, self.factor, self.accum, self.calls = LanguageModelling(), step, factor, accum, 0

    def __call__(self, model, batch):
        self.calls += 1
        out = self.inner(model, batch)
        if (self.calls - 1) // self.accum + 1 >= self.step:
            out.loss_sum = out.loss_sum * self.factor
        return out


@pytest.mark.parametrize("factor", [float("nan"), float("inf")])
def test_non_finite_loss_stops_before_the_update_and_keeps_the_last_checkpoint(tmp_path, factor):
    engine = make_engine(tmp_path, uneven_rows(), micro=4, accum=2, steps=6, save_every=1)
    engine.objective = PoisonAt(step=3, factor=factor, accum=2)
    with pytest.raises(TrainingDiverged, match=r"training diverged at step 3: loss (nan|inf).*the weights are still finite"):
        engine.fit()
    # Step 3 was not applied and not saved; step 2 is the last checkpoint and holds finite weights.
    assert ckpt.latest_checkpoint(tmp_path / "checkpoints").name == "step_000002"
    assert all(torch.isfinite(p).all() for p in engine.model.parameters())
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]


def test_a_checkpoint_of_non_finite_weights_is_refused(tmp_path):
    engine = make_engine(tmp_path, uneven_rows(), micro=4, accum=1, steps=2, save_every=1)
    engine.fit()
    with torch.no_grad():
        next(engine.model.parameters())[0].fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match=r"not saving step 2: the weights are non-finite in 1 tensors"):
        engine.save(engine.batches.state_dict())
    assert ckpt.latest_checkpoint(tmp_path / "checkpoints").name == "step_000002"


def test_a_diverging_cli_run_exits_non_zero_without_final_weights(tmp_path, tiny_tokenizer_dir, capsys):
    # lr 1e6 is finite and passes validation; the first update blows the weights up, the next loss is not finite.
    out = tmp_path / "run"
    code = main([
        "pretrain", f"out={out}", f"tokenizer={tiny_tokenizer_dir}", "model.preset=llama-1m", "data.seq_len=32",
        f"data.cache_dir={tmp_path / 'cache'}", "train.max_steps=20", "train.micro_batch_size=2",
        "train.eval_every=0", "train.save_every=1", "train.progress=false", "optim.lr=1e6", "schedule.warmup_steps=0",
    ])
    err = capsys.readouterr().err
    assert code != 0
    assert "error: training diverged at step" in err and "Lower optim.lr" in err and "Traceback" not in err
    assert not (out / "final").exists()
    for saved in (out / "checkpoints").glob("step_*"):
        from safetensors.torch import load_file

        assert all(torch.isfinite(t).all() for t in load_file(saved / "model.safetensors").values())
