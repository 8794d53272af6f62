"""`chatforge rm` on tiny models built from config: score position, one forward, learning, export, rejects."""

from __future__ import annotations

import json

import pytest
import torch

from chatforge.cli import main
from chatforge.run_dir import RejectLog
from tiny_models import make_tiny_model


@pytest.fixture(scope="module")
def tokenizer(base_dir):
    from chatforge.tokenizer.load import load_tokenizer

    return load_tokenizer(base_dir)


def _groups(records, tokenizer, rejects=None):
    from chatforge.rm.data import encode_groups, parse_record

    groups = [parse_record(r, "mem", f"item {i}", "reward", False) for i, r in enumerate(records)]
    return encode_groups(groups, tokenizer, 256, "drop", rejects or RejectLog(None))[0]


RECORDS = [
    {"prompt": "What is 2 + 2?", "chosen": "The answer is 4.", "rejected": "It is five, I think, or maybe six."},
    {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}],
     "chosen": "Blue.", "rejected": "I will not."},
    {"prompt": "Reverse abc.", "responses": ["cba", "The answer is cba, reversed.", "abc", "no"],
     "rewards": [1.0, 0.8, 0.2, 0.0]},
]


def test_score_is_read_at_the_last_non_pad_token(base_dir, tokenizer):
    """Every row of a right-padded batch scores as its own unpadded forward does."""
    from chatforge.rm.data import collate
    from chatforge.rm.model import load_reward_model, rewards_of

    model = load_reward_model(str(base_dir), tokenizer).eval()
    groups = _groups(RECORDS, tokenizer)
    batch = collate(groups, tokenizer.pad_token_id)
    lengths = batch["attention_mask"].sum(1)
    assert len(set(lengths.tolist())) > 1 and (batch["input_ids"] == tokenizer.pad_token_id).any()
    with torch.no_grad():
        padded = rewards_of(model, batch)
        alone = [model(input_ids=torch.tensor([ids])).logits[0, 0] for g in groups for ids in g.input_ids]
    torch.testing.assert_close(padded, torch.stack(alone), atol=1e-5, rtol=1e-5)


def test_one_forward_for_all_responses_and_the_kwise_loss(base_dir, tokenizer):
    from chatforge.losses.reward import kwise_ranking_loss
    from chatforge.rm.data import collate
    from chatforge.rm.model import load_reward_model, rewards_of
    from chatforge.rm.objective import RMObjective

    model = load_reward_model(str(base_dir), tokenizer)
    batch = collate(_groups(RECORDS, tokenizer), tokenizer.pad_token_id)
    rows = []
    hook = model.model.register_forward_hook(lambda mod, args, kwargs_out: rows.append(1))
    out = RMObjective("kwise")(model, batch)
    hook.remove()
    assert len(rows) == 1 and batch["input_ids"].shape[0] == 2 + 2 + 4
    with torch.no_grad():
        r = rewards_of(model, batch)
    rewards = torch.zeros(3, 4)
    rewards[0, :2], rewards[1, :2], rewards[2] = r[0:2], r[2:4], r[4:8]
    expected, _, _ = kwise_ranking_loss(rewards, batch["ranks"], batch["slot_mask"])
    torch.testing.assert_close(out.loss_sum, expected.sum(), atol=1e-5, rtol=1e-5)
    assert int(out.count) == 3
    bt = RMObjective("bt")(model, batch)
    assert int(bt.count) == 1 + 1 + 6  # every ordered pair its own element


def test_margin_comes_from_the_gold_difference(base_dir, tokenizer):
    from chatforge.losses.reward import bradley_terry_loss
    from chatforge.rm.data import collate
    from chatforge.rm.model import load_reward_model, rewards_of
    from chatforge.rm.objective import RMObjective

    model = load_reward_model(str(base_dir), tokenizer).eval()
    record = {"prompt": "Hi", "chosen": "Hello.", "rejected": "Go away.", "chosen_reward": 1.0, "rejected_reward": 0.25}
    batch = collate(_groups([record], tokenizer), tokenizer.pad_token_id)
    with torch.no_grad():
        out = RMObjective("bt", margin_scale=2.0)(model, batch)
        r = rewards_of(model, batch)
    expected, _ = bradley_terry_loss(r[:1], r[1:], torch.tensor([2.0 * 0.75]))
    torch.testing.assert_close(out.loss_sum, expected.sum())


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_export_reloads_as_plain_sequence_classifier(tmp_path, base_dir, tokenizer, mode):
    from transformers import AutoModelForSequenceClassification

    from chatforge.rm.data import collate
    from chatforge.rm.model import apply_rm_mode, export_reward_model, load_reward_model, rewards_of
    from chatforge.scoring import build_scorer
    from chatforge.sft.modes import LoraSettings

    model = apply_rm_mode(load_reward_model(str(base_dir), tokenizer), mode, LoraSettings(dropout=0.0))
    with torch.no_grad():  # move the head and (LoRA) adapters away from their initial values
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    model.eval()
    groups = _groups(RECORDS, tokenizer)
    batch = collate(groups, tokenizer.pad_token_id)
    with torch.no_grad():
        trained = rewards_of(model, batch)
    export_reward_model(model, mode, tmp_path / "final", tokenizer)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "final").eval()
    assert reloaded.config.num_labels == 1 and reloaded.config.pad_token_id == tokenizer.pad_token_id
    assert not any("lora" in k or "modules_to_save" in k for k in reloaded.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(rewards_of(reloaded, batch), trained, atol=1e-5, rtol=1e-5)
    # What a scorer loads (chatforge.scoring) scores the same, through the exported chat template.
    scorer = build_scorer({"kind": "reward_model", "path": str(tmp_path / "final"), "batch_size": 3, "device": "cpu"})
    prompts = [g.prompt for g in groups for _ in g.responses]
    responses = [r for g in groups for r in g.responses]
    torch.testing.assert_close(torch.tensor(scorer.score(prompts, responses)), trained, atol=1e-5, rtol=1e-5)


def _write(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def _separable(n, start=0):
    """The prompt asks for 'yes' or 'no' (alternating) and the chosen answer obeys, so a random head,
    which prefers one word everywhere, is right on about half the pairs: learning needs the prompt."""
    out = []
    for i in range(start, start + n):
        want, other = ("yes", "no") if i % 2 == 0 else ("no", "yes")
        pair = {"prompt": f"Question {i}: say {want}.", "chosen": want, "rejected": other,
                "category": "even" if i % 2 == 0 else "odd", "chosen_reward": 1.0, "rejected_reward": 0.0}
        out.append(pair)
    return out


def test_stage_learns_a_separable_preference_and_rejects_bad_records(tmp_path, base_dir):
    train = _write(tmp_path / "train.jsonl", [
        *_separable(24),
        "{not json",
        {"prompt": "x", "chosen": "a"},  # missing_field
        {"prompt": "x", "chosen": "same", "rejected": "same"},  # no_order
        {"prompt": "x", "responses": ["only one"]},  # too_few_responses
        {"prompt": "x", "chosen": "  ", "rejected": "b"},  # empty_content
        {"chosen": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
         "rejected": [{"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]},  # prompt_mismatch
        {"text": "hello"},  # unknown_format
    ])
    val = _write(tmp_path / "val.jsonl", _separable(12, start=100))
    out = tmp_path / "run"
    args = ["rm", f"model={base_dir}", f"out={out}", f"data.sources=[{{path: {train}}}]",
            f"data.val_sources=[{{path: {val}}}]", "train.max_steps=30", "train.micro_batch_size=4",
            "optim.lr=3e-3", "train.progress=false", "train.device=cpu", "train.save_every=0", "loss=bt"]
    assert main(args) == 0
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert summary["rejected"] == {"bad_json": 1, "missing_field": 1, "no_order": 1, "too_few_responses": 1,
                                   "empty_content": 1, "prompt_mismatch": 1, "unknown_format": 1}
    reasons = [json.loads(line)["reason"] for line in (out / "rejected.jsonl").read_text().splitlines()]
    assert sorted(reasons) == sorted(summary["rejected"])
    assert all(json.loads(line)["where"].startswith("line ") for line in (out / "rejected.jsonl").read_text().splitlines())
    assert summary["train"]["pairs"] == 24
    after = summary["eval"]
    assert summary["eval_before"]["val/pairs/accuracy"] <= 0.6 and after["val/pairs/accuracy"] >= 0.9
    assert after["val/pairs/gold_agreement"] == after["val/pairs/accuracy"] and "val/pairs/accuracy/category/odd" in after
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in metrics if "accuracy" in m]
    assert {"loss", "accuracy", "rewards/margin", "rewards/mean"} <= steps[-1].keys()
    assert (out / "final" / "model.safetensors").exists()


def test_layouts_parse_to_the_same_group(tokenizer):
    from chatforge.rm.data import parse_record

    plain = parse_record({"prompt": "Hi", "chosen": "A", "rejected": "B"}, "f", "line 1", "reward", False)
    conversational = parse_record({
        "chosen": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "A"}],
        "rejected": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "B"}],
    }, "f", "line 2", "reward", False)
    explicit = parse_record({"prompt": [{"role": "user", "content": "Hi"}], "chosen": [{"role": "assistant", "content": "A"}],
                             "rejected": [{"role": "assistant", "content": "B"}]}, "f", "line 3", "reward", False)
    for g in (plain, conversational, explicit):
        assert (g.prompt, g.responses, g.ranks) == ([{"role": "user", "content": "Hi"}], ["A", "B"], [0, 1])
    ranking = parse_record({"prompt": "Q", "responses": ["a", "b", "c"], "ranks": [0, 1, 1]}, "f", "line 4", "reward", False)
    assert ranking.ranks == [0, 1, 1] and not ranking.is_pair


def test_rank_correlations_by_hand():
    from chatforge.rm.evaluate import kendall_tau, spearman

    # x = [1, 2, 3, 4], y = [1, 3, 2, 4]: 5 concordant, 1 discordant of 6 → τ = 4/6;
    # ρ = 1 − 6Σd²/(n(n²−1)) = 1 − 6·2/60 = 0.8.
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    # a tie in y: τ-b = (C − D) / sqrt(6 · 5) with C = 5, D = 0
    assert kendall_tau([1, 2, 3, 4], [1, 1, 2, 3]) == pytest.approx(5 / 30**0.5)


def test_example_config_loads_and_missing_data_is_one_clear_error(tmp_path, base_dir, capsys):
    from pathlib import Path

    from chatforge.config.load import load_config
    from chatforge.stages import rm

    example = Path(__file__).resolve().parents[1] / "examples" / "rm" / "world_rm.yaml"
    cfg = load_config(rm.Config, example)
    assert cfg.loss == "kwise" and cfg.train.max_steps == 70 and len(cfg.data.val_sources) == 2
    missing = tmp_path / "nope.jsonl"
    assert main(["rm", f"model={base_dir}", f"out={tmp_path / 'run'}", f"data.sources=[{{path: {missing}}}]"]) == 2
    assert f"error: input not found: {missing}" in capsys.readouterr().err


def test_group_batches_resume_where_they_stopped(tokenizer):
    from chatforge.rm.data import GroupBatches

    groups = _groups(RECORDS * 3, tokenizer)
    first = GroupBatches(groups, 2, tokenizer.pad_token_id, seed=7)
    for _ in range(5):  # crosses an epoch boundary (9 groups, 2 per batch)
        first.next_batch()
    state = first.state_dict()
    expected = [first.next_batch() for _ in range(4)]
    resumed = GroupBatches(groups, 2, tokenizer.pad_token_id, seed=7)
    resumed.load_state_dict(state)
    for want in expected:
        got = resumed.next_batch()
        assert want.keys() == got.keys()
        assert all(torch.equal(want[k].nan_to_num(-1.0), got[k].nan_to_num(-1.0)) for k in want)  # gold: NaN = none


def test_lora_stage_exports_a_plain_model_with_a_trained_head(tmp_path, base_dir):
    from transformers import AutoModelForSequenceClassification

    train = _write(tmp_path / "train.jsonl", _separable(8))
    out = tmp_path / "run"
    assert main(["rm", f"model={base_dir}", f"out={out}", f"data.sources=[{{path: {train}}}]", "mode=lora",
                 "train.max_steps=2", "train.micro_batch_size=4", "optim.lr=1e-2", "train.progress=false",
                 "train.device=cpu", "train.save_every=0", "margin_scale=1.0", "center_coefficient=0.01"]) == 0
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert 0 < summary["trainable_parameters"] < summary["parameters"]
    state = AutoModelForSequenceClassification.from_pretrained(out / "final").state_dict()
    assert "score.weight" in state and not any("lora" in k or "modules_to_save" in k for k in state)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert "loss/center" in metrics[-1]


def test_pack_groups_layout_by_hand():
    """Units first fit, longest first, into rows as wide as the longest unit; positions restart per
    unit and a response's own tokens continue its shared prefix; rewards at the last non-pad token."""
    from chatforge.rm.data import pack_groups

    pad = 0
    groups = [[[5, 6, 7, 8], [5, 6, 9]], [[3, 4, pad]]]  # a pair sharing [5, 6]; a response ending in pad
    plain = pack_groups(groups, pad, share_prefix=False)  # units of 4, 3, 3 in rows of 4
    assert plain["input_ids"].tolist() == [[5, 6, 7, 8], [5, 6, 9, pad], [3, 4, pad, pad]]
    assert plain["position_ids"].tolist() == [[0, 1, 2, 3], [0, 1, 2, 0], [0, 1, 2, 0]]
    assert plain["reward_index"].tolist() == [3, 6, 9] and plain["lengths"].tolist() == [4, 3, 3]
    assert "segment_ids" not in plain
    shared = pack_groups(groups, pad, share_prefix=True)  # units of 2 + 2 + 1 = 5 and 3 in rows of 5
    assert shared["input_ids"].tolist() == [[5, 6, 7, 8, 9], [3, 4, pad, pad, pad]]
    assert shared["position_ids"].tolist() == [[0, 1, 2, 3, 2], [0, 1, 2, 0, 1]]
    assert shared["branch_ids"].tolist() == [[0, 0, 1, 1, 2], [0, 0, 0, 0, 0]]
    assert shared["segment_ids"].tolist() == [[1, 1, 1, 1, 1], [2, 2, 2, 0, 0]]
    assert shared["reward_index"].tolist() == [3, 4, 6] and shared["lengths"].tolist() == [4, 3, 3]
    # a ranking wider than twice its longest response (4 + 3 + 3 > 8) goes into two units, the prefix in each
    ranking = pack_groups([[[1, 2, 3, 4], [1, 5, 6, 7], [1, 8, 9, 10]]], pad, share_prefix=True)
    assert ranking["input_ids"].tolist() == [[1, 2, 3, 4, 5, 6, 7], [1, 8, 9, 10, pad, pad, pad]]
    assert ranking["position_ids"].tolist() == [[0, 1, 2, 3, 1, 2, 3], [0, 1, 2, 3, 0, 1, 2]]
    assert ranking["branch_ids"].tolist() == [[0, 1, 1, 1, 2, 2, 2], [0, 3, 3, 3, 0, 0, 0]]
    assert ranking["reward_index"].tolist() == [3, 6, 10]


def _parameter_grads(model, objective, batch):
    model.zero_grad(set_to_none=True)
    out = objective(model, batch)
    out.loss_sum.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return out, grads


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("packing", ["pack", "shared_prefix"])
def test_packed_forward_gives_the_padded_rewards_loss_and_gradients(tmp_path, tokenizer, attn, packing):
    """Packed rows (several responses per row, shared prompts once) are the padded forward's rewards,
    K-wise loss (margin, centring) and parameter gradients to float rounding, in one forward."""
    from chatforge.rm.data import collate
    from chatforge.rm.evaluate import score_groups
    from chatforge.rm.model import check_packed_rewards, load_reward_model, rewards_of
    from chatforge.rm.objective import RMObjective

    make_tiny_model(vocab_size=len(tokenizer), max_position_embeddings=256, attn_implementation=attn).save_pretrained(tmp_path)
    model = load_reward_model(str(tmp_path), tokenizer)
    torch.nn.init.normal_(model.score.weight, std=0.5)  # a head far from zero: rewards that differ
    assert check_packed_rewards(model, tokenizer.pad_token_id, share_prefix=packing == "shared_prefix") < 1e-5
    long = "Hello there, how are you today? " * 6  # one long response: rows wide enough for several others
    gold = {"chosen_reward": 1.0, "rejected_reward": 0.25}  # margin_scale needs gold rewards everywhere
    records = [RECORDS[0] | gold, RECORDS[1] | gold, RECORDS[2],
               {"prompt": "Say hi.", "chosen": "hi", "rejected": long, "chosen_reward": 1.0, "rejected_reward": 0.5}]
    groups = _groups(records, tokenizer)
    padded, packed = collate(groups, tokenizer.pad_token_id, "pad"), collate(groups, tokenizer.pad_token_id, packing)
    # the layout really packs: fewer token positions than the padded rows, several responses in a row
    assert packed["input_ids"].numel() < padded["input_ids"].numel()
    assert packed["input_ids"].shape[0] < len(packed["reward_index"])
    assert torch.equal(packed["lengths"], padded["lengths"])
    with torch.no_grad():
        torch.testing.assert_close(rewards_of(model, packed), rewards_of(model, padded), atol=1e-5, rtol=1e-5)
    forwards = []
    hook = model.model.register_forward_hook(lambda *_: forwards.append(1))
    objective = RMObjective("kwise", margin_scale=0.5, center_coefficient=0.1)
    out_packed, grads_packed = _parameter_grads(model, objective, packed)
    hook.remove()
    out_padded, grads_padded = _parameter_grads(model, objective, padded)
    assert len(forwards) == 1
    torch.testing.assert_close(out_packed.loss_sum, out_padded.loss_sum, atol=1e-5, rtol=1e-5)
    assert out_packed.tokens == out_padded.tokens == int(padded["attention_mask"].sum())
    assert grads_packed.keys() == grads_padded.keys() and "score.weight" in grads_packed
    for name, grad in grads_padded.items():
        torch.testing.assert_close(grads_packed[name], grad, atol=1e-5, rtol=1e-4, msg=name)
    model.eval()
    for want, got in zip(score_groups(model, groups, tokenizer.pad_token_id, 2, "pad"),
                         score_groups(model, groups, tokenizer.pad_token_id, 2, packing)):
        assert got == pytest.approx(want, abs=1e-5)


def test_packing_check_refuses_a_model_whose_packed_responses_see_each_other(tokenizer):
    """ALiBi Falcon builds its bias from the attention mask, not from position ids: packing must refuse."""
    from transformers import FalconConfig, FalconForSequenceClassification

    from chatforge.errors import ConfigError
    from chatforge.rm.model import check_packed_rewards

    torch.manual_seed(0)
    config = FalconConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                          alibi=True, new_decoder_architecture=False, multi_query=True, num_labels=1,
                          pad_token_id=tokenizer.pad_token_id, attn_implementation="sdpa")
    model = FalconForSequenceClassification(config)
    with pytest.raises(ConfigError, match="data.packing"):
        check_packed_rewards(model, tokenizer.pad_token_id, share_prefix=False)
