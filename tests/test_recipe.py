"""`chatforge run`: references, validation before anything runs, the skip / resume / rerun decision,
--from / --only / --dry-run, and every recipe under recipes/ resolving. Only `world write` (about a
second) really runs here; tests/test_recipe_smoke.py runs the whole chain."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from chatforge.errors import ConfigError
from chatforge.recipes.hashing import changed_keys, fingerprint
from chatforge.recipes.plan import MARKER, decide, load_recipe, read_marker, resolve
from chatforge.recipes.references import references_in, substitute
from chatforge.recipes.runner import run_recipe

REPO = Path(__file__).resolve().parents[1]


def lookup(ref: str):
    table = {"sft.final": "runs/x/sft/final", "pretrain.config.train.max_steps": 20}
    if ref not in table:
        raise ConfigError(f"unknown {ref}")
    return table[ref]


def test_substitute_keeps_types_and_formats_inside_strings():
    data = {"model": "${sft.final}", "steps": "${pretrain.config.train.max_steps}",
            "files": ["${sft.final}/config.json", "plain"], "n": 3}
    assert substitute(data, lookup) == {
        "model": "runs/x/sft/final", "steps": 20, "files": ["runs/x/sft/final/config.json", "plain"], "n": 3,
    }
    assert references_in(data) == ["sft.final", "pretrain.config.train.max_steps", "sft.final"]


def test_substitute_names_the_key_of_a_broken_reference():
    with pytest.raises(ConfigError, match=r"data\.sources\[0\]: unknown nope\.dir"):
        substitute({"data": {"sources": ["${nope.dir}/a.jsonl"]}}, lookup)


def write(tmp_path: Path, recipe: dict) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def world_then_sft(sft_config: dict) -> dict:
    return {"stages": {"world": {"stage": "world write", "config": {"size": "tiny"}}, "sft": {"config": sft_config}}}


def resolve_file(path: Path, root: Path):
    recipe, _ = load_recipe(path)
    return resolve(recipe, path, root)


def test_references_resolve_to_stage_directories(tmp_path):
    path = write(tmp_path, world_then_sft({"model": "${world.dir}/m", "data": {"sources": [{"path": "${world.dir}/i.jsonl"}]},
                                           "train": {"max_steps": "${world.config.seed}"}}))
    steps = resolve_file(path, tmp_path / "out")
    sft = steps[1]
    assert sft.cfg.model == str(tmp_path / "out" / "world" / "m")
    assert sft.cfg.out == str(tmp_path / "out" / "sft")  # the recipe sets every stage's out
    assert sft.cfg.train.max_steps == steps[0].cfg.seed  # a config value keeps its type
    assert sft.upstream == ["world"]


@pytest.mark.parametrize(
    ("sft", "message"),
    [
        ({"model": "${wrld.final}"}, r"stage 'sft': model: reference \$\{wrld\.final\}: no stage 'wrld' before this one; did you mean 'world'\?"),
        ({"model": "${world.finale}"}, r"stage 'sft': model: reference \$\{world\.finale\}: unknown key 'finale'"),
        ({"model": "${world.config.nope}"}, r"reference \$\{world\.config\.nope\}: config has no key 'nope'"),
        ({"model": "m", "optim": {"lrr": 1}}, r"stage 'sft': unknown key 'optim\.lrr'; did you mean 'optim\.lr'\?"),
        ({"model": "m", "out": "elsewhere"}, r"stage 'sft': remove `out`: the recipe sets it"),
        ({}, r"stage 'sft': model: Field required"),
    ],
)
def test_a_broken_recipe_fails_before_anything_runs_naming_stage_and_key(tmp_path, sft, message):
    path = write(tmp_path, world_then_sft(sft))
    with pytest.raises(ConfigError, match=message):
        run_recipe(path, out=str(tmp_path / "out"), say=lambda *_: None)
    assert not (tmp_path / "out").exists()  # nothing ran, not even the world stage


def test_env_references_read_the_environment(tmp_path, monkeypatch):
    path = write(tmp_path, world_then_sft({"model": "${env.CF_TEST_MODEL}"}))
    monkeypatch.delenv("CF_TEST_MODEL", raising=False)
    with pytest.raises(ConfigError, match=r"stage 'sft': model: reference \$\{env\.CF_TEST_MODEL\}: environment variable CF_TEST_MODEL is not set"):
        resolve_file(path, tmp_path / "out")
    monkeypatch.setenv("CF_TEST_MODEL", "/models/m")
    assert resolve_file(path, tmp_path / "out")[1].cfg.model == "/models/m"


def test_a_config_file_is_read_with_overrides_and_its_own_out_ignored(tmp_path):
    stage_file = tmp_path / "sft.yaml"
    stage_file.write_text("out: runs/elsewhere\nmodel: m\ntrain: {max_steps: 7, micro_batch_size: 2}\n")
    path = write(tmp_path, {"stages": {"world": {"stage": "world write"},
                                       "sft": {"config": str(stage_file), "overrides": {"train.max_steps": 9}}}})
    sft = resolve_file(path, tmp_path / "out")[1].cfg
    assert (sft.out, sft.model, sft.train.max_steps, sft.train.micro_batch_size) == (str(tmp_path / "out" / "sft"), "m", 9, 2)


def test_a_recipe_with_nothing_to_do_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"give at least one stage, or a card of existing model directories"):
        load_recipe(write(tmp_path, {"stages": {}}))


def test_a_reference_to_a_later_stage_or_an_unknown_stage_kind_is_named(tmp_path):
    path = write(tmp_path, {"stages": {"sft": {"config": {"model": "${world.dir}"}}, "world": {"stage": "world write"}}})
    with pytest.raises(ConfigError, match=r"stage 'world' runs later"):
        resolve_file(path, tmp_path / "out")
    path = write(tmp_path, {"stages": {"pretrian": {"config": {}}}})
    with pytest.raises(ConfigError, match=r"unknown stage 'pretrian'; did you mean 'pretrain'\?"):
        resolve_file(path, tmp_path / "out")


def plan_of(path: Path, root: Path, **kw) -> dict[str, tuple[str, str]]:
    from chatforge.recipes.hashing import FileHasher

    steps = resolve_file(path, root)
    decide(steps, root, FileHasher(None), **kw)
    return {s.name: (s.action, s.reason) for s in steps}


def two_worlds(seed: int = 1) -> dict:
    return {"stages": {"a": {"stage": "world write", "config": {"size": "tiny", "seed": seed}},
                       "b": {"stage": "world write", "config": {"size": "tiny", "people": "${a.config.people}"}}}}


def test_skip_resume_rerun_and_the_flags(tmp_path):
    root = tmp_path / "out"
    path = write(tmp_path, two_worlds())
    lines: list[str] = []
    run_recipe(path, out=str(root), say=lines.append)
    assert "[1/2] a (world write): start (not run yet)" in lines
    assert any(line.startswith("[2/2] b: done in ") for line in lines)
    assert read_marker(root / "a")["state"] == "done"
    assert plan_of(path, root) == {"a": ("skip", "finished; config and inputs unchanged"),
                                   "b": ("skip", "finished; config and inputs unchanged")}
    # --from reruns that stage and every later one; --only reruns one and keeps the others
    assert plan_of(path, root, first="b") == {"a": ("keep", "not selected (--from b)"), "b": ("rerun", "forced")}
    assert plan_of(path, root, only="a")["a"] == ("rerun", "forced")
    assert plan_of(path, root, only="a")["b"][0] == "keep"
    # a changed config reruns that stage and, through its new run id, the stage reading it
    path = write(tmp_path, two_worlds(seed=2))
    assert plan_of(path, root) == {"a": ("rerun", "config changed: seed"), "b": ("rerun", "input a runs")}
    # an interrupted stage (marker left `running`, same fingerprint) resumes
    path = write(tmp_path, two_worlds())
    marker = read_marker(root / "b")
    marker["state"] = "running"
    (root / "b" / MARKER).write_text(json.dumps(marker))
    assert plan_of(path, root) == {"a": ("skip", "finished; config and inputs unchanged"),
                                   "b": ("resume", "interrupted: resumes from its checkpoints")}
    # a finished stage whose output files are gone runs again
    (root / "a" / "manifest.json").unlink()
    assert plan_of(path, root)["a"] == ("rerun", "outputs missing")


def test_dry_run_prints_the_plan_and_runs_nothing(tmp_path):
    path = write(tmp_path, two_worlds())
    lines: list[str] = []
    run_recipe(path, out=str(tmp_path / "out"), dry_run=True, say=lines.append)
    assert "1. a  world write  run     not run yet" in lines[0]
    assert not (tmp_path / "out").exists()


def test_a_directory_the_runner_did_not_write_is_not_cleared(tmp_path):
    root = tmp_path / "out"
    (root / "a").mkdir(parents=True)
    (root / "a" / "precious.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"exists but was not written by `chatforge run`"):
        plan_of(write(tmp_path, two_worlds()), root)


def test_a_second_run_in_the_same_directory_is_refused(tmp_path):
    from chatforge.errors import ChatforgeError
    from chatforge.recipes.runner import DirectoryLock

    root = tmp_path / "out"
    root.mkdir()
    with DirectoryLock(root):  # as if another `chatforge run` were running there
        with pytest.raises(ChatforgeError, match=r"another `chatforge run` \(pid \d+\) is running in"):
            run_recipe(write(tmp_path, two_worlds()), out=str(root), say=lambda *_: None)
    assert not (root / "a").exists()


def test_only_needs_its_inputs_finished(tmp_path):
    with pytest.raises(ConfigError, match=r"--only b: stage 'a' before it has not finished"):
        plan_of(write(tmp_path, two_worlds()), tmp_path / "out", only="b")


def test_fingerprint_ignores_cosmetic_keys_and_changed_keys_names_the_rest():
    a = {"train": {"max_steps": 5, "progress": True}, "lr": 1}
    b = {"train": {"max_steps": 6, "progress": False}, "lr": 1}
    assert fingerprint("sft", a, {}, {}) == fingerprint("sft", {**a, "train": {"max_steps": 5, "progress": False}}, {}, {})
    assert fingerprint("sft", a, {}, {}) != fingerprint("sft", b, {}, {})
    assert fingerprint("sft", a, {"pretrain": "run1"}, {}) != fingerprint("sft", a, {"pretrain": "run2"}, {})
    assert changed_keys(a, b) == ["train.max_steps"]
    # a setting the stage's code added (null by default) or dropped changes the fingerprint: the plan names it
    assert changed_keys({"size": "small"}, {"size": "small", "string_form": None}) == ["string_form (new)"]
    assert changed_keys({"size": "small", "old": 1}, {"size": "small"}) == ["old (gone)"]


@pytest.mark.parametrize("recipe", sorted((REPO / "recipes").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_recipe_under_recipes_resolves(recipe, tmp_path, monkeypatch):
    """Every stage config validates and every reference resolves (nothing runs); a recipe's
    ${env.NAME} settings (a local model directory) get a stand-in value."""
    for ref in references_in(yaml.safe_load(recipe.read_text())):
        if ref.startswith("env."):
            monkeypatch.setenv(ref.removeprefix("env."), str(tmp_path / "a-local-model"))
    steps = resolve_file(recipe, tmp_path / recipe.stem)
    assert steps and all(s.cfg is not None for s in steps)
    names = [s.name for s in steps]
    for step in steps:
        assert all(names.index(u) < names.index(step.name) for u in step.upstream), step.name


def test_the_command_line_runs_reports_and_rejects_two_flags(tmp_path, capsys):
    from chatforge.cli import main

    path, root = write(tmp_path, two_worlds()), tmp_path / "out"
    assert main(["run", str(path), "--out", str(root), "--no-report"]) == 0
    assert not (root / "report.html").exists()
    assert main(["run", str(path), "--out", str(root), "--report-only"]) == 0
    assert f"report card: {root}/report.html" in capsys.readouterr().out
    md = (root / "report.md").read_text()
    assert "| a | world write | done |" in md and "## Provenance" in md
    assert main(["run", str(path), "--from", "a", "--only", "b"]) == 2
    assert "give --from or --only, not both" in capsys.readouterr().err


def test_the_closing_lines_offer_the_last_model_the_run_made_not_the_one_that_existed_before(tmp_path, monkeypatch):
    """gpu_hf's card starts with the machine's own model (`base`, there before the run) and ends with
    models the run makes: the chat model is chosen after the stages ran (it was `base` before)."""
    import chatforge.recipes.runner as runner

    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text("{}")

    def fake_run_step(step, steps, hasher, counter, say=print):  # the world stage "makes" a model; the card measures nothing
        if step.name == "a":
            (step.dir / "m").mkdir(parents=True)
            (step.dir / "m" / "config.json").write_text("{}")

    monkeypatch.setattr(runner, "run_step", fake_run_step)
    recipe = {"stages": {"a": {"stage": "world write", "config": {"size": "tiny"}}},
              "card": {"models": {"base": str(base), "tuned": "${a.dir}/m"}}}
    lines: list[str] = []
    result = run_recipe(write(tmp_path, recipe), out=str(tmp_path / "out"), report=False, say=lines.append)
    made = tmp_path / "out" / "a" / "m"
    assert result.chat_model == str(made)
    assert f"chat with the final model: chatforge serve {made}   (then open http://127.0.0.1:8000/ in a browser)" in lines
