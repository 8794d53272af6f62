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
