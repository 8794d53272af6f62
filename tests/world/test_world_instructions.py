"""Instruction files: three formats of the same conversations, correct answers, disjoint splits."""

from __future__ import annotations

import json

from world_files import read_jsonl

from chatforge.world import build_world, gold_reward_parts
from chatforge.world.prompts import SYSTEM_PROMPTS, VAULT_SECRET_TEMPLATES


def test_every_assistant_turn_is_correct_and_well_formed(tiny_dir):
    world = build_world(seed=1234, size="tiny")
    tasks = set()
    for split in ("train", "test"):
        for record in read_jsonl(tiny_dir / f"instructions/{split}.jsonl"):
            messages = record["messages"]
            assistant_turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
            assert len(assistant_turns) == len(record["answers"])
            for turn, i in enumerate(assistant_turns):
                parts = gold_reward_parts(messages[:i], messages[i]["content"], world)
                assert parts.total == 1.0, (record["id"], turn, parts)
            tasks.add(record["task"])
    assert tasks == {"fact", "arithmetic", "reverse", "sort_letters", "count_letter", "vault_secret", "vault_info",
                     "conversation"}


def test_one_system_prompt_per_task_type(tiny_dir):
    systems: dict[str, set[str]] = {}
    for record in read_jsonl(tiny_dir / "instructions/train.jsonl"):
        systems.setdefault(record["task_type"], set()).add(record["messages"][0]["content"])
    assert set(systems) == {"fact", "arithmetic", "string", "vault", "conversation"}
    assert all(len(texts) == 1 for texts in systems.values())
    assert systems["conversation"] == {SYSTEM_PROMPTS["conversation"]}
    assert len({next(iter(t)) for t in systems.values()}) == 5


def test_alpaca_and_sharegpt_hold_the_same_conversations(tiny_dir):
    for split in ("train", "test"):
        records = read_jsonl(tiny_dir / f"instructions/{split}.jsonl")
        alpaca = read_jsonl(tiny_dir / f"instructions/{split}_alpaca.jsonl")
        sharegpt = read_jsonl(tiny_dir / f"instructions/{split}_sharegpt.jsonl")
        assert len(records) == len(alpaca) == len(sharegpt)
        assert any(a["input"] for a in alpaca) and any(a["history"] for a in alpaca)
        for record, a, s in zip(records, alpaca, sharegpt):
            assert record["id"] == a["id"] == s["id"]
            system = record["messages"][0]["content"]
            dialogue = [m["content"] for m in record["messages"][1:]]
            user = a["instruction"] + ("\n\n" + a["input"] if a["input"] else "")
            rebuilt = [text for pair in a["history"] for text in pair] + [user, a["output"]]
            assert (a["system"], rebuilt) == (system, dialogue)
            assert s["system"] == system
            assert [t["value"] for t in s["conversations"]] == dialogue
            assert [t["from"] for t in s["conversations"]] == ["human", "gpt"] * (len(dialogue) // 2)


def test_splits_ask_different_questions(tiny_dir):
    def questions(split):
        return {m["content"] for r in read_jsonl(tiny_dir / f"instructions/{split}.jsonl")
                for m in r["messages"] if m["role"] == "user" and r["task_type"] != "vault"}

    assert not questions("train") & questions("test")
    people = {p["name"]: p["split"] for p in read_jsonl(tiny_dir / "facts/world_a_people.jsonl")}
    for split in ("train", "test"):
        for record in read_jsonl(tiny_dir / f"instructions/{split}.jsonl"):
            if record["task"] == "fact":
                asked = [name for name in people if name in record["messages"][1]["content"]]
                assert asked and all(people[name] == split for name in asked)


def test_held_out_secret_phrasings_appear_only_in_test(tiny_dir):
    held_out = set(VAULT_SECRET_TEMPLATES[-2:])
    train = {r["messages"][1]["content"] for r in read_jsonl(tiny_dir / "instructions/train.jsonl")
             if r["task"] == "vault_secret"}
    assert train and not train & held_out


def test_no_held_out_prompt_repeats_a_training_prompt_word_for_word(tiny_dir):
    """Vault questions are few (one vault), so test asks them only in held-out phrasings; every other
    task differs by its operands, word or person. Checked on instructions, pairs and verifiable prompts."""
    for train_file, test_file, key in (("instructions/train.jsonl", "instructions/test.jsonl", "messages"),
                                       ("preferences/pairs_train.jsonl", "preferences/pairs_test.jsonl", "prompt"),
                                       ("verifiable/train.jsonl", "verifiable/test.jsonl", "prompt")):
        train, test = ({json.dumps([m for m in r[key] if m["role"] != "assistant"]) for r in read_jsonl(tiny_dir / name)}
                       for name in (train_file, test_file))
        shared = train & test
        assert not shared, (test_file, sorted(shared)[:2])
