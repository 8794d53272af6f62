"""Typed configs and the CLI: unknown keys suggest the right one, wrong types name field and value."""

from __future__ import annotations

import pytest
import yaml

from chatforge.cli import STAGES, main
from chatforge.config.load import load_config, parse_overrides
from chatforge.errors import ConfigError
from chatforge.stages import pretrain


def test_overrides_are_typed_and_nested():
    assert parse_overrides(["optim.lr=3e-4", "--train.max_steps", "10", "model.preset=llama-1m", "x.y=[1, 2]"]) == {
        "optim": {"lr": 3e-4}, "train": {"max_steps": 10}, "model": {"preset": "llama-1m"}, "x": {"y": [1, 2]},
    }


def test_override_beats_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"optim": {"lr": 0.1}, "train": {"max_steps": 7}}))
    cfg = load_config(pretrain.Config, path, ["optim.lr=0.5"])
    assert cfg.optim.lr == 0.5 and cfg.train.max_steps == 7


def test_misspelled_key_suggests_the_nearest(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: unknown key 'optim\.lrr'; did you mean 'optim\.lr'\?"):
        load_config(pretrain.Config, path)


def test_misspelled_override_is_named_as_override():
    with pytest.raises(ConfigError, match=r"command-line override: unknown key 'train\.max_step'; did you mean 'train\.max_steps'"):
        load_config(pretrain.Config, None, ["train.max_step=3"])


def test_wrong_type_names_field_and_value():
    with pytest.raises(ConfigError, match=r"train\.max_steps: .*integer.*\(got 'many'\)"):
        load_config(pretrain.Config, None, ["train.max_steps=many"])


def test_unknown_preset_suggests():
    with pytest.raises(ConfigError, match=r"did you mean 'llama-10m'"):
        load_config(pretrain.Config, None, ["model.preset=llama-10"])


def test_yaml_syntax_error_names_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  max_steps: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+:\d+: invalid YAML"):
        load_config(pretrain.Config, path)


def test_help_lists_every_stage(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in STAGES:
        assert name in out


def test_every_stage_has_help(capsys):
    for name in STAGES:
        assert main([*name.split(), "--help"]) == 0, name
        assert f"chatforge {name}" in capsys.readouterr().out, name


def test_print_config_is_complete_and_reloadable(tmp_path, capsys):
    assert main(["pretrain", "train.max_steps=5", "--print-config"]) == 0
    dumped = capsys.readouterr().out
    data = yaml.safe_load(dumped)
    assert data["train"]["max_steps"] == 5 and data["schedule"]["kind"] == "cosine"
    path = tmp_path / "resolved.yaml"
    path.write_text(dumped)
    assert load_config(pretrain.Config, path).train.max_steps == 5


def test_cli_error_is_one_line_without_traceback(capsys):
    assert main(["pretrain", "optim.lrr=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err and "did you mean 'optim.lr'" in err


def test_unknown_stage_suggests(capsys):
    assert main(["pretrian"]) == 2
    assert "did you mean 'pretrain'" in capsys.readouterr().err.lower()


def test_demo_overrides_change_one_key_of_the_demo_settings():
    from chatforge.config.load import load_config
    from chatforge.stages import demo

    cfg = load_config(demo.Config, None, ["pretrain.train.progress=false", "pretrain.schedule.kind=wsd"])
    assert cfg.pretrain.out == "runs/demo/pretrain" and cfg.pretrain.train.max_steps == 150
    assert cfg.pretrain.train.progress is False and cfg.pretrain.schedule.kind == "wsd"
    assert cfg.pretrain.schedule.warmup_steps == 15  # the demo's, kept across the kind change


def test_help_shows_the_stage_defaults_not_the_section_class_defaults(capsys):
    rows = {}
    for name in ("dpo", "rest", "bon"):
        assert main([name, "--help"]) == 0
        rows[name] = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.startswith("  ")}
    assert rows["dpo"]["train.max_steps"].endswith("[int, default 100]")  # TrainConfig's own: 200
    assert rows["dpo"]["train.eval_every"].endswith("[int, default 25]")
    assert rows["dpo"]["optim.lr"].endswith("[float, default 2e-05]")  # OptimConfig's own: 0.001
    assert rows["dpo"]["optim.weight_decay"].endswith("[float, default 0.0]")
    assert "default CosineSchedule(kind='cosine', warmup_ratio=0.1)" in rows["dpo"]["schedule"]
    assert rows["rest"]["e_step.sampling.max_new_tokens"].endswith("[int, default 128]")  # SamplingConfig's: 256
    assert rows["rest"]["eval.sampling.seed"].endswith("[int | None, default 1]")
    assert rows["rest"]["m_step.optim.weight_decay"].endswith("[float, default 0.0]")
    assert rows["bon"]["sampling.seed"].endswith("[int | None, default 0]")
    assert rows["dpo"]["model"].endswith("[str, required]")
    assert rows["dpo"]["dynamics.probes"].endswith("[str, required]")  # an optional section: its class's fields


def test_a_section_given_in_part_keeps_the_stage_defaults_of_its_other_keys(tmp_path):
    """What --help shows is what a run gets, whichever keys of the section a YAML or override sets."""
    from chatforge.stages import dpo, rest

    path = tmp_path / "c.yaml"
    path.write_text("model: m\ntrain: {max_steps: 50}\n")
    cfg = load_config(dpo.Config, path, ["optim.lr=1e-4", "schedule.min_lr_ratio=0.05"])
    assert (cfg.train.max_steps, cfg.train.eval_every, cfg.train.micro_batch_size) == (50, 25, 8)
    assert (cfg.optim.lr, cfg.optim.weight_decay) == (1e-4, 0.0)
    assert (cfg.schedule.kind, cfg.schedule.warmup_ratio, cfg.schedule.min_lr_ratio) == ("cosine", 0.1, 0.05)
    # Another kind keeps only the settings it shares (the warmup), and its own defaults for the rest.
    wsd = load_config(dpo.Config, None, ["model=m", "schedule.kind=wsd"]).schedule
    assert (wsd.kind, wsd.warmup_ratio, wsd.decay_ratio) == ("wsd", 0.1, 0.2)
    # Two levels down, and through the Python API as well as the CLI.
    cfg = rest.Config(model="m", data={"sources": "a", "val_sources": "b"}, e_step={"sampling": {"temperature": 0.7}})
    assert (cfg.e_step.sampling.temperature, cfg.e_step.sampling.max_new_tokens, cfg.e_step.sampling.seed) == (0.7, 128, 0)
    assert cfg.e_step.samples_per_prompt == 16 and cfg.m_step.optim.lr == 1e-3
    # Setting every key by hand gives the same config as the defaults.
    assert load_config(dpo.Config, None, ["model=m", "train.max_steps=100"]) == dpo.Config(model="m")
