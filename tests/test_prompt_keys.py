"""The prompt stages name their data as sft, rm and dpo do (docs/data_formats.md): `data.sources`
(the prompts sampled, trained on) and `data.val_sources` (held out), lists of `{path, split}` read by
the one reader layer. The old keys are refused with the new name, never silently accepted."""

from __future__ import annotations

import json

import pytest

from chatforge.config.load import load_config
from chatforge.errors import ConfigError, DataError
from chatforge.run_dir import RejectLog


def _error(cls, overrides: list[str]) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(cls, None, overrides)
    return str(info.value)


@pytest.mark.parametrize("stage", ["ppo", "grpo", "online_dpo"])
def test_rl_stages_refuse_the_prompts_section_with_the_new_keys(stage):
    import importlib

    cls = importlib.import_module(f"chatforge.stages.{stage}").Config
    said = _error(cls, ["model=m", "prompts.train=a.jsonl", "prompts.test=b.jsonl", "prompts.max_test=5"])
    assert ("command-line override: key 'prompts' is now 'data' (renamed; the same value goes there, "
            "with 'train' now 'sources', with 'test' now 'val_sources', with 'max_test' now 'max_val_prompts')") in said
    said = _error(cls, ["model=m", "data.train=a.jsonl"])
    assert "key 'data.train' is now 'data.sources' (renamed; the same value goes there)" in said
    cfg = load_config(cls, None, ["model=m", "data.sources=a.jsonl", "data.max_prompts=7"])
    assert [(s.path, s.split) for s in cfg.data.sources] == [("a.jsonl", None)]  # a bare path is one source
    assert (cfg.data.val_sources, cfg.data.max_prompts, cfg.data.max_val_prompts) == ([], 7, 100)


def test_rest_refuses_its_old_keys_in_a_file(tmp_path):
    from chatforge.stages import rest

    path = tmp_path / "rest.yaml"
    path.write_text("model: m\ntrain_prompts: a.jsonl\ntest_prompts: b.jsonl\nmax_train_prompts: 5\ntasks: [arithmetic]\n")
    with pytest.raises(ConfigError) as info:
        load_config(rest.Config, path)
    said = str(info.value)
    for old, new in [("train_prompts", "data.sources"), ("test_prompts", "data.val_sources"),
                     ("max_train_prompts", "data.max_prompts"), ("tasks", "data.tasks")]:
        assert f"{path}: key {old!r} is now {new!r}" in said
    cfg = load_config(rest.Config, None, ["model=m", "data.sources=[{path: a.jsonl}]", "data.val_sources=b.jsonl"])
    assert [s.path for s in cfg.data.sources] == ["a.jsonl"] and [s.path for s in cfg.data.val_sources] == ["b.jsonl"]
    # held-out prompts are what rest reports its gain on: required, like the old test_prompts
    assert "data.val_sources: Field required" in _error(rest.Config, ["model=m", "data.sources=a.jsonl"])


def test_bon_refuses_its_old_keys():
    from chatforge.stages import bon

    said = _error(bon.Config, ["model=m", "prompts=p.jsonl", "max_prompts=3"])
    assert "key 'prompts' is now 'data.sources'" in said and "key 'max_prompts' is now 'data.max_prompts'" in said
    assert "key 'data.val_sources'" in _error(bon.Config, ["model=m", "data.sources=p.jsonl", "data.val_sources=q.jsonl"])
    assert "data.sources: List should have at least 1 item" in _error(bon.Config, ["model=m", "data.sources=[]"])


def _prompt(i: int, task: str) -> dict:
    return {"id": f"p{i}", "task": task, "prompt": [{"role": "user", "content": f"question {i}"}]}


def test_prompts_come_from_every_container_of_the_reader_layer(tmp_path):
    """JSONL, a JSON array, Parquet and a directory's split, in the order given; `limit` counts
    the prompts kept after the task filter; a record that is not an object is rejected."""
    import pandas as pd

    from chatforge.data.prompts import load_prompts
    from chatforge.data.records import DataSource

    (tmp_path / "a.jsonl").write_text(json.dumps(_prompt(1, "x")) + "\n[1, 2]\n" + json.dumps(_prompt(2, "y")) + "\n")
    (tmp_path / "b.json").write_text(json.dumps([_prompt(3, "x"), {"messages": _prompt(4, "x")["prompt"]}]))
    pd.DataFrame([_prompt(5, "x")]).to_parquet(tmp_path / "c.parquet")
    held = tmp_path / "held"
    (held / "test").mkdir(parents=True)
    (held / "train").mkdir()
    (held / "test" / "part.jsonl").write_text(json.dumps(_prompt(6, "x")) + "\n")
    (held / "train" / "part.jsonl").write_text(json.dumps(_prompt(7, "x")) + "\n")
    sources = [DataSource(path=str(tmp_path / name)) for name in ("a.jsonl", "b.json", "c.parquet")]
    with RejectLog(tmp_path / "rejected.jsonl") as rejects:
        every = load_prompts(sources, None, rejects)
        first_x = load_prompts(sources, 2, rejects, ["x"])
        held_out = load_prompts([DataSource(path=str(held), split="test")], None, rejects)
    assert [r["id"] for r in every] == ["p1", "p2", "p3", "b.json:item 1", "p5"]  # no id: FILE:PLACE
    assert every[3]["prompt"] == [{"role": "user", "content": "question 4"}]
    assert every[4]["prompt"] == [{"role": "user", "content": "question 5"}] and every[4]["task"] == "x"
    assert [r["id"] for r in first_x] == ["p1", "p3"]
    assert [r["id"] for r in held_out] == ["p6"]
    rejected = [json.loads(line) for line in (tmp_path / "rejected.jsonl").read_text().splitlines()]
    assert {(r["where"], r["reason"]) for r in rejected} == {("line 2", "not_an_object")}
    with RejectLog(None) as rejects, pytest.raises(DataError, match="prompts file not found"):
        load_prompts([DataSource(path=str(tmp_path / "missing.jsonl"))], None, rejects)


def test_rest_final_is_the_last_policy_written_atomically(tmp_path):
    """rest's OUT/final/: hard links to the last policy's files under a fresh completeness marker."""
    from chatforge.atomic_dir import MARKER, atomic_dir, check_complete
    from chatforge.stages import rest

    policy = tmp_path / "iter_1" / "sft" / "final"
    with atomic_dir(policy) as tmp:
        (tmp / "config.json").write_text("{}")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "weights.bin").write_bytes(b"1234")
    cfg = rest.Config(model=str(tmp_path / "base"), data={"sources": "a", "val_sources": "b"})
    final = tmp_path / "run" / "final"
    rest._write_final(cfg, str(policy), final)
    check_complete(final)
    assert json.loads((final / MARKER).read_text())["files"] == {"config.json": 2, "sub/weights.bin": 4}
    assert (final / "sub" / "weights.bin").stat().st_ino == (policy / "sub" / "weights.bin").stat().st_ino
    assert sorted(p.name for p in final.parent.iterdir()) == ["final"]  # no temporary left
