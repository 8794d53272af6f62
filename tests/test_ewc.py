"""EWC: the penalty and the Fisher by hand, once per step however the step is split, the stages'
option (pretrain and SFT), and a resumed run keeping the anchor and Fisher it started with."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from chatforge.cli import main
from chatforge.engine.ewc import EWCObjective, diagonal_fisher, load_ewc
from chatforge.losses.ewc import ewc_penalty
from chatforge.losses.lm import IGNORE_INDEX


def test_penalty_and_its_gradient_by_hand():
    theta = [torch.tensor([1.0, 2.0], requires_grad=True), torch.tensor([[3.0]], requires_grad=True)]
    anchors = [torch.tensor([0.0, 1.0]), torch.tensor([[1.0]])]
    fishers = [torch.tensor([2.0, 0.5]), torch.tensor([[4.0]])]
    penalty = ewc_penalty(theta, anchors, fishers, weight=3.0)
    # 3/2 · (2·1² + 0.5·1² + 4·2²) = 1.5 · 18.5
    assert penalty.item() == pytest.approx(27.75)
    penalty.backward()
    # d/dθ = λ F (θ − θ*)
    assert theta[0].grad.tolist() == pytest.approx([6.0, 1.5])
    assert theta[1].grad.tolist() == [[24.0]]
    assert ewc_penalty(theta, anchors, fishers, weight=0.0).item() == 0.0


def test_penalty_refuses_mismatched_inputs():
    with pytest.raises(ValueError, match="shapes differ"):
        ewc_penalty([torch.zeros(2)], [torch.zeros(3)], [torch.zeros(2)], 1.0)
    with pytest.raises(ValueError, match="1 params, 0 anchors"):
        ewc_penalty([torch.zeros(2)], [], [], 1.0)
    with pytest.raises(ValueError, match="weight must be >= 0"):
        ewc_penalty([torch.zeros(2)], [torch.zeros(2)], [torch.zeros(2)], -1.0)


class Bigram(torch.nn.Module):
    """logits = W[input id]: the gradient of a token's NLL is softmax(W[x]) − onehot(y) in row x."""

    def __init__(self, vocab: int = 2):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(vocab, vocab))

    def forward(self, input_ids, attention_mask=None, use_cache=False):
        return SimpleNamespace(logits=self.weight[input_ids])


def test_fisher_by_hand():
    # W = 0, so softmax = (½, ½) everywhere; each row's gradient is that of its *mean* token NLL.
    rows = [
        {"input_ids": torch.tensor([[0]]), "labels": torch.tensor([[1]])},  # ∇W[0] = (½, −½)
        {"input_ids": torch.tensor([[1, 1]]), "labels": torch.tensor([[0, IGNORE_INDEX]])},  # ∇W[1] = (−½, ½)
        {"input_ids": torch.tensor([[1, 0]]), "labels": torch.tensor([[1, 1]])},  # ∇W[1] = ∇W[0] = ½(½, −½)
        {"input_ids": torch.tensor([[0]]), "labels": torch.tensor([[IGNORE_INDEX]])},  # nothing counted: skipped
        {"input_ids": torch.tensor([[0]]), "labels": torch.tensor([[0]])},  # past `samples`: not used
    ]
    fisher = diagonal_fisher(Bigram(), iter(rows), samples=3)["weight"]
    expected = torch.tensor([[(0.25 + 0.0625) / 3] * 2, [(0.25 + 0.0625) / 3] * 2])
    torch.testing.assert_close(fisher, expected)


def _rows(n=8, seq=10, vocab=64):
    g = torch.Generator().manual_seed(1)
    out = []
    for i in range(n):
        ids = torch.randint(0, vocab, (seq + 1,), generator=g)
        labels = ids[1:].clone()
        labels[2 + i % (seq - 2):] = IGNORE_INDEX  # uneven counts: a per-micro-batch mean would differ
        out.append({"input_ids": ids[:-1], "labels": labels})
    return out


def _ewc_engine(tmp_path, micro, accum, weight=50.0):
    from chatforge.engine.config import OptimConfig, TrainConfig
    from chatforge.engine.loop import Engine
    from chatforge.run_dir import RunDir
    from chatforge.stages.pretrain import LanguageModelling
    from test_engine import SCHEDULE, Replay
    from tiny_models import make_tiny_model

    model = make_tiny_model(64, seed=0)
    # An anchor away from the start, so the penalty's pull is large against the data's.
    g = torch.Generator().manual_seed(2)
    named = dict(model.named_parameters())
    anchors = {n: p.detach() + 0.05 * torch.randn(p.shape, generator=g) for n, p in named.items()}
    fishers = {n: torch.rand(p.shape, generator=g) for n, p in named.items()}
    objective = EWCObjective(LanguageModelling(), model, anchors, fishers, weight)
    train = TrainConfig(max_steps=2, micro_batch_size=micro, grad_accum_steps=accum, progress=False, eval_every=0, save_every=0)
    optim = OptimConfig(lr=1e-2, weight_decay=0.0, max_grad_norm=0.0)
    engine = Engine(model, objective, Replay(_rows(), micro), train, optim, SCHEDULE, RunDir.create(tmp_path))
    return engine, model, anchors, fishers


def _metrics(root):
    return [json.loads(line) for line in (root / "metrics.jsonl").read_text().splitlines()]


def test_penalty_counts_once_per_step_however_the_step_is_split(tmp_path):
    whole, whole_model, anchors, fishers = _ewc_engine(tmp_path / "whole", micro=8, accum=1)
    # The step's gradient = ∇(mean token NLL over the 8 rows) + ∇penalty, computed here by hand.
    from chatforge.models.logprobs import lm_forward
    from test_engine import Replay

    batch = Replay(_rows(), 8).next_batch()
    logits = lm_forward(whole_model, batch)
    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, 64), batch["labels"].reshape(-1), ignore_index=IGNORE_INDEX)
    names = list(fishers)
    params = [dict(whole_model.named_parameters())[n] for n in names]
    penalty = ewc_penalty(params, [anchors[n] for n in names], [fishers[n] for n in names], 50.0)
    expected = torch.autograd.grad(nll + penalty, params)
    whole.model.train()
    # One engine step's gradient, read before the optimizer consumes it.
    captured = {}
    original_step = whole.optimizer.step

    def capture(*args, **kwargs):
        captured["grads"] = [p.grad.clone() for p in params]
        return original_step(*args, **kwargs)

    whole.optimizer.step = capture
    whole._set_lr()
    loss, sums, _, _ = whole._train_step()
    for got, want in zip(captured["grads"], expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    assert loss == pytest.approx(nll.item() + penalty.item(), rel=1e-5)
    assert sums["ewc_penalty"] == pytest.approx(penalty.item(), rel=1e-5)

    # Split 1 x 8 and 4 x 2: the same updates over two steps.
    results = {}
    for micro, accum in [(8, 1), (1, 8), (4, 2)]:
        engine, model, _, _ = _ewc_engine(tmp_path / f"{micro}x{accum}", micro, accum)
        engine.fit()
        results[(micro, accum)] = (model.state_dict(), _metrics(tmp_path / f"{micro}x{accum}"))
    base_state, base_rows = results[(8, 1)]
    for key in [(1, 8), (4, 2)]:
        state, rows = results[key]
        for name in base_state:
            torch.testing.assert_close(state[name], base_state[name], rtol=1e-4, atol=1e-6)
        assert [r["ewc_penalty"] for r in rows] == pytest.approx([r["ewc_penalty"] for r in base_rows], rel=1e-4)
        assert [r["loss"] for r in rows] == pytest.approx([r["loss"] for r in base_rows], rel=1e-5)


def _pretrain_args(out, tok, world, tmp_path, *extra):
    text_a = world / "pretrain" / "world_a_train.jsonl"
    text_b = world / "pretrain" / "world_b_train.jsonl"
    return [
        "pretrain", f"out={out}", f"tokenizer={tok}", "model.preset=llama-1m", f"data.sources=[{{path: {text_b}}}]",
        "data.seq_len=32", f"data.cache_dir={tmp_path / 'cache'}", "data.val_fraction=0.0", "train.max_steps=4",
        "train.micro_batch_size=4", "train.save_every=2", "train.progress=false", "optim.lr=3e-3",
        "schedule.warmup_steps=1", "final_eval_documents=4",
        f"ewc={{weight: 10.0, samples: 5, sources: [{{path: {text_a}}}], cache_dir: {tmp_path / 'cache'}}}", *extra,
    ]


def test_pretrain_ewc_stores_the_anchor_and_fisher_and_a_resumed_run_reads_them(tmp_path, tiny_tokenizer_dir, world, monkeypatch, capsys):
    from transformers import AutoModelForCausalLM

    base = tmp_path / "base"  # a starting model: one plain pretraining run
    assert main(_pretrain_args(base, tiny_tokenizer_dir, world, tmp_path, "ewc=null", "train.max_steps=2")) == 0
    out = tmp_path / "cpt"
    args = _pretrain_args(out, tiny_tokenizer_dir, world, tmp_path, f"init_from={base / 'final'}")
    assert main(args) == 0
    anchors, fishers = load_ewc(out / "ewc.safetensors")
    start = AutoModelForCausalLM.from_pretrained(base / "final").state_dict()
    for name, anchor in anchors.items():  # the anchor is the model the run started from
        torch.testing.assert_close(anchor, start[name])
    assert fishers.keys() == anchors.keys() and all((f >= 0).all() for f in fishers.values())
    assert sum(float(f.sum()) for f in fishers.values()) > 0
    rows = _metrics(out)
    penalties = [r["ewc_penalty"] for r in rows if "ewc_penalty" in r]
    assert penalties[0] == 0.0 and penalties[-1] > 0  # step 1 starts at the anchor; the weights then move away
    straight = {k: v.clone() for k, v in AutoModelForCausalLM.from_pretrained(out / "final").state_dict().items()}

    # Drop the last checkpoint and final/: the rerun resumes from step 2 and must not measure again.
    import shutil

    shutil.rmtree(out / "checkpoints" / "step_000004")
    shutil.rmtree(out / "final")
    capsys.readouterr()

    def refuse(*_, **__):
        raise AssertionError("the Fisher was measured again on resume")

    monkeypatch.setattr("chatforge.engine.ewc.diagonal_fisher", refuse)
    assert main(args) == 0
    said = capsys.readouterr().out
    assert "resumed from" in said and "ewc: anchor and Fisher read from" in said
    resumed = AutoModelForCausalLM.from_pretrained(out / "final").state_dict()
    for name, value in straight.items():
        torch.testing.assert_close(resumed[name], value)


def test_sft_ewc_option_and_refusals(tmp_path, base_dir, world, capsys):
    train = world / "instructions" / "train.jsonl"
    text_a = world / "pretrain" / "world_a_train.jsonl"
    ewc = f"ewc={{weight: 5.0, samples: 3, sources: [{{path: {text_a}}}], cache_dir: {tmp_path / 'cache'}}}"
    common = [f"model={base_dir}", f"data.sources=[{{path: {train}}}]", "data.seq_len=256", "train.max_steps=3",
              "train.micro_batch_size=2", "train.progress=false", "train.device=cpu", "train.save_every=0", "optim.lr=1e-2"]
    assert main(["sft", f"out={tmp_path / 'run'}", *common, ewc]) == 0
    rows = _metrics(tmp_path / "run")
    assert [r["ewc_penalty"] for r in rows if "ewc_penalty" in r][-1] > 0
    assert (tmp_path / "run" / "ewc.safetensors").is_file()
    # Reusing the stored file in another run: no measurement, the same anchor and Fisher.
    assert main(["sft", f"out={tmp_path / 'again'}", *common, f"ewc={{weight: 5.0, fisher: {tmp_path / 'run' / 'ewc.safetensors'}}}"]) == 0
    assert "anchor and Fisher read from" in capsys.readouterr().out
    capsys.readouterr()
    assert main(["sft", f"out={tmp_path / 'lora'}", *common, ewc, "mode=lora"]) == 2
    assert "ewc with mode=lora is not supported" in capsys.readouterr().err
    assert main(["sft", f"out={tmp_path / 'empty'}", *common, "ewc={weight: 1.0}"]) == 2
    assert "ewc needs the old task's data" in capsys.readouterr().err
