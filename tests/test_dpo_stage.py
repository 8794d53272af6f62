"""The DPO stage on a tiny model: log-probs, reference modes, the cache, training and export."""

from __future__ import annotations

import json

import pytest
import torch

from chatforge.cli import main
from chatforge.losses.lm import IGNORE_INDEX
from chatforge.run_dir import RejectLog
from tiny_models import make_tiny_model

SYSTEM = {"role": "system", "content": "Answer briefly."}


@pytest.fixture(scope="module")
def other_dir(tmp_path_factory, base_dir):
    """A second tiny model (another seed) to serve as a reference different from the policy."""
    from chatforge.tokenizer.load import load_tokenizer

    out = tmp_path_factory.mktemp("other")
    tokenizer = load_tokenizer(base_dir)
    make_tiny_model(vocab_size=len(tokenizer), seed=1, max_position_embeddings=256).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    """Separable pairs: the chosen answer is always the same short sentence, the rejected another one."""
    out = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    rows = []
    for i in range(16):
        prompt = [SYSTEM, {"role": "user", "content": f"What is item {i}?"}]
        rows.append({"id": i, "category": "even" if i % 2 == 0 else "odd", "prompt": prompt,
                     "chosen": f"Item {i} is fine.", "rejected": "No idea at all, go away.",
                     "p_star": 1.0 if i % 2 == 0 else 0.75})
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def _dpo(out, base, pairs, *extra, steps=2):
    args = ["dpo", f"model={base}", f"out={out}", f"data.sources=[{{path: {pairs}}}]", f"data.val_sources=[{{path: {pairs}}}]",
            f"train.max_steps={steps}", "train.micro_batch_size=4", "train.progress=false", "train.device=cpu",
            "train.save_every=0", "train.eval_every=0", "data.max_length=128", *extra]
    assert main(args) == 0
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return json.loads((out / "report" / "summary.json").read_text()), [m for m in metrics if "loss" in m]


def _encoded(tokenizer, pairs_file):
    from chatforge.dpo.data import PairSourceConfig, encode_pairs, read_pairs

    rejects = RejectLog(None)
    return encode_pairs(tokenizer, read_pairs([PairSourceConfig(path=str(pairs_file))], rejects), rejects, 128)


def test_concatenated_forward_matches_separate_forwards(base_dir, pairs_file):
    from transformers import AutoModelForCausalLM

    from chatforge.dpo.data import collate_pairs
    from chatforge.dpo.objective import sequence_logps
    from chatforge.tokenizer.load import load_tokenizer

    tokenizer = load_tokenizer(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    encoded = _encoded(tokenizer, pairs_file)[:3]
    with torch.no_grad():
        logps, counts = sequence_logps(model, collate_pairs(encoded, tokenizer.pad_token_id))
        expected, expected_counts = [], []
        for ids, labels in [(p.chosen_ids, p.chosen_labels) for p in encoded] + [(p.rejected_ids, p.rejected_labels) for p in encoded]:
            # one unpadded row, full logits: Σ_t log p(ids[t+1] | ids[:t+1]) over the answer tokens
            logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].log_softmax(-1)
            target = torch.tensor(labels[1:])
            keep = target != IGNORE_INDEX
            expected.append(logits[keep].gather(1, target[keep, None]).sum())
            expected_counts.append(int(keep.sum()))
    torch.testing.assert_close(logps, torch.stack(expected), atol=1e-4, rtol=1e-5)
    assert counts.tolist() == expected_counts
    # only the final answer (and its end-of-turn token) is scored: "Item 0 is fine." is a handful of tokens
    assert all(0 < c < 20 for c in expected_counts)


def test_pair_layouts_and_rejects(tmp_path, tiny_tokenizer):
    from chatforge.dpo.data import PairSourceConfig, encode_pairs, read_pairs

    user, a, b = {"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}, {"role": "assistant", "content": "Go."}
    rows = [
        {"prompt": "Hi?", "chosen": "Hello.", "rejected": "Go."},  # TRL standard
        {"prompt": [user], "chosen": [a], "rejected": [b]},  # TRL conversational
        {"chosen": [user, a], "rejected": [user, b]},  # implicit prompt (UltraFeedback-binarized style)
        {"prompt": "Hi?", "chosen": [user, a], "rejected": [user, b], "system": "Be kind."},
        {"prompt": "Hi?", "chosen": "Same.", "rejected": "Same."},  # identical_responses
        {"prompt": "Hi?", "chosen": "Hello."},  # missing_field
        {"prompt": "Hi?", "chosen": [a, user, a], "rejected": "Go."},  # multi_message_response
        {"prompt": 3, "chosen": "x", "rejected": "y"},  # bad_field
        {"prompt": [user, a], "chosen": "x", "rejected": "y"},  # out_of_order (prompt ends with an answer)
    ]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{not json\n")
    log = tmp_path / "rejected.jsonl"
    with RejectLog(log) as rejects:
        pairs = list(read_pairs([PairSourceConfig(path=str(path))], rejects))
        encoded = encode_pairs(tiny_tokenizer, pairs, rejects, 128)
    assert [p.prompt[-1]["content"] for p in pairs] == ["Hi?"] * 4
    assert pairs[0].chosen == pairs[1].chosen == pairs[2].chosen == "Hello." and pairs[2].rejected == "Go."
    assert pairs[3].prompt[0] == {"role": "system", "content": "Be kind."}
    assert len(encoded) == 4
    assert dict(rejects.counts) == {
        "identical_responses": 1, "missing_field": 1, "multi_message_response": 1, "bad_field": 1, "out_of_order": 1, "bad_json": 1,
    }
    first = json.loads(log.read_text().splitlines()[0])
    assert first["where"] == "line 5" and first["source"] == str(path)


def test_precomputed_equals_live_and_cache_is_reused(tmp_path, base_dir, other_dir, pairs_file):
    ref = f"reference={other_dir}"  # a reference unlike the policy, so step 1's loss is not log 2
    pre, pre_metrics = _dpo(tmp_path / "pre", base_dir, pairs_file, ref, steps=1)
    live, live_metrics = _dpo(tmp_path / "live", base_dir, pairs_file, ref, "reference_mode=live", steps=1)
    assert pre["reference_cache_reused"] is False and live["reference_mode"] == "live"
    assert abs(pre_metrics[0]["loss"] - 0.6931) > 1e-3
    for key in ("loss", "rewards/margin", "rewards/chosen", "logps/rejected"):
        assert pre_metrics[0][key] == pytest.approx(live_metrics[0][key], abs=1e-4)
    assert pre["eval"]["dpo"]["eval/margin"] == pytest.approx(live["eval"]["dpo"]["eval/margin"], abs=1e-3)
    # rerun in the same directory: the reference log-probs come from the cache
    again, again_metrics = _dpo(tmp_path / "pre", base_dir, pairs_file, ref, "train.resume=never", steps=1)
    assert again["reference_cache_reused"] is True
    assert again_metrics[-1]["loss"] == pytest.approx(pre_metrics[-1]["loss"], abs=1e-5)


def test_reference_free_ignores_the_reference_and_lora_merges(tmp_path, base_dir, pairs_file):
    from transformers import AutoModelForCausalLM

    summary, metrics = _dpo(
        tmp_path / "rf", base_dir, pairs_file, "loss.reference_free=true", "reference=/no/such/model", "mode=lora", steps=1
    )
    assert summary["reference_mode"] is None and not (tmp_path / "rf" / "reference_logps.pt").exists()
    step = metrics[0]  # rewards are β log π: the reference is 0
    assert step["rewards/chosen"] == pytest.approx(0.1 * step["logps/chosen"], rel=1e-5)
    assert 0 < summary["trainable_parameters"] < summary["parameters"]
    final = AutoModelForCausalLM.from_pretrained(tmp_path / "rf" / "final", dtype=torch.float32)
    assert not any("lora" in k for k in final.state_dict())

    # per-pair p* (the seed's weight): ε = 1 − p* = 0 on even items, 0.25 on odd ones. Per pair
    # −(1−ε) log σ(x) − ε log σ(−x) = −log σ(x) + ε·x with x = βh the margin, so the mean loss grows
    # by 0.25 · (odd pairs' mean margin) · 8/16 over plain DPO; a p* outside [0.5, 1] is rejected.
    bad = tmp_path / "pairs.jsonl"
    bad.write_text(pairs_file.read_text() + json.dumps({"prompt": "Hi?", "chosen": "a", "rejected": "b", "p_star": 0.2}) + "\n")
    weighted, _ = _dpo(tmp_path / "pstar", base_dir, bad, "loss.reference_free=true", "loss.preference_field=p_star", steps=1)
    assert weighted["rejected"] == {"bad_field": 2}  # once as a training pair, once as a held-out one
    plain = summary["eval"]["base"]
    expected = plain["eval/loss"] + 0.25 * plain["eval/category/odd/margin"] * 8 / 16
    assert weighted["eval"]["base"]["eval/loss"] == pytest.approx(expected, abs=1e-5)


def test_training_separates_the_pairs_and_exports_plain_model(tmp_path, base_dir, pairs_file):
    from transformers import AutoModelForCausalLM

    summary, metrics = _dpo(tmp_path / "run", base_dir, pairs_file, "optim.lr=3e-3", "loss.sft_weight=0.1", steps=8)
    base, after = summary["eval"]["base"], summary["eval"]["dpo"]
    assert base["eval/margin"] == pytest.approx(0.0, abs=1e-4)  # the policy starts as its reference
    assert after["eval/margin"] > 0.5 and after["eval/reward_accuracy"] == 1.0
    assert after["eval/logp_accuracy"] >= base["eval/logp_accuracy"]
    assert set(after) >= {"eval/category/even/reward_accuracy", "eval/category/odd/margin"}
    assert metrics[-1]["rewards/margin"] > metrics[0]["rewards/margin"] and "nll/chosen" in metrics[-1]
    final = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "final", dtype=torch.float32)
    start = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    assert any(not torch.equal(a, b) for a, b in zip(final.state_dict().values(), start.state_dict().values()))


def test_bad_config_is_one_line(capsys, base_dir):
    assert main(["dpo", f"model={base_dir}", "loss.loss=hinge", "loss.label_smoothing=0.1"]) == 2
    assert main(["dpo", f"model={base_dir}"]) == 2
    assert "data.sources is empty" in capsys.readouterr().err


def test_pair_batches_resume_the_same_order(tiny_tokenizer, pairs_file):
    from chatforge.dpo.data import PairBatches

    encoded = _encoded(tiny_tokenizer, pairs_file)
    ref = (torch.arange(16.0), -torch.arange(16.0))
    a = PairBatches(encoded, 3, tiny_tokenizer.pad_token_id, seed=5, reference=ref)
    first = [a.next_batch() for _ in range(7)]  # 21 pairs: crosses into the second epoch
    b = PairBatches(encoded, 3, tiny_tokenizer.pad_token_id, seed=5, reference=ref)
    for _ in range(4):
        b.next_batch()
    c = PairBatches(encoded, 3, tiny_tokenizer.pad_token_id, seed=5, reference=ref)
    c.load_state_dict(b.state_dict())
    for want in first[4:]:
        got = c.next_batch()
        assert torch.equal(got["input_ids"], want["input_ids"]) and torch.equal(got["ref_chosen_logps"], want["ref_chosen_logps"])
    seen = [int(i) for batch in first for i in batch["ref_chosen_logps"]]
    assert sorted(seen[:16]) == list(range(16))  # each epoch is a permutation of all pairs
    # two ranks split each global batch of 2 x 3 pairs between them
    ranks = [PairBatches(encoded, 3, tiny_tokenizer.pad_token_id, seed=5, rank=r, world_size=2, reference=ref) for r in (0, 1)]
    drawn = [int(i) for _ in range(2) for r in ranks for i in r.next_batch()["ref_chosen_logps"]]
    assert len(set(drawn)) == 12
