"""The tables of docs/data_formats.md, one test per row for each stage that reads it.

Record layouts of preference data (dpo, rm, eval's reward_accuracy), containers and splits (sft, dpo,
rm, eval), and the data keys every training stage names the same way. Each layout's expected reading
(prompt messages, chosen, rejected) is written out by hand below.
"""

from __future__ import annotations

import json

import pytest

from chatforge.data.records import DataSource
from chatforge.errors import DataError
from chatforge.run_dir import RejectLog

U = {"role": "user", "content": "What is 2 + 2?"}
SYS = {"role": "system", "content": "Be brief."}
GOOD, BAD = "4.", "Five, I think."

# layout row -> (record, expected prompt messages, chosen, rejected)
PAIR_LAYOUTS = {
    "standard": ({"prompt": U["content"], "chosen": GOOD, "rejected": BAD}, [U], GOOD, BAD),
    "task_world": (
        {"prompt": [U], "chosen": GOOD, "rejected": BAD, "id": "p1", "category": "math", "kind": "wrong",
         "chosen_reward": 1.0, "rejected_reward": 0.0},
        [U], GOOD, BAD,
    ),
    "conversational": (
        {"prompt": [SYS, U], "chosen": [{"role": "assistant", "content": GOOD}],
         "rejected": [{"role": "assistant", "content": BAD}]},
        [SYS, U], GOOD, BAD,
    ),
    "ultrafeedback_binarized": (
        {"prompt": U["content"], "prompt_id": "abc",
         "chosen": [U, {"role": "assistant", "content": GOOD}], "rejected": [U, {"role": "assistant", "content": BAD}],
         "messages": [U, {"role": "assistant", "content": GOOD}], "score_chosen": 8.0, "score_rejected": 3.5},
        [U], GOOD, BAD,
    ),
    "implicit_prompt": (
        {"chosen": [SYS, U, {"role": "assistant", "content": GOOD}], "rejected": [SYS, U, {"role": "assistant", "content": BAD}]},
        [SYS, U], GOOD, BAD,
    ),
    "system_field": ({"system": SYS["content"], "prompt": U["content"], "chosen": GOOD, "rejected": BAD}, [SYS, U], GOOD, BAD),
}

# layout row -> (record, expected prompt, responses, ranks); read by rm only
RANKING_LAYOUTS = {
    "ranking_best_first": ({"prompt": U["content"], "responses": [GOOD, "4, or 5.", BAD]}, [U], [GOOD, "4, or 5.", BAD], [0, 1, 2]),
    "ranking_with_ranks": ({"prompt": [U], "responses": [BAD, GOOD], "ranks": [1, 0]}, [U], [BAD, GOOD], [1, 0]),
}

PAIR_STAGES = ("dpo", "rm", "eval")


def _write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def read_as(stage: str, source: DataSource, rejects: RejectLog) -> list[tuple[list, list[str], list[int]]]:
    """(prompt, responses, ranks) of every record `stage`'s own reader takes from `source`."""
    if stage == "dpo":
        from chatforge.dpo.data import PairSourceConfig, read_pairs

        return [(p.prompt, [p.chosen, p.rejected], [0, 1]) for p in read_pairs([PairSourceConfig(**source.model_dump())], rejects)]
    if stage == "rm":
        from chatforge.rm.data import PreferenceSourceConfig, read_groups

        groups = read_groups([PreferenceSourceConfig(**source.model_dump())], rejects, "reward", need_gold=False)
        return [(g.prompt, g.responses, g.ranks) for g in groups]
    if stage == "eval":
        from chatforge.evaluation.tasks.reward_accuracy import RewardAccuracyTask, _pairs

        try:
            pairs = _pairs(RewardAccuracyTask(path=source.path, split=source.split), rejects)
        except DataError as exc:
            if "no usable pairs" not in str(exc):
                raise
            return []
        return [(p.prompt, [p.chosen, p.rejected], [0, 1]) for p in pairs]
    if stage == "sft":
        from chatforge.sft.formats import ChatSourceConfig, read_conversations

        convs = read_conversations([ChatSourceConfig(**source.model_dump())], rejects)
        return [(c.messages[:-1], [c.messages[-1]["content"]], [0]) for c in convs]
    raise AssertionError(stage)


# ---- record layouts: a test per row per stage ------------------------------------------------
@pytest.mark.parametrize("stage", PAIR_STAGES)
@pytest.mark.parametrize("layout", list(PAIR_LAYOUTS))
def test_every_pair_stage_reads_every_pair_layout(tmp_path, stage, layout):
    record, prompt, chosen, rejected = PAIR_LAYOUTS[layout]
    rejects = RejectLog(None)
    got = read_as(stage, DataSource(path=str(_write_jsonl(tmp_path / "pairs.jsonl", [record]))), rejects)
    assert rejects.total == 0, rejects.counts
    assert got == [(prompt, [chosen, rejected], [0, 1])]


@pytest.mark.parametrize("layout", list(RANKING_LAYOUTS))
def test_rm_reads_rankings(tmp_path, layout):
    record, prompt, responses, ranks = RANKING_LAYOUTS[layout]
    rejects = RejectLog(None)
    assert read_as("rm", DataSource(path=str(_write_jsonl(tmp_path / "r.jsonl", [record]))), rejects) == [(prompt, responses, ranks)]
    assert rejects.total == 0


@pytest.mark.parametrize("stage", ["dpo", "eval"])
@pytest.mark.parametrize("layout", list(RANKING_LAYOUTS))
def test_pair_only_stages_reject_a_ranking_with_its_reason(tmp_path, stage, layout):
    rejects = RejectLog(None)
    source = DataSource(path=str(_write_jsonl(tmp_path / "r.jsonl", [RANKING_LAYOUTS[layout][0]])))
    assert read_as(stage, source, rejects) == []
    assert rejects.counts == {"missing_field": 1}


# ---- containers and splits -------------------------------------------------------------------
STAGES = ("sft", "dpo", "rm", "eval")


def _records(stage: str, tag: str) -> list[dict]:
    """Two records of the stage's kind whose prompts name `tag` (which split they came from)."""
    prompts = [f"{tag} question {i}?" for i in range(2)]
    if stage == "sft":
        return [{"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": GOOD}]} for p in prompts]
    return [{"prompt": p, "chosen": [{"role": "user", "content": p}, {"role": "assistant", "content": GOOD}],
             "rejected": [{"role": "user", "content": p}, {"role": "assistant", "content": BAD}], "score_chosen": 8.0}
            for p in prompts]


def _prompts(rows) -> list[str]:
    return [prompt[-1]["content"] for prompt, _, _ in rows]


def _expected(*tags: str) -> list[str]:
    return [f"{tag} question {i}?" for tag in tags for i in range(2)]


def _dataset(records):
    from datasets import Dataset

    return Dataset.from_list(records)


CONTAINERS = {  # row -> writer(dir, stage) -> (DataSource, expected prompts)
    "jsonl": lambda d, s: (DataSource(path=str(_write_jsonl(d / "a.jsonl", _records(s, "a")))), _expected("a")),
    "json_array": lambda d, s: (_json_array(d, s), _expected("a")),
    "parquet": lambda d, s: (_parquet(d / "a.parquet", _records(s, "a")), _expected("a")),
    "directory": lambda d, s: (_split_dir(d, s, None), _expected("test_prefs", "train_prefs")),
    "directory_split": lambda d, s: (_split_dir(d, s, "test_prefs"), _expected("test_prefs")),
    "directory_split_folder": lambda d, s: (_folder_dir(d, s, "validation"), _expected("validation")),
    "save_to_disk": lambda d, s: (_saved(d / "ds", _records(s, "a")), _expected("a")),
    "dataset_dict_split": lambda d, s: (_dataset_dict(d, s, "test_prefs"), _expected("test_prefs")),
    "dataset_dict_train_default": lambda d, s: (_dataset_dict(d, s, None, names=("train", "test")), _expected("train")),
}


def _json_array(d, stage):
    path = d / "a.json"
    path.write_text(json.dumps(_records(stage, "a")), encoding="utf-8")
    return DataSource(path=str(path))


def _parquet(path, records):
    _dataset(records).to_parquet(str(path))
    return DataSource(path=str(path))


def _split_dir(d, stage, split):
    """A Hub-style download: data/train_prefs-00000-of-00001.parquet and data/test_prefs-00000-of-00001.parquet."""
    (d / "data").mkdir()
    for name in ("train_prefs", "test_prefs"):
        _dataset(_records(stage, name)).to_parquet(str(d / "data" / f"{name}-00000-of-00001.parquet"))
    return DataSource(path=str(d), split=split)


def _folder_dir(d, stage, split):
    for name in ("train", "validation"):
        (d / name).mkdir()
        _write_jsonl(d / name / "part.jsonl", _records(stage, name))
    return DataSource(path=str(d), split=split)


def _saved(path, records):
    _dataset(records).save_to_disk(str(path))
    return DataSource(path=str(path))


def _dataset_dict(d, stage, split, names=("train_prefs", "test_prefs")):
    from datasets import DatasetDict

    DatasetDict({name: _dataset(_records(stage, name)) for name in names}).save_to_disk(str(d / "dd"))
    return DataSource(path=str(d / "dd"), split=split)


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("container", list(CONTAINERS))
def test_every_stage_reads_every_container(tmp_path, stage, container):
    source, expected = CONTAINERS[container](tmp_path, stage)
    rejects = RejectLog(None)
    assert sorted(_prompts(read_as(stage, source, rejects))) == sorted(expected)
    assert rejects.total == 0, rejects.counts


@pytest.mark.parametrize("stage", STAGES)
def test_a_dataset_dict_without_train_needs_a_split_and_a_wrong_one_names_the_splits(tmp_path, stage):
    source = _dataset_dict(tmp_path, stage, None)
    with pytest.raises(DataError, match=r"splits train_prefs, test_prefs and no 'train': choose one with `split:`"):
        read_as(stage, source, RejectLog(None))
    with pytest.raises(DataError, match=r"no split 'test' \(the DatasetDict's splits: train_prefs, test_prefs\)"):
        read_as(stage, source.model_copy(update={"split": "test"}), RejectLog(None))


def test_a_split_no_file_has_names_the_splits_the_files_give(tmp_path):
    source = _split_dir(tmp_path, "dpo", "test")
    with pytest.raises(DataError, match=r"no file of split 'test' \(the files' names give: data, test_prefs, train_prefs\)"):
        read_as("dpo", source, RejectLog(None))


def test_a_split_for_a_single_file_is_an_error(tmp_path):
    path = _write_jsonl(tmp_path / "a.jsonl", _records("dpo", "a"))
    with pytest.raises(DataError, match="split 'train' given for a file"):
        read_as("dpo", DataSource(path=str(path), split="train"), RejectLog(None))


# ---- data keys -------------------------------------------------------------------------------
@pytest.mark.parametrize("stage", ["sft", "rm", "dpo"])
def test_training_stages_name_their_data_sources_and_val_sources(stage):
    import importlib

    from chatforge.config.load import load_config

    cfg = load_config(importlib.import_module(f"chatforge.stages.{stage}").Config, None, [
        "model=m", "data.sources=[{path: a, split: train_prefs}]", "data.val_sources=[{path: a, split: test_prefs}]",
    ])
    assert [(s.path, s.split) for s in cfg.data.sources] == [("a", "train_prefs")]
    assert [(s.path, s.split) for s in cfg.data.val_sources] == [("a", "test_prefs")]


@pytest.mark.parametrize(("old", "new"), [("train", "sources"), ("eval", "val_sources")])
def test_the_old_dpo_keys_are_an_error_that_names_the_new_ones(tmp_path, old, new):
    from chatforge.config.load import load_config
    from chatforge.errors import ConfigError
    from chatforge.stages.dpo import Config

    yaml_file = tmp_path / "dpo.yaml"
    yaml_file.write_text(f"model: m\ndata:\n  {old}: [{{path: pairs.jsonl}}]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"^{yaml_file}: key 'data.{old}' is now 'data.{new}' \(renamed"):
        load_config(Config, yaml_file)
    with pytest.raises(ConfigError, match=rf"^command-line override: key 'data.{old}' is now 'data.{new}'"):
        load_config(Config, None, ["model=m", f"data.{old}=[{{path: p}}]"])


def test_a_typo_of_a_data_key_is_pointed_at_the_dpo_key():
    from chatforge.config.load import load_config
    from chatforge.errors import ConfigError
    from chatforge.stages.dpo import Config

    with pytest.raises(ConfigError, match=r"unknown key 'data.sorces'; did you mean 'data.sources'\?"):
        load_config(Config, None, ["model=m", "data.sorces=[{path: p}]"])


# ---- the stages end to end on UltraFeedback-binarized splits ---------------------------------
@pytest.fixture(scope="module")
def ultrafeedback_dir(tmp_path_factory):
    """A DatasetDict of the UltraFeedback-binarized layout with splits train_prefs (12) and test_prefs (4)."""
    from datasets import DatasetDict

    def rows(n, tag):
        out = []
        for i in range(n):
            u = {"role": "user", "content": f"{tag}: what is {i} + {i}?"}
            out.append({"prompt": u["content"], "prompt_id": f"{tag}{i}",
                        "chosen": [u, {"role": "assistant", "content": f"{2 * i}."}],
                        "rejected": [u, {"role": "assistant", "content": f"Maybe {2 * i + 1}, or more."}],
                        "messages": [u, {"role": "assistant", "content": f"{2 * i}."}],
                        "score_chosen": 8.0, "score_rejected": 2.0})
        return _dataset(out)

    path = tmp_path_factory.mktemp("uf") / "ultrafeedback_binarized"
    DatasetDict({"train_prefs": rows(12, "train"), "test_prefs": rows(4, "test")}).save_to_disk(str(path))
    return path


@pytest.mark.parametrize("stage", ["dpo", "rm"])
def test_dpo_and_rm_train_on_ultrafeedback_splits_without_a_reject(tmp_path, base_dir, ultrafeedback_dir, stage):
    from chatforge.cli import main

    out = tmp_path / stage
    args = [stage, f"model={base_dir}", f"out={out}",
            f"data.sources=[{{path: {ultrafeedback_dir}, split: train_prefs}}]",
            f"data.val_sources=[{{path: {ultrafeedback_dir}, split: test_prefs}}]",
            "data.max_length=128", "train.max_steps=2", "train.micro_batch_size=2", "train.eval_every=0",
            "train.save_every=0", "train.progress=false", "train.device=cpu"]
    assert main(args) == 0
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert not (out / "rejected.jsonl").exists() or (out / "rejected.jsonl").read_text() == ""
    if stage == "dpo":
        assert (summary["train_pairs"], summary["eval_pairs"]) == (12, 4)
    else:
        assert (summary["train"]["pairs"], summary["val"]["pairs"]) == (12, 4)
