"""`chatforge world write` on the command line."""

from __future__ import annotations

import json

from chatforge.cli import main


def test_world_write_from_the_command_line(tmp_path, capsys):
    assert main(["world", "write", "--out", str(tmp_path), "--size", "tiny", "--seed", "5"]) == 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert (manifest["seed"], manifest["size"]) == (5, "tiny")
    assert "web/pages.jsonl" in capsys.readouterr().out


def test_help_lists_the_config_keys(capsys):
    assert main(["world", "write", "--help"]) == 0
    out = capsys.readouterr().out
    for key in ("out", "size", "seed", "people", "fact_repeats", "novice_error_rate", "string_form"):
        assert f"  {key} " in out


def test_bad_size_and_unknown_key_are_one_line_errors(tmp_path, capsys):
    assert main(["world", "write", "--out", str(tmp_path), "--size", "huge"]) == 2
    assert main(["world", "write", "--out", str(tmp_path), "--sise", "tiny"]) == 2
    err = capsys.readouterr().err
    assert "size" in err and "did you mean 'size'" in err and "Traceback" not in err


def test_string_form_override_from_the_command_line(tmp_path, capsys):
    assert main(["world", "write", "--out", str(tmp_path), "--size", "tiny", "--string_form", "word"]) == 0
    assert json.loads((tmp_path / "manifest.json").read_text())["string_form"] == "word"
    assert "string form word" in capsys.readouterr().out
    assert main(["world", "write", "--out", str(tmp_path), "--size", "tiny", "--string_form", "letters"]) == 2
