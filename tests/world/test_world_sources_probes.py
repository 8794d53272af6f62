"""Mixed-quality sources (C-RLFT) and learning-dynamics probes."""

from __future__ import annotations

from collections import Counter

from world_files import read_jsonl

from chatforge.world import build_world, check_answer, write_world
from chatforge.world.probes import PROBE_KINDS


def test_expert_is_always_right_and_novice_wrong_in_the_configured_share(tiny_dir, tmp_path):
    records = read_jsonl(tiny_dir / "mixed_quality/train.jsonl")
    by_prompt: dict[str, dict[str, dict]] = {}
    for record in records:
        by_prompt.setdefault(record["prompt_id"], {})[record["source"]] = record
        # The stored flag agrees with the gold judge.
        assert record["correct"] == check_answer(record["messages"][:-1], record["messages"][-1]["content"])
    assert all(set(pair) == {"expert", "novice"} for pair in by_prompt.values())
    assert all(pair["expert"]["messages"][:-1] == pair["novice"]["messages"][:-1] for pair in by_prompt.values())
    assert all(pair["expert"]["correct"] for pair in by_prompt.values())
    assert sum(not pair["novice"]["correct"] for pair in by_prompt.values()) == round(0.5 * len(by_prompt))

    write_world(tmp_path, size="tiny", novice_error_rate=0.2)
    other = [r for r in read_jsonl(tmp_path / "mixed_quality/train.jsonl") if r["source"] == "novice"]
    assert sum(not r["correct"] for r in other) == round(0.2 * len(other))


def test_probes_hold_every_kind_with_the_documented_relations(tiny_dir):
    world = build_world(seed=1234, size="tiny")
    probes = read_jsonl(tiny_dir / "probes/probes.jsonl")
    pairs = {p["id"]: p for p in read_jsonl(tiny_dir / "preferences/pairs_train.jsonl")}
    test_chosen = {p["chosen"] for p in read_jsonl(tiny_dir / "preferences/pairs_test.jsonl")}
    assert len(probes) >= 5
    for probe in probes:
        responses, pair = probe["responses"], pairs[probe["pair_id"]]
        assert tuple(responses) == PROBE_KINDS
        assert (responses["chosen"], responses["rejected"]) == (pair["chosen"], pair["rejected"])
        assert check_answer(probe["prompt"], responses["chosen_paraphrase"], world)
        assert responses["chosen_paraphrase"] != responses["chosen"]
        assert not check_answer(probe["prompt"], responses["rejected_paraphrase"], world)
        assert responses["rejected_paraphrase"] != responses["rejected"]
        for kind in ("chosen_new_format", "rejected_new_format"):
            assert "the answer is" not in responses[kind].lower()
        assert check_answer(probe["prompt"], responses["chosen_new_format"], world)
        assert responses["irrelevant_train"] != responses["chosen"]
        assert responses["irrelevant_test"] in test_chosen
        assert Counter(responses["chosen_permuted"].split()) == Counter(responses["chosen"].split())
        assert responses["chosen_permuted"] != responses["chosen"]
        assert len(responses["random_tokens"].split()) >= 3
        assert probe["rewards"]["chosen"] > probe["rewards"]["rejected"]
