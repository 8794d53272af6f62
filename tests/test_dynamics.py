"""Learning-dynamics probes: log-probs and argmax mass by hand, derived kinds, the squeezing verdict, the stages."""

from __future__ import annotations

import json

import pytest
import torch

from chatforge.cli import main
from chatforge.dynamics import (
    DynamicsConfig,
    detect_squeezing,
    encode_probes,
    measure,
    plot_dynamics,
    read_rows,
)
from chatforge.losses.lm import IGNORE_INDEX

SYSTEM = {"role": "system", "content": "Answer briefly."}


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    """Plain preference pairs (no probe kinds): the loader derives the irrelevant answers."""
    out = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    rows = [{"prompt": [SYSTEM, {"role": "user", "content": f"What is item {i}?"}],
             "chosen": f"Item {i} is a small red box.", "rejected": "No idea at all, go away."} for i in range(6)]
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def _model(base_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()


def _by_hand(model, ids, labels):
    """Σ log p and the mean of max_v p over the answer positions, from one full unpadded forward."""
    with torch.no_grad():
        probs = model(input_ids=torch.tensor([ids])).logits[0, :-1].float().softmax(-1)
    target = torch.tensor(labels[1:])
    keep = target != IGNORE_INDEX
    logp = probs[keep].gather(1, target[keep, None]).log().sum()
    return float(logp), int(keep.sum()), float(probs[keep].max(-1).values.mean())


def test_logps_and_argmax_mass_match_a_full_forward(base_dir, pairs_file):
    from chatforge.tokenizer.load import load_tokenizer

    tokenizer = load_tokenizer(base_dir)
    model = _model(base_dir)
    cfg = DynamicsConfig(probes=str(pairs_file), kinds=["chosen", "rejected", "irrelevant_train", "random_ids"], batch_size=4)
    probes = encode_probes(cfg, tokenizer)
    assert probes.kinds == ("chosen", "rejected", "irrelevant_train", "random_ids") and not probes.greedy
    row = measure(model, tokenizer, probes, batch_size=4)  # batches of 4 padded rows, sorted by length
    for kind in probes.kinds:
        hand = [_by_hand(model, p.ids[kind], p.labels[kind]) for p in probes.probes]
        assert row[f"logp/{kind}"] == pytest.approx(sum(h[0] for h in hand) / len(hand), abs=1e-4)
        assert row[f"logp_per_token/{kind}"] == pytest.approx(sum(h[0] / h[1] for h in hand) / len(hand), abs=1e-5)
        assert row[f"tokens/{kind}"] == sum(h[1] for h in hand) / len(hand)
    hand = [_by_hand(model, p.ids["chosen"], p.labels["chosen"]) for p in probes.probes]
    assert row["argmax_mass/chosen"] == pytest.approx(sum(h[2] for h in hand) / len(hand), abs=1e-5)
    assert 0 < row["argmax_mass/chosen"] <= 1


def test_greedy_answer_is_scored_as_generated(base_dir, pairs_file):
    """logp/greedy (teacher-forced on the generated ids) equals the sampler's own log-probs of them."""
    from chatforge.sampling.config import SamplingConfig
    from chatforge.sampling.sampler import Sampler, chat_prompt
    from chatforge.tokenizer.load import load_tokenizer

    tokenizer = load_tokenizer(base_dir)
    model = _model(base_dir)
    probes = encode_probes(DynamicsConfig(probes=str(pairs_file), kinds=["greedy"]), tokenizer)
    assert probes.kinds == () and probes.greedy
    row = measure(model, tokenizer, probes, greedy_max_new_tokens=6)
    prompts = [chat_prompt(tokenizer, p.probe.prompt) for p in probes.probes]
    done = Sampler(model, tokenizer).generate(prompts, SamplingConfig(temperature=0.0, max_new_tokens=6))
    expected = [sum(c[0].logprobs) for c in done]
    assert row["logp/greedy"] == pytest.approx(sum(expected) / len(expected), abs=1e-3)
    assert len(row["greedy_examples"]) == 3 and "argmax_mass/chosen" not in row


def test_derived_kinds(base_dir, pairs_file, tmp_path):
    from chatforge.tokenizer.load import load_tokenizer

    tokenizer = load_tokenizer(base_dir)
    special = set(tokenizer.all_special_ids)
    probes = encode_probes(DynamicsConfig(probes=str(pairs_file), seed=3), tokenizer)
    assert set(probes.kinds) == {"chosen", "rejected", "irrelevant_train", "irrelevant_test", "chosen_token_permuted", "random_ids"}
    assert probes.greedy and "no held-out split" in probes.notes["irrelevant_test"]
    rows = [json.loads(line) for line in pairs_file.read_text().splitlines()]
    first = probes.probes[0].probe.responses
    assert first["irrelevant_train"] == rows[1]["chosen"] and first["irrelevant_test"] == rows[3]["chosen"]
    permuted_somewhere = False
    for item in probes.probes:
        ids, labels = item.ids["chosen"], item.labels["chosen"]
        answer = [t for t, label in enumerate(labels) if label != IGNORE_INDEX]
        for kind in ("chosen_token_permuted", "random_ids"):
            new, new_labels = item.ids[kind], item.labels[kind]
            assert len(new) == len(ids)  # same length, same prompt, special tokens (end of turn) in place
            assert all(new[t] == ids[t] for t in range(len(ids)) if t not in answer or ids[t] in special)
            assert [t for t, label in enumerate(new_labels) if label != IGNORE_INDEX] == answer
            assert all(new_labels[t] == new[t] for t in answer)
        perm = item.ids["chosen_token_permuted"]
        assert sorted(perm[t] for t in answer) == sorted(ids[t] for t in answer)
        permuted_somewhere |= perm != ids
        rand = item.ids["random_ids"]
        assert all(0 <= rand[t] < len(tokenizer) and (rand[t] not in special or rand[t] == ids[t]) for t in answer)
    assert permuted_somewhere
    again = encode_probes(DynamicsConfig(probes=str(pairs_file), seed=3), tokenizer)  # seeded
    assert [p.ids["random_ids"] for p in again.probes] == [p.ids["random_ids"] for p in probes.probes]
    heldout = tmp_path / "test.jsonl"
    heldout.write_text(json.dumps({"prompt": "Q?", "chosen": "Held out answer.", "rejected": "x"}) + "\n")
    probes = encode_probes(DynamicsConfig(probes=str(pairs_file), heldout=str(heldout)), tokenizer)
    assert all(p.probe.responses["irrelevant_test"] == "Held out answer." for p in probes.probes)
    with pytest.raises(ValueError, match="unknown probe kind"):
        DynamicsConfig(probes="x", kinds=["chosen", "nonsense"])


def _rows(chosen, rejected, greedy):
    return [{"step": 5 * i, "logp/chosen": c, "logp/rejected": r, "logp/greedy": g}
            for i, (c, r, g) in enumerate(zip(chosen, rejected, greedy))]


def test_squeezing_detector():
    squeezed = detect_squeezing(_rows([-10, -11, -13], [-20, -25, -30], [-3, -2.5, -2.0]))
    assert squeezed["squeezing"] is True and squeezed["steps"] == [0, 10]
    assert squeezed["deltas"]["logp/chosen"] == -3 and squeezed["deltas"]["logp/greedy"] == 1.0
    # chosen rises (healthy DPO), greedy rising does not matter
    assert detect_squeezing(_rows([-10, -9], [-20, -30], [-3, -2]))["squeezing"] is False
    # both fall but the greedy answer falls too: mass spreads out, not squeezed into the argmax
    assert detect_squeezing(_rows([-10, -12], [-20, -30], [-3, -4]))["squeezing"] is False
    # falls within the threshold are noise
    assert detect_squeezing(_rows([-10, -10.3], [-20, -20.4], [-3, -2]), drop=0.5)["squeezing"] is False
    assert detect_squeezing(_rows([-10], [-20], [-3]))["squeezing"] is None
    assert detect_squeezing([{"step": 0, "logp/chosen": 1.0}, {"step": 1, "logp/chosen": 0.0}])["squeezing"] is None


def _dynamics(world, every):
    return f"dynamics={{probes: {world / 'probes' / 'probes.jsonl'}, max_probes: 4, every: {every}, greedy_max_new_tokens: 8}}"


def test_dpo_stage_writes_dynamics(tmp_path, base_dir, world):
    pairs = world / "preferences" / "pairs_train.jsonl"
    out = tmp_path / "dpo"
    args = ["dpo", f"model={base_dir}", f"out={out}", f"data.sources=[{{path: {pairs}}}]", "train.max_steps=5",
            "train.micro_batch_size=2", "train.progress=false", "train.device=cpu", "train.save_every=0",
            "train.eval_every=0", "data.max_length=256", _dynamics(world, 2)]
    assert main(args) == 0
    rows = read_rows(out / "dynamics.jsonl")
    assert [r["step"] for r in rows] == [0, 2, 4, 5]
    assert {"logp/chosen", "logp/rejected", "logp/greedy", "logp/random_ids", "argmax_mass/chosen", "greedy/gold_reward"} <= set(rows[0])
    assert (out / "report" / "dynamics.png").stat().st_size > 10_000
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert summary["dynamics"]["steps"] == [0, 2, 4, 5]
    assert summary["dynamics"]["squeezing"]["squeezing"] in (True, False)
    assert summary["eval"]["dpo"] is None  # no held-out pairs: the probes add no stage evaluation


def test_sft_stage_writes_dynamics_and_keeps_its_evaluation(tmp_path, base_dir, world):
    out = tmp_path / "sft"
    args = ["sft", f"model={base_dir}", f"out={out}", f"data.sources=[{{path: {world / 'instructions' / 'train.jsonl'}}}]",
            f"data.val_sources=[{{path: {world / 'instructions' / 'test.jsonl'}}}]", "data.seq_len=256",
            "train.max_steps=4", "train.micro_batch_size=2", "train.progress=false", "train.device=cpu",
            "train.save_every=0", "train.eval_every=2", _dynamics(world, 3)]
    assert main(args) == 0
    assert [r["step"] for r in read_rows(out / "dynamics.jsonl")] == [0, 3, 4]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "val/loss" in m] == [2, 4]  # the stage's own eval_every, unchanged
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert summary["val_loss"] is not None and summary["dynamics"]["probes"] == 4


def test_plot_overlays_runs(tmp_path):
    for name, shift in (("a", 0.0), ("b", 1.0)):
        lines = [json.dumps({"step": s, "logp/chosen": -10 - s + shift, "logp/rejected": -20 - 2 * s, "logp/greedy": -3 + s,
                             "argmax_mass/chosen": 0.5 + 0.01 * s}) for s in (0, 5, 10)]
        (tmp_path / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    png = plot_dynamics({"plain": tmp_path / "a.jsonl", "mitigated": tmp_path / "b.jsonl"}, tmp_path / "p.png")
    assert png.stat().st_size > 10_000
