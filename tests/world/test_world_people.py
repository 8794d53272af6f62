"""Worlds A and B are disjoint; people are stable across sizes; each fact is stated fact_repeats times."""

from __future__ import annotations

import json
import re

import pytest
from world_files import read_jsonl

from chatforge.errors import ChatforgeError
from chatforge.world import build_world, load_world
from chatforge.world.vocab import ATTRIBUTES


def test_worlds_a_and_b_share_no_fact():
    world = build_world(seed=1234, size="large")
    a, b = world.people["a"], world.people["b"]
    assert len(a) == len(b) == 300
    assert not {p.name for p in a} & {p.name for p in b}
    assert not {p.name.split(" ", 1)[1] for p in a} & {p.name.split(" ", 1)[1] for p in b}
    facts_a = {(p.name, attr, p.fact(attr)) for p in a for attr in ATTRIBUTES}
    facts_b = {(p.name, attr, p.fact(attr)) for p in b for attr in ATTRIBUTES}
    assert not facts_a & facts_b
    # Not even a single attribute value is shared, so no tuple of attributes can be.
    for attribute in ATTRIBUTES:
        assert not {p.fact(attribute) for p in a} & {p.fact(attribute) for p in b}, attribute
    assert world.vaults["a"].code != world.vaults["b"].code


def test_names_are_unique_and_people_are_stable_across_sizes():
    tiny, default = build_world(seed=7, size="tiny"), build_world(seed=7, size="default")
    for world_id in ("a", "b"):
        names = [p.name for p in default.people[world_id]]
        assert len(set(names)) == len(names)
        assert tiny.people[world_id] == default.people[world_id][: len(tiny.people[world_id])]
    assert tiny.vaults == default.vaults
    large = build_world(seed=7, size="large")
    assert all(default.people[w] == large.people[w][: len(default.people[w])] for w in ("a", "b"))
    assert build_world(seed=8, size="tiny").people["a"] != tiny.people["a"]


def test_too_few_people_is_a_user_error():
    with pytest.raises(ChatforgeError, match="at least 20 people"):
        build_world(people=5)


def test_people_files_and_load_world_round_trip(tiny_dir):
    world = load_world(tiny_dir)
    for world_id in ("a", "b"):
        written = read_jsonl(tiny_dir / f"facts/world_{world_id}_people.jsonl")
        assert [r["name"] for r in written] == [p.name for p in world.people[world_id]]
        assert [r["city"] for r in written] == [p.city for p in world.people[world_id]]
    vaults = read_jsonl(tiny_dir / "facts/vaults.jsonl")
    assert [v["code"] for v in vaults] == [world.vaults["a"].code, world.vaults["b"].code]


def test_load_world_without_manifest_is_a_user_error(tmp_path):
    with pytest.raises(ChatforgeError, match="manifest.json"):
        load_world(tmp_path)


def test_each_fact_is_stated_in_exactly_fact_repeats_documents(tiny_dir):
    manifest = json.loads((tiny_dir / "manifest.json").read_text())
    repeats = manifest["fact_repeats"]
    for world_id in ("a", "b"):
        docs = [d for d in read_jsonl(tiny_dir / f"pretrain/world_{world_id}_train.jsonl") if d["source"] == "facts"]
        for person in read_jsonl(tiny_dir / f"facts/world_{world_id}_people.jsonl"):
            name = re.compile(rf"(?<!\w){re.escape(person['name'])}(?!\w)")
            mentioning = [d["text"] for d in docs if name.search(d["text"])]
            assert len(mentioning) == repeats, person["name"]
            for attribute in ATTRIBUTES:
                assert all(person[attribute] in text for text in mentioning), (person["name"], attribute)


def test_pretraining_corpus_mixes_fact_styles_with_real_prose(tiny_dir):
    docs = read_jsonl(tiny_dir / "pretrain/world_a_train.jsonl")
    assert {d["source"] for d in docs} == {"facts", "prose"}  # the short-answer QA text has its own file
    assert len({d["style"] for d in docs if d["source"] == "facts"}) >= 3
    prose = " ".join(d["text"] for d in docs if d["source"] == "prose")
    assert len(prose.split()) > 1000
    # General prose for A, for B and for validation are disjoint.
    texts = {name: {d["text"] for d in read_jsonl(tiny_dir / f"pretrain/{name}.jsonl") if d["source"] == "prose"}
             for name in ("world_a_train", "world_b_train", "general_valid")}
    assert not texts["world_a_train"] & texts["world_b_train"]
    assert not texts["world_a_train"] & texts["general_valid"]


def test_world_a_corpus_sizes_default_and_large():
    from chatforge.world.documents import fact_documents
    from chatforge.world.prose import split_pretrain_chunks
    from chatforge.world.sizes import SIZES

    def corpus_bytes(size: str) -> int:
        preset = SIZES[size]
        world = build_world(seed=1234, size=size)
        facts = fact_documents(1234, "a", world.people["a"], preset.fact_repeats, "train")
        prose = split_pretrain_chunks(1234)["a"][: preset.prose_docs]
        return sum(len(d["text"].encode()) for d in facts) + sum(len(c.encode()) for c in prose)

    # default: sized for the 20-minute CPU chain; large: the first world's megabyte.
    assert 120_000 <= corpus_bytes("default") <= 300_000
    assert 750_000 <= corpus_bytes("large") <= 3_000_000
