"""The engine: loss normalisation over accumulation, resume equality, export, checkpoint safety."""

from __future__ import annotations

import json
import math

import pytest
import torch
from pydantic import TypeAdapter

from chatforge.engine import checkpoint as ckpt
from chatforge.engine.config import OptimConfig, TrainConfig
from chatforge.engine.loop import Engine
from chatforge.engine.schedules import ScheduleConfig
from chatforge.errors import CheckpointError
from chatforge.losses.lm import IGNORE_INDEX
from chatforge.run_dir import RunDir
from chatforge.stages.pretrain import LanguageModelling
from tiny_models import make_tiny_model

VOCAB = 64
SCHEDULE = TypeAdapter(ScheduleConfig).validate_python({"kind": "cosine", "warmup_steps": 1, "min_lr_ratio": 0.1})


class Replay:
    """Yields `batch_size` rows at a time from a fixed list of rows, cycling; resumable."""

    def __init__(self, rows: list[dict[str, torch.Tensor]], batch_size: int, interrupt_at: int | None = None):
        self.rows, self.batch_size, self.position = rows, batch_size, 0
        self.interrupt_at, self.calls = interrupt_at, 0

    def next_batch(self):
        self.calls += 1
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt  # Ctrl-C in the middle of an optimizer step
        picked = [self.rows[(self.position + i) % len(self.rows)] for i in range(self.batch_size)]
        self.position += self.batch_size
        return {k: torch.stack([r[k] for r in picked]) for k in picked[0]}

    def state_dict(self):
        return {"position": self.position}

    def load_state_dict(self, state):
        self.position = state["position"]


def uneven_rows(n: int = 8, seq: int = 12, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Rows whose number of valid labels differs a lot (2..12), so a per-micro-batch mean would be wrong."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        ids = torch.randint(0, VOCAB, (seq + 1,), generator=g)
        labels = ids[1:].clone()
        valid = 2 + (i * 5) % (seq - 1)
        labels[valid:] = IGNORE_INDEX
        rows.append({"input_ids": ids[:-1], "labels": labels})
    return rows


def make_engine(tmp_path, rows, micro, accum, steps, seed=0, interrupt_at=None, **train_kw):
    model = make_tiny_model(VOCAB, seed=seed)
    train = TrainConfig(
        max_steps=steps, micro_batch_size=micro, grad_accum_steps=accum, progress=False,
        eval_every=0, save_every=train_kw.pop("save_every", 0), **train_kw,
    )
    optim = OptimConfig(lr=1e-2, weight_decay=0.1, max_grad_norm=1.0)
    return Engine(model, LanguageModelling(), Replay(rows, micro, interrupt_at), train, optim, SCHEDULE, RunDir.create(tmp_path))


def losses(run_root) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_root / "metrics.jsonl").read_text().splitlines()]


def test_micro_batch_1_x_8_equals_8_x_1(tmp_path):
    rows = uneven_rows()
    big = make_engine(tmp_path / "big", rows, micro=8, accum=1, steps=3)
    big.fit()
    small = make_engine(tmp_path / "small", rows, micro=1, accum=8, steps=3)
    small.fit()
    torch.testing.assert_close(torch.tensor(losses(tmp_path / "small")), torch.tensor(losses(tmp_path / "big")), atol=1e-5, rtol=1e-5)
    for (name, a), (_, b) in zip(big.model.named_parameters(), small.model.named_parameters()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=f"{name} differs")


def test_token_weighting_differs_from_per_micro_batch_mean():
    """Guard that the rows above can tell the two normalisations apart (else the test above is void)."""
    rows = uneven_rows()
    model = make_tiny_model(VOCAB)
    objective = LanguageModelling()
    outs = [objective(model, {k: v[None] for k, v in r.items()}) for r in rows]
    global_mean = sum(o.loss_sum for o in outs) / sum(o.count for o in outs)
    mean_of_means = sum(o.loss_sum / o.count for o in outs) / len(outs)
    # 10x the tolerance of the equality test above, so a per-micro-batch mean would fail it.
    assert abs(global_mean.item() - mean_of_means.item()) > 1e-4


def test_first_step_loss_is_the_global_token_mean(tmp_path):
    """Hand check: step 1's logged loss = sum of token NLLs over all 8 rows / their valid-token count."""
    rows = uneven_rows()
    model = make_tiny_model(VOCAB, seed=0)
    with torch.no_grad():
        logits = model(input_ids=torch.stack([r["input_ids"] for r in rows])).logits
    labels = torch.stack([r["labels"] for r in rows])
    logp = torch.log_softmax(logits, -1)
    mask = labels != IGNORE_INDEX
    picked = logp.gather(-1, labels.clamp(min=0)[..., None])[..., 0]
    expected = -(picked * mask).sum() / mask.sum()
    make_engine(tmp_path, rows, micro=2, accum=4, steps=3).fit()
    assert math.isclose(losses(tmp_path)[0], expected.item(), rel_tol=1e-5)


def test_resume_matches_uninterrupted_run(tmp_path):
    rows = uneven_rows(n=5)
    full = make_engine(tmp_path / "full", rows, micro=2, accum=2, steps=6, save_every=2)
    full.fit()
    # Interrupted in the middle of step 4 (its 2nd micro-batch): the engine saves the state at step 3.
    first = make_engine(tmp_path / "split", rows, micro=2, accum=2, steps=6, save_every=2, interrupt_at=8)
    with pytest.raises(KeyboardInterrupt):
        first.fit()
    assert ckpt.list_checkpoints(tmp_path / "split" / "checkpoints") == [2, 3]
    # A new process: fresh model (another init seed on purpose) and data, resuming from the checkpoint.
    second = make_engine(tmp_path / "split", rows, micro=2, accum=2, steps=6, save_every=2, seed=99)
    result = second.fit()
    assert result.resumed_from == 3
    assert losses(tmp_path / "split") == pytest.approx(losses(tmp_path / "full"), abs=1e-6)
    for a, b in zip(full.model.parameters(), second.model.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_export_reloads_with_plain_transformers(tmp_path):
    from transformers import AutoModelForCausalLM

    engine = make_engine(tmp_path, uneven_rows(), micro=4, accum=1, steps=2)
    engine.fit()
    engine.export(tmp_path / "final")
    assert (tmp_path / "final" / "model.safetensors").is_file()
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "final")
    ids = torch.randint(0, VOCAB, (2, 10))
    engine.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, engine.model(input_ids=ids).logits, atol=0, rtol=0)


def test_crash_mid_write_keeps_last_good_checkpoint(tmp_path):
    engine = make_engine(tmp_path, uneven_rows(), micro=2, accum=1, steps=4, save_every=2, keep_last=1)
    engine.fit()
    root = tmp_path / "checkpoints"
    assert ckpt.list_checkpoints(root) == [4]  # keep_last=1 pruned step 2
    # A crash while writing step 6: a half-written temp dir and no pointer update.
    partial = root / ".tmp-step_000006-123"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"truncated")
    assert ckpt.latest_checkpoint(root) == root / "step_000004"
    resumed = make_engine(tmp_path, uneven_rows(), micro=2, accum=1, steps=5, save_every=2, keep_last=1)
    assert resumed.fit().resumed_from == 4
    assert not partial.exists()  # cleaned up by the next save


def test_checkpoint_from_another_shape_is_a_clear_error(tmp_path):
    engine = make_engine(tmp_path, uneven_rows(), micro=2, accum=1, steps=3)
    engine.fit()
    other = make_tiny_model(VOCAB, hidden_size=48, num_attention_heads=4)
    with pytest.raises(CheckpointError, match=r"parameter 'model\.embed_tokens\.weight' has shape \[64, 32\] but the model has \[64, 48\]"):
        ckpt.load_model_weights(ckpt.latest_checkpoint(tmp_path / "checkpoints"), other)


def test_metrics_have_the_documented_fields(tmp_path):
    make_engine(tmp_path, uneven_rows(), micro=2, accum=1, steps=2).fit()
    row = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"step", "loss", "lr", "grad_norm", "tokens_per_s", "tokens"} <= set(row)
    assert (tmp_path / "report" / "loss.png").stat().st_size > 1000
    assert (tmp_path / "report" / "lr.png").stat().st_size > 1000


def test_an_evaluation_that_measured_nothing_logs_nothing(tmp_path, capsys):
    """A dynamics-probe hook returns {} on the steps where the stage's own evaluation is not due."""
    calls = []

    def evaluate(model):
        calls.append(len(calls))
        return {"val/loss": 1.5} if len(calls) % 2 == 0 else {}  # real metrics at steps 1 and 3

    engine = make_engine(tmp_path, uneven_rows(), micro=2, accum=1, steps=4, eval_at_start=True)
    engine.cfg = engine.cfg.model_copy(update={"eval_every": 1})
    engine.evaluate_fn = evaluate
    result = engine.fit()
    assert len(calls) == 5  # step 0 (at start) and steps 1..4
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if line.startswith("step ")] == ["step 1: val/loss 1.5000", "step 3: val/loss 1.5000"]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(set(row) != {"step"} for row in rows)
    assert [row["step"] for row in rows if "val/loss" in row] == [1, 3]
    assert result.eval_metrics == {"val/loss": 1.5}  # the last evaluation that measured something
