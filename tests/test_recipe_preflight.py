"""`chatforge run` checks what each stage will read before the first stage runs (recipes/preflight.py):
an input given as a plain path (not made by an earlier stage) that is missing, malformed or of the
wrong kind, and the config rules a stage used to check only once it had started. Nothing trains here:
every recipe fails (or plans) before its first stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from chatforge.errors import ConfigError
from chatforge.recipes.plan import load_recipe, resolve
from chatforge.recipes.preflight import has_chat_template, made_by, preflight
from chatforge.recipes.references import references_in
from chatforge.recipes.runner import run_recipe

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, recipe: dict) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def three_stages(sft: dict) -> dict:
    """world -> pretrain -> sft, the third stage's config given: the first two are fine (and one
    pretraining step, so that a run the checks failed to stop ends soon, failing the test)."""
    return {"stages": {
        "world": {"stage": "world write", "config": {"size": "tiny"}},
        "pretrain": {"config": {"model": {"preset": "llama-1m"},
                                "data": {"sources": [{"path": "${world.dir}/pretrain/world_a_train.jsonl"}], "seq_len": 32},
                                "train": {"max_steps": 1, "micro_batch_size": 2, "save_every": 0, "eval_every": 0},
                                "schedule": {"kind": "constant", "warmup_steps": 0},
                                "final_eval_documents": 1}},
        "sft": {"config": {"model": "${pretrain.final}", "data": {"sources": [{"path": "${world.dir}/instructions/train.jsonl"}]},
                           **sft}},
    }}


def fake_model(directory: Path, chat_template: bool = True) -> Path:
    """A directory shaped like a Hugging Face chat model (what preflight looks at; nothing loads it)."""
    directory.mkdir(parents=True)
    (directory / "config.json").write_text("{}")
    (directory / "tokenizer.json").write_text("{}")
    (directory / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ x }}"} if chat_template else {}))
    return directory


def test_a_malformed_input_of_the_third_stage_fails_dry_run_and_run_before_stage_one(tmp_path):
    bad = tmp_path / "conversations.jsonl"
    bad.write_text('this is not JSON\n{"text": "a document, not a conversation"}\n')
    path, out = write(tmp_path, three_stages({"data": {"sources": [{"path": str(bad)}]}})), tmp_path / "out"
    message = (rf"r\.yaml: stage 'sft': data\.sources\[0\]\.path: no usable record in {bad} "
               r"\(first rejected at line 1: bad_json")
    lines: list[str] = []
    with pytest.raises(ConfigError, match=message):
        run_recipe(path, out=str(out), dry_run=True, say=lines.append)
    with pytest.raises(ConfigError, match=message):
        run_recipe(path, out=str(out), say=lines.append)
    assert lines == [] and not out.exists()  # no plan printed as if it would run; the world stage never started


def test_the_command_line_names_stage_and_key_and_exits_2(tmp_path, capsys):
    from chatforge.cli import main

    path = write(tmp_path, three_stages({"tokenizer": str(tmp_path / "no-such-tokenizer")}))
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"error: {path}: stage 'sft': tokenizer: not found: {tmp_path / 'no-such-tokenizer'}" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("sft", "message"),
    [
        # a plain-path model: a directory that is not a model, one without a chat template, a missing one
        ({"model": "{tmp}/notes"}, r"model: {tmp}/notes is not a Hugging Face model directory \(no config\.json\)"),
        ({"model": "{tmp}/base"}, r"model: the tokenizer in {tmp}/base has no chat template"),
        ({"model": "{tmp}/gone"}, r"model: not found: {tmp}/gone"),
        # a plain-path tokenizer directory that holds no tokenizer
        ({"tokenizer": "{tmp}/notes"}, r"tokenizer: {tmp}/notes is not a tokenizer directory"),
        # the stage's own check (TrainingStage.check), before: only when sft started
        ({"data": {"sources": []}}, r"data\.sources is empty: give at least one file of conversations"),
        # a held-out file that does not exist, beside a training file the world stage will write
        ({"data": {"sources": [{"path": "${world.dir}/instructions/train.jsonl"}], "val_sources": [{"path": "{tmp}/val.jsonl"}]}},
         r"data\.val_sources\[0\]\.path: not found: {tmp}/val\.jsonl"),
    ],
)
def test_plain_path_inputs_are_checked_up_front(tmp_path, sft, message):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not a model")
    fake_model(tmp_path / "base", chat_template=False)
    sft = json.loads(json.dumps(sft).replace("{tmp}", str(tmp_path)))
    path = write(tmp_path, three_stages(sft))
    with pytest.raises(ConfigError, match=r"stage 'sft': " + message.replace("{tmp}", str(tmp_path))):
        run_recipe(path, out=str(tmp_path / "out"), dry_run=True, say=lambda *_: None)


def test_inputs_an_earlier_stage_makes_are_left_to_that_stage(tmp_path):
    """${pretrain.final} and ${world.dir}/... do not exist before the recipe runs: not an error."""
    lines: list[str] = []
    run_recipe(write(tmp_path, three_stages({})), out=str(tmp_path / "out"), dry_run=True, say=lines.append)
    plan = lines[0]
    assert f"model = {tmp_path / 'out' / 'pretrain' / 'final'}  (from pretrain)" in plan
    assert f"data.sources[0].path = {tmp_path / 'out' / 'world' / 'instructions' / 'train.jsonl'}  (from world)" in plan


def test_a_good_plain_path_input_is_accepted_and_listed_in_the_dry_run(tmp_path):
    good = tmp_path / "chats.jsonl"
    good.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n')
    model = fake_model(tmp_path / "chat-model")
    lines: list[str] = []
    recipe = {"stages": {"sft": {"config": {"model": str(model), "data": {"sources": [{"path": str(good)}]}}}}}
    run_recipe(write(tmp_path, recipe), out=str(tmp_path / "out"), dry_run=True, say=lines.append)
    assert f"reads {model} (outside the recipe)" in lines[0] and f"reads {good} (outside the recipe)" in lines[0]


def rl_recipe(tmp_path: Path, stage: str, config: dict) -> Path:
    return write(tmp_path, {"stages": {"world": {"stage": "world write", "config": {"size": "tiny"}},
                                       stage: {"config": {"model": "${world.dir}/m", **config}}}})


@pytest.mark.parametrize(
    ("stage", "config", "message"),
    [
        # rest checked eval.ks against eval.n only once it had started
        ("rest", {"data": {"sources": "${world.dir}/verifiable/train.jsonl", "val_sources": "${world.dir}/verifiable/test.jsonl"},
                  "eval": {"n": 2, "ks": [1, 4]}}, r"stage 'rest': eval\.ks \[1, 4\] has a k above eval\.n=2"),
        # grpo's rollout batch must split into whole optimizer steps (its first smoke run stopped there)
        ("grpo", {"data": {"sources": "${world.dir}/verifiable/train.jsonl"},
                  "rollout": {"prompts_per_rollout": 2, "samples_per_prompt": 2}, "train": {"micro_batch_size": 8}},
         r"stage 'grpo': rollout: a rollout batch of 4 rows does not split into optimizer steps of .* = 8 rows"),
        # a prompt file of which no record has a prompt
        ("grpo", {"data": {"sources": "{tmp}/prompts.jsonl"}, "rollout": {"prompts_per_rollout": 4, "samples_per_prompt": 2}},
         r"stage 'grpo': data\.sources\[0\]\.path: no usable prompts in {tmp}/prompts\.jsonl \(1 records skipped"),
        ("bon", {"data": {"sources": "{tmp}/prompts.jsonl"}},
         r"stage 'bon': data\.sources\[0\]\.path: no usable prompt in {tmp}/prompts\.jsonl \(first rejected at line 1: "),
        # a reward model given as a plain path that is no model
        ("bon", {"data": {"sources": "${world.dir}/verifiable/test.jsonl"}, "scorer": {"kind": "reward_model", "path": "{tmp}"}},
         r"stage 'bon': scorer\.path: {tmp} is not a Hugging Face model directory"),
        # a scorer function that cannot be imported
        ("bon", {"data": {"sources": "${world.dir}/verifiable/test.jsonl"}, "scorer": {"kind": "function", "path": "no_such_module:score"}},
         r"stage 'bon': scorer\.path: scorer function 'no_such_module:score': cannot import module"),
    ],
)
def test_config_rules_and_inputs_of_later_stages(tmp_path, stage, config, message):
    (tmp_path / "prompts.jsonl").write_text('{"question": "no prompt field"}\n')
    config = json.loads(json.dumps(config).replace("{tmp}", str(tmp_path)))
    with pytest.raises(ConfigError, match=message.replace("{tmp}", str(tmp_path))):
        run_recipe(rl_recipe(tmp_path, stage, config), out=str(tmp_path / "out"), dry_run=True, say=lambda *_: None)


def test_a_pretrain_init_from_must_be_a_model_or_a_checkpoint(tmp_path):
    (tmp_path / "ckpt").mkdir()
    recipe = {"stages": {"pretrain": {"config": {"init_from": str(tmp_path / "ckpt"), "data": {"sources": [{"path": "builtin:pydoc"}]}}}}}
    with pytest.raises(ConfigError, match=r"init_from: .*ckpt is neither a Hugging Face model directory \(config\.json\) nor a checkpoint"):
        run_recipe(write(tmp_path, recipe), out=str(tmp_path / "out"), dry_run=True, say=lambda *_: None)
    (tmp_path / "ckpt" / "model.safetensors").write_bytes(b"")
    run_recipe(write(tmp_path, recipe), out=str(tmp_path / "out"), dry_run=True, say=lambda *_: None)


def test_a_stage_that_will_not_run_is_not_checked(tmp_path):
    """--from sft keeps world and pretrain as they are: a finished stage's inputs are not read again."""
    path = write(tmp_path, three_stages({}))
    recipe, _ = load_recipe(path)
    steps = resolve(recipe, path, tmp_path / "out")
    steps[2].cfg.data.sources.clear()  # as if sft were broken: it is checked only while it will run
    for step in steps:
        step.action = "keep"
    preflight(steps, "r.yaml")
    steps[2].action = "run"
    with pytest.raises(ConfigError, match=r"r\.yaml: stage 'sft': data\.sources is empty"):
        preflight(steps, "r.yaml")


def test_made_by_and_chat_template_detection(tmp_path):
    made = made_by([tmp_path / "out" / "world"])
    assert made(tmp_path / "out" / "world" / "a" / "b.jsonl") and made(str(tmp_path / "out" / "world"))
    assert not made(tmp_path / "out" / "worldwide") and not made(tmp_path / "elsewhere")
    plain = fake_model(tmp_path / "plain", chat_template=False)
    assert not has_chat_template(plain)
    (plain / "chat_template.jinja").write_text("{{ messages }}")
    assert has_chat_template(plain)


@pytest.mark.parametrize("recipe", sorted((REPO / "recipes").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_recipe_under_recipes_passes_its_preflight(recipe, tmp_path, monkeypatch):
    """Every stage of every recipe passes the checks before anything runs (a ${env.NAME} model
    directory gets a stand-in shaped like a chat model). They run from an empty directory: a
    card-only recipe of another recipe's models is told, naming the key, that they are not there."""
    expected_error = {"demo_base_sft_card": r"stage 'card': models\.base: not found: runs/demo/pretrain/final"}
    monkeypatch.chdir(tmp_path)
    for ref in references_in(yaml.safe_load(recipe.read_text())):
        if ref.startswith("env."):
            stand_in = tmp_path / "a-local-model"
            if not stand_in.exists():
                fake_model(stand_in)
            monkeypatch.setenv(ref.removeprefix("env."), str(stand_in))
    lines: list[str] = []
    if recipe.stem in expected_error:
        with pytest.raises(ConfigError, match=expected_error[recipe.stem]):
            run_recipe(recipe, out=str(tmp_path / recipe.stem), dry_run=True, say=lines.append)
        return
    run_recipe(recipe, out=str(tmp_path / recipe.stem), dry_run=True, say=lines.append)
    assert "run     not run yet" in lines[0]


@pytest.mark.parametrize(
    ("pretrain", "message"),
    [
        # a mixture stage weighting a source that does not exist: found when the data was tokenized
        ({"data": {"sources": [{"path": "builtin:pydoc", "name": "docs"}],
                   "stages": [{"name": "main", "weights": {"doc": 1.0}}]}},
         r"stage 'pretrain': data\.stages\[0\] \(main\): weight for 'doc', not a data source; did you mean 'docs'\?"),
        # a typo in a preset's config_overrides: found when the model was built
        ({"data": {"sources": [{"path": "builtin:pydoc"}]}, "model": {"preset": "llama-1m", "config_overrides": {"num_hidden_layer": 2}}},
         r"stage 'pretrain': model\.config_overrides: LlamaConfig has no field 'num_hidden_layer'; did you mean 'num_hidden_layers'\?"),
        # an EWC Fisher file that is not there
        ({"data": {"sources": [{"path": "builtin:pydoc"}]}, "ewc": {"weight": 1.0, "fisher": "{tmp}/ewc.safetensors"}},
         r"stage 'pretrain': ewc\.fisher: not found: {tmp}/ewc\.safetensors"),
    ],
)
def test_pretraining_mixture_model_and_ewc_are_checked_up_front(tmp_path, pretrain, message):
    pretrain = json.loads(json.dumps(pretrain).replace("{tmp}", str(tmp_path)))
    recipe = {"stages": {"world": {"stage": "world write", "config": {"size": "tiny"}}, "pretrain": {"config": pretrain}}}
    with pytest.raises(ConfigError, match=message.replace("{tmp}", str(tmp_path))):
        run_recipe(write(tmp_path, recipe), out=str(tmp_path / "out"), dry_run=True, say=lambda *_: None)


def eval_recipe(tmp_path: Path, tasks: list[dict]) -> Path:
    """world -> eval of a model the world stage's directory would hold (not checked: made by the recipe)."""
    tasks = json.loads(json.dumps(tasks).replace("{tmp}", str(tmp_path)))
    return write(tmp_path, {"stages": {"world": {"stage": "world write", "config": {"size": "tiny"}},
                                       "eval": {"config": {"models": ["${world.dir}/m"], "tasks": tasks}}}})


LM_TASK = {"kind": "lm", "data": [{"path": "${world.dir}/pretrain/world_a_valid.jsonl"}]}
VERIFIABLE = "${world.dir}/verifiable/test.jsonl"
PAIRS = "${world.dir}/preferences/pairs_test.jsonl"


@pytest.mark.parametrize(
    ("tasks", "message"),
    [
        # the three rules the generation and reward_accuracy tasks checked only when the eval stage ran
        ([LM_TASK, {"kind": "generation", "path": VERIFIABLE, "greedy": False}],
         r"stage 'eval': tasks\[1\]\.n: greedy is false and n is 0: nothing to measure"),
        ([LM_TASK, {"kind": "generation", "path": VERIFIABLE, "n": 2, "ks": [1, 4]}],
         r"stage 'eval': tasks\[1\]\.ks: \[1, 4\] has k above n=2 \(\[4\]\); pass@k draws k of the n samples"),
        ([{"kind": "reward_accuracy", "path": PAIRS, "reference": "${world.dir}/m"}],
         r"stage 'eval': tasks\[0\]\.reference: is for model_kind dpo .*; a reward model scores on its own"),
        # their files, given as plain paths, read up to the first usable record
        ([{"kind": "generation", "path": "{tmp}/prompts.jsonl"}],
         r"stage 'eval': tasks\[0\]\.path: no usable record in {tmp}/prompts\.jsonl \(first rejected at line 1: "),
        ([{"kind": "judge", "path": "{tmp}/prompts.jsonl"}],  # the same reader as generation's
         r"stage 'eval': tasks\[0\]\.path: no usable record in {tmp}/prompts\.jsonl \(first rejected at line 1: "),
        ([{"kind": "reward_accuracy", "path": "{tmp}/pairs.jsonl"}],
         r"stage 'eval': tasks\[0\]\.path: no usable record in {tmp}/pairs\.jsonl \(first rejected at line 1: identical_responses"),
    ],
)
def test_eval_task_rules_and_files_fail_before_the_first_stage(tmp_path, tasks, message):
    (tmp_path / "prompts.jsonl").write_text('{"question": "no prompt field"}\n')
    (tmp_path / "pairs.jsonl").write_text('{"prompt": "p", "chosen": "same", "rejected": "same"}\n')
    path, out = eval_recipe(tmp_path, tasks), tmp_path / "out"
    lines: list[str] = []
    for dry_run in (True, False):
        with pytest.raises(ConfigError, match=message.replace("{tmp}", str(tmp_path))):
            run_recipe(path, out=str(out), dry_run=dry_run, say=lines.append)
    assert lines == [] and not out.exists()  # the world stage never started


def test_the_same_eval_tasks_pass_when_their_settings_agree(tmp_path):
    good_pairs = tmp_path / "good_pairs.jsonl"
    good_pairs.write_text('{"prompt": "p", "chosen": "yes", "rejected": "no"}\n')
    tasks = [LM_TASK, {"kind": "generation", "path": VERIFIABLE, "greedy": False, "n": 4, "ks": [1, 4]},
             {"kind": "reward_accuracy", "path": str(good_pairs), "model_kind": "dpo", "reference": "${world.dir}/m"}]
    lines: list[str] = []
    run_recipe(eval_recipe(tmp_path, tasks), out=str(tmp_path / "out"), dry_run=True, say=lines.append)
    assert "eval" in lines[0] and f"reads {good_pairs} (outside the recipe)" in lines[0]


def test_chatforge_eval_reports_a_task_rule_before_it_loads_any_model(tmp_path):
    """`run_suite` checks every task first: the missing model directory would be the error otherwise."""
    from chatforge.evaluation.suite import SuiteConfig, run_suite

    cfg = SuiteConfig(models=[str(tmp_path / "no-model")], out=str(tmp_path / "eval.json"),
                      tasks=[{"kind": "generation", "path": str(tmp_path / "p.jsonl"), "n": 1, "ks": [1, 2]}])
    with pytest.raises(ConfigError, match=r"^tasks\[0\]\.ks: \[1, 2\] has k above n=1"):
        run_suite(cfg, progress=lambda *_: None)
    cfg.tasks[0].ks = [0, 1]  # pass_at_k raised a ValueError traceback on it, after sampling
    with pytest.raises(ConfigError, match=r"^tasks\[0\]\.ks: \[0, 1\] has k below 1"):
        run_suite(cfg, progress=lambda *_: None)
    assert not (tmp_path / "eval.json").exists()


def test_gpu_hf_plans_on_cpu_with_a_real_tiny_model_directory(tmp_path, monkeypatch, base_dir):
    """recipes/gpu_hf.yaml with a real (tiny) Hugging Face chat model in CHATFORGE_HF_MODEL: every
    check passes on a CPU machine, so a GPU machine only has to run it. The model is the machine's
    own (no stage makes it) and is read by sft, eval and the card."""
    from chatforge.models.build import load_pretrained

    assert load_pretrained(base_dir).config.model_type == "llama"  # the stand-in is a model, not a shape
    monkeypatch.setenv("CHATFORGE_HF_MODEL", str(base_dir))
    lines: list[str] = []
    result = run_recipe(REPO / "recipes" / "gpu_hf.yaml", out=str(tmp_path / "gpu_hf"), dry_run=True, say=lines.append)
    plan = lines[0]
    assert [s.name for s in result.steps] == ["world", "sft", "rm", "dpo", "bon", "rest", "eval", "card"]
    assert all(s.action == "run" for s in result.steps) and not (tmp_path / "gpu_hf").exists()
    assert f"        model = {base_dir}\n" in plan and f"        models[0] = {base_dir}\n" in plan  # no "(from STAGE)"
