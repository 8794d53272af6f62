"""`chatforge sft` end to end on tiny models built from config: full, LoRA (merged), freeze, rejects."""

from __future__ import annotations

import json

import pytest
import torch

from chatforge.cli import main
from tiny_models import make_tiny_model


def _state(path):
    from transformers import AutoModelForCausalLM

    return {k: v.clone() for k, v in AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).state_dict().items()}


def _sft(out, base, train, *extra):
    args = ["sft", f"model={base}", f"out={out}", f"data.sources=[{{path: {train}}}]", "data.seq_len=256",
            "train.max_steps=4", "train.micro_batch_size=2", "train.progress=false", "train.device=cpu",
            "train.save_every=0", *extra]
    assert main(args) == 0
    return json.loads((out / "report" / "summary.json").read_text())


def test_full_end_to_end(tmp_path, base_dir, world):
    train = world / "instructions" / "train.jsonl"
    summary = _sft(tmp_path / "run", base_dir, train, f"data.val_sources=[{{path: {world / 'instructions' / 'test.jsonl'}}}]")
    assert summary["trainable_parameters"] == summary["parameters"]
    assert summary["train"]["examples"] > 0 and summary["steps"] == 4
    assert summary["val_loss"] is not None and summary["final_train_loss"] > 0
    final = tmp_path / "run" / "final"
    after, before = _state(final), _state(base_dir)
    assert after.keys() == before.keys()
    assert any(not torch.equal(after[k], before[k]) for k in before)
    from chatforge.tokenizer.load import load_tokenizer

    assert load_tokenizer(final).chat_template == load_tokenizer(base_dir).chat_template


def test_lora_merges_into_plain_model(tmp_path, base_dir, world):
    train = world / "instructions" / "train.jsonl"
    summary = _sft(tmp_path / "run", base_dir, train, "mode=lora", "optim.lr=1e-2", "lora.save_adapter=true")
    assert 0 < summary["trainable_parameters"] < summary["parameters"]
    final = tmp_path / "run" / "final"
    after, before = _state(final), _state(base_dir)
    assert after.keys() == before.keys()
    assert not any("lora" in k or "base_model" in k for k in after)
    targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    changed = [k for k in before if not torch.equal(after[k], before[k])]
    assert changed and all(any(t in k for t in targets) for k in changed)
    # Every change is the merged low-rank update: W_final - W_base == (alpha / r) * B @ A.
    from safetensors.torch import load_file

    adapter = load_file(tmp_path / "run" / "adapter" / "adapter_model.safetensors")
    for key in changed:
        stem = "base_model.model." + key.removesuffix(".weight")
        delta = adapter[stem + ".lora_B.weight"] @ adapter[stem + ".lora_A.weight"] * (16 / 8)
        torch.testing.assert_close(after[key] - before[key], delta, atol=1e-6, rtol=1e-4)


def test_freeze_leaves_frozen_bit_identical(tmp_path, base_dir, world):
    train = world / "instructions" / "train.jsonl"
    summary = _sft(tmp_path / "run", base_dir, train, "mode=freeze", "freeze.train_last_n_blocks=1",
                   "freeze.train_modules=[model\\.norm]", "optim.lr=1e-2", "data.packing=pad")
    assert 0 < summary["trainable_parameters"] < summary["parameters"]
    after, before = _state(tmp_path / "run" / "final"), _state(base_dir)
    for k in before:
        trained = k.startswith("model.layers.1.") or k == "model.norm.weight"
        assert torch.equal(after[k], before[k]) != trained, k


def test_loss_goes_down_and_malformed_record_rejected(tmp_path, base_dir):
    train = tmp_path / "train.jsonl"
    good = [{"messages": [{"role": "user", "content": f"Say {w}."}, {"role": "assistant", "content": f"{w} {w} {w}."}]}
            for w in ("apple", "river", "stone", "cloud")]
    lines = [json.dumps(r) for r in good * 4] + ['{"messages": [{"role": "user"', json.dumps({"messages": []})]
    train.write_text("\n".join(lines) + "\n")
    summary = _sft(tmp_path / "run", base_dir, train, "train.max_steps=20", "optim.lr=1e-2", "train.micro_batch_size=4",
                   "data.seq_len=64", "data.packing=pad")
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [m["loss"] for m in metrics if "loss" in m]
    assert len(losses) == 20 and sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3
    rejected = [json.loads(line) for line in (tmp_path / "run" / "rejected.jsonl").read_text().splitlines()]
    assert len(rejected) == 2 and sum(summary["rejected"].values()) == 2
    assert summary["train"]["examples"] == 16


def test_exact_match_table_base_vs_sft(tmp_path, base_dir, world, capsys):
    test = world / "instructions" / "test.jsonl"
    summary = _sft(
        tmp_path / "run", base_dir, world / "instructions" / "train.jsonl",
        f"eval={{path: {test}, max_examples: 12, max_new_tokens: 8}}",
    )
    table = summary["exact_match"]
    # Prompts that fill the tiny model's 256 positions are rejected (once, by the base eval), not answered.
    too_long = summary["rejected"].get("prompt_too_long", 0)
    assert table["base"]["rejected"] == table["sft"]["rejected"] == ({"prompt_too_long": too_long} if too_long else {})
    assert table["base"]["total"] == table["sft"]["total"] == 12 - too_long > 0
    assert sum(t["total"] for t in table["sft"]["per_task"].values()) == 12 - too_long
    assert 0 <= table["sft"]["accuracy"] <= 1 and "task type" in capsys.readouterr().out


def test_exact_match_checks_answers_by_hand():
    from chatforge.evaluation.instructions import _correct

    record = {"messages": [{"role": "user", "content": "Compute 2 + 3."}, {"role": "assistant", "content": "5"}],
              "answers": ["5"]}
    assert _correct(record, "5", "answers") and not _correct(record, "6", "answers")
    assert _correct(record, "2 + 3 = 5. The answer is 5.", "world")
    assert not _correct(record, "The answer is 6.", "world")


def test_exact_match_eval_file_skips_bad_lines_into_rejects(tmp_path):
    from chatforge.errors import DataError
    from chatforge.evaluation.instructions import InstructionEval, load_records
    from chatforge.run_dir import RejectLog

    good = {"messages": [{"role": "user", "content": "Compute 2 + 3."}, {"role": "assistant", "content": "5"}]}
    path = tmp_path / "test.jsonl"
    lines = [json.dumps(good), "{oops", json.dumps({"messages": good["messages"][:1]}), json.dumps(good), '"text"']
    path.write_bytes(("\n".join(lines) + "\n").encode() + b"\xff\n")
    with RejectLog(tmp_path / "rejected.jsonl") as rejects:
        records = load_records(InstructionEval(path=str(path)), rejects)
        assert len(records) == 2
        with pytest.raises(DataError, match=r"^instruction eval: .*test.jsonl: no usable records \(6 records skipped.*bad_field: 3"):
            load_records(InstructionEval(path=str(path), checker="answers"), RejectLog(None))
    rejected = [json.loads(line) for line in (tmp_path / "rejected.jsonl").read_text().splitlines()]
    assert [(r["where"], r["reason"]) for r in rejected] == [
        ("line 2", "bad_json"), ("line 3", "bad_field"), ("line 5", "not_an_object"), ("line 6", "not_utf8"),
    ]


def _generate_greedy(model, tokenizer, prompts, max_new_tokens, stops):
    """The instruction eval's former path: transformers' greedy `generate` over left-padded chat prompts."""
    from chatforge.data.padding import pad_sequences
    from chatforge.sampling import chat_prompt

    ids, mask = pad_sequences([chat_prompt(tokenizer, p) for p in prompts], tokenizer.pad_token_id, side="left")
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=max_new_tokens,
                             eos_token_id=stops, pad_token_id=tokenizer.pad_token_id)
    rows = [row[ids.shape[1]:] for row in out.tolist()]
    return [tokenizer.decode(row[: next((i for i, t in enumerate(row) if t in stops), len(row))],
                             skip_special_tokens=True).strip() for row in rows]


def test_exact_match_answers_through_the_sampler_as_transformers_greedy(tiny_tokenizer, monkeypatch):
    from chatforge.evaluation import instructions
    from chatforge.sampling import chat_prompt
    from chatforge.sft import masking

    tokenizer = tiny_tokenizer
    # Larger initial weights than the default, so the random model's greedy answers vary (not one repeated token).
    model = make_tiny_model(vocab_size=len(tokenizer), max_position_embeddings=256, initializer_range=0.2).eval()
    prompts = [[{"role": "user", "content": text}] for text in ("Hi", "Compute 2 + 3, please.", "Reverse the word cat.")]
    stops = masking.end_of_turn_ids(tokenizer)
    expected = _generate_greedy(model, tokenizer, prompts, 10, stops)
    # A random model seldom ends its turn: also stop at the first answer's 4th token, so the cut is tested.
    first = torch.tensor([chat_prompt(tokenizer, prompts[0])])
    with torch.no_grad():
        answer = model.generate(input_ids=first, do_sample=False, max_new_tokens=4, pad_token_id=tokenizer.pad_token_id)
    cut = [*stops, answer[0, -1].item()]
    expected_cut = _generate_greedy(model, tokenizer, prompts, 10, cut)
    assert expected_cut[0] != expected[0] and len(set(expected)) == 3

    def no_generate(*args, **kwargs):
        raise AssertionError("the instruction eval generates through chatforge.sampling.Sampler")

    monkeypatch.setattr(model, "generate", no_generate)
    assert instructions.greedy_answers(model, tokenizer, prompts, 10, batch_size=2) == expected
    monkeypatch.setattr(masking, "end_of_turn_ids", lambda tok: cut)
    assert instructions.greedy_answers(model, tokenizer, prompts, 10, batch_size=3) == expected_cut


def test_crlft_run_end_to_end_with_conditioned_eval(tmp_path, base_dir, world):
    summary = _sft(
        tmp_path / "run", base_dir, world / "mixed_quality" / "train.jsonl", "crlft={}",
        f"eval={{path: {world / 'instructions' / 'test.jsonl'}, max_examples: 6, max_new_tokens: 4}}",
    )
    # The only rejects are eval prompts that fill the tiny model's 256 positions.
    too_long = summary["exact_match"]["sft"]["rejected"].get("prompt_too_long", 0)
    assert summary["train"]["examples"] > 0 and summary["rejected"] == ({"prompt_too_long": too_long} if too_long else {})
    assert summary["exact_match"]["sft"]["total"] == 6 - too_long
    # The exported template conditions on the best class by itself; the base template does not.
    from transformers import AutoTokenizer

    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    exported = AutoTokenizer.from_pretrained(tmp_path / "run" / "final")
    base = AutoTokenizer.from_pretrained(base_dir)
    assert exported.apply_chat_template(messages, tokenize=False) == base.apply_chat_template(
        [{"role": "system", "content": "Source: expert. Be brief."}, messages[1]], tokenize=False
    )
    assert "Source:" not in base.apply_chat_template(messages, tokenize=False)


def _final_and_metrics(run):
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return _state(run / "final"), [m["loss"] for m in metrics if "loss" in m]


def _interrupt_at(monkeypatch, call: int):
    """Ctrl-C inside the `call`-th micro-batch request of the next run."""
    from chatforge.sft.batches import SFTBatches

    original, calls = SFTBatches.next_batch, {"n": 0}

    def next_batch(self):
        calls["n"] += 1
        if calls["n"] == call:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(SFTBatches, "next_batch", next_batch)
    return lambda: monkeypatch.setattr(SFTBatches, "next_batch", original)


@pytest.mark.parametrize("mode", ["lora", "full_then_lora"])
def test_interrupted_run_resumes_to_the_uninterrupted_result(tmp_path, base_dir, world, monkeypatch, mode):
    """Ctrl-C mid-step, rerun: same final weights and per-step losses as one uninterrupted run (LoRA
    dropout on, so the RNG state at the step's start must be what the checkpoint restores)."""
    train = world / "instructions" / "train.jsonl"
    extra = [f"mode={mode}", "train.max_steps=6", "optim.lr=1e-2", "lora.dropout=0.1", "train.grad_accum_steps=2",
             "full_then_lora.switch_step=2"]
    _sft(tmp_path / "straight", base_dir, train, *extra)
    # Interrupted in step 5's first micro-batch (calls 1-8 are steps 1-4): full_then_lora is then in LoRA.
    restore = _interrupt_at(monkeypatch, 9)
    assert main(["sft", f"model={base_dir}", f"out={tmp_path / 'split'}", f"data.sources=[{{path: {train}}}]",
                 "data.seq_len=256", "train.micro_batch_size=2", "train.progress=false", "train.device=cpu",
                 "train.save_every=0", *extra]) == 130
    restore()
    assert (tmp_path / "split" / "checkpoints" / "step_000004").is_dir()
    summary = _sft(tmp_path / "split", base_dir, train, *extra)
    straight, straight_losses = _final_and_metrics(tmp_path / "straight")
    split, split_losses = _final_and_metrics(tmp_path / "split")
    assert split_losses == pytest.approx(straight_losses, rel=1e-6, abs=1e-7) and len(split_losses) == 6
    for key in straight:
        torch.testing.assert_close(split[key], straight[key], rtol=1e-5, atol=1e-6)
    if mode == "full_then_lora":
        assert [seg["mode"] for seg in summary["segments"]] == ["lora"]  # the full segment was already done
        assert summary["segments"][0]["steps"] == [4, 6]


def test_full_then_lora_switches_after_the_configured_step(tmp_path, base_dir, world):
    train = world / "instructions" / "train.jsonl"
    summary = _sft(tmp_path / "run", base_dir, train, "mode=full_then_lora", "train.max_steps=8",
                   "full_then_lora.switch_fraction=0.25", "full_then_lora.lora_lr=5e-3", "optim.lr=1e-3")
    full, lora = summary["segments"]
    assert (full["mode"], full["steps"], lora["mode"], lora["steps"]) == ("full", [0, 2], "lora", [2, 8])
    assert full["trainable_parameters"] == full["parameters"] and 0 < lora["trainable_parameters"] < lora["parameters"]
    assert summary["trainable_parameters"] == lora["trainable_parameters"]
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    lrs = {m["step"]: m["lr"] for m in metrics if "lr" in m}
    assert sorted(lrs) == list(range(1, 9))
    assert lrs[1] <= 1e-3 and lrs[3] > 1e-3  # the LoRA segment runs at its own peak LR on the same schedule
    after, before = _state(tmp_path / "run" / "final"), _state(base_dir)
    assert after.keys() == before.keys() and not any("lora" in k for k in after)
    # The full segment moved weights that LoRA never touches (norms, embeddings).
    assert not torch.equal(after["model.norm.weight"], before["model.norm.weight"])
    assert summary["peak_memory"]["peak_bytes"] > 0 and summary["tokens_per_s"] > 0


def test_full_then_lora_refuses_a_switch_outside_the_run(tmp_path, base_dir, world, capsys):
    train = world / "instructions" / "train.jsonl"
    args = ["sft", f"model={base_dir}", f"out={tmp_path / 'run'}", f"data.sources=[{{path: {train}}}]",
            "mode=full_then_lora", "train.max_steps=4", "full_then_lora.switch_step=4"]
    assert main(args) == 2
    assert "must be between 1 and train.max_steps - 1 = 3" in capsys.readouterr().err


def test_sft_stage_with_pretraining_mixed_in(tmp_path, base_dir, world):
    text = world / "pretrain" / "world_a_train.jsonl"
    summary = _sft(
        tmp_path / "run", base_dir, world / "instructions" / "train.jsonl", "train.max_steps=6",
        "train.micro_batch_size=4", f"data.pretrain_mix={{sources: [{{path: {text}}}], fraction: 0.3}}",
        f"data.pretrain_mix.cache_dir={tmp_path / 'cache'}",
    )
    assert 0.05 < summary["pretrain_rows_share"] < 0.6
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("loss/pretrain" in m for m in metrics) and all("loss/sft" in m for m in metrics if "loss" in m)
