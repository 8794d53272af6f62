"""examples/sft/crlft_score.py: the training subsets, the letters a question spells, and the paired table's numbers."""

from __future__ import annotations

import argparse
import json

import pytest

from script_loader import load_script


@pytest.fixture(scope="module")
def crlft_score():
    return load_script("examples/sft/crlft_score.py")


@pytest.mark.parametrize("question, letters", [
    ("Reverse the letters below.\n\nm a n y", "m a n y"),
    ("Put the letters e i g h t in alphabetical order.", "e i g h t"),
    ("Sort the letters s o r t from a to z.", "s o r t"),   # "a to z" is not a run of single letters
    ("What is 3 + 4?", None),
])
def test_spelled_input_is_the_last_run_of_single_letters(crlft_score, question, letters):
    assert crlft_score._spelled_input(question) == letters


def _row(pid: str, source: str, correct: bool) -> dict:
    return {"id": f"{pid}-{source}", "prompt_id": pid, "task": "reverse", "source": source, "correct": correct,
            "messages": [{"role": "user", "content": "Reverse a b"}, {"role": "assistant", "content": "b × a"}]}


def test_subset_keeps_the_world_lines_and_disagree_keeps_only_prompts_the_novice_gets_wrong(crlft_score, tmp_path):
    rows = [_row("p0", "expert", True), _row("p0", "novice", True), _row("p1", "expert", True), _row("p1", "novice", False)]
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("".join(json.dumps(r) + "\n" for r in rows))   # "×" escaped, as the world writes it
    out, expert = tmp_path / "out.jsonl", tmp_path / "expert.jsonl"
    crlft_score.subset(argparse.Namespace(mixed=str(mixed), which="all", out_mixed=str(out), out_expert=str(expert)))
    assert out.read_bytes() == mixed.read_bytes()
    assert [json.loads(x)["id"] for x in expert.read_text().splitlines()] == ["p0-expert", "p1-expert"]
    crlft_score.subset(argparse.Namespace(mixed=str(mixed), which="disagree", out_mixed=str(out), out_expert=str(expert)))
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == ["p1-expert", "p1-novice"]
    assert [json.loads(x)["id"] for x in expert.read_text().splitlines()] == ["p1-expert"]
    assert not list(tmp_path.glob("*.tmp*"))


def test_table_means_ses_and_paired_difference(crlft_score, tmp_path, capsys):
    scores = {"plain_s1": [1, 0, 0, 0], "plain_s2": [1, 1, 0, 0], "crlft_s1": [1, 1, 0, 0], "crlft_s2": [1, 1, 1, 0]}
    for run, correct in scores.items():
        (tmp_path / run).mkdir()
        (tmp_path / run / "score.jsonl").write_text("".join(
            json.dumps({"i": i, "task": "fact", "task_type": "fact", "correct": c, "answer": "x"}) + "\n"
            for i, c in enumerate(correct)))
    crlft_score.table(argparse.Namespace(out_dir=str(tmp_path), file="score.jsonl"))
    lines = {line.split("|")[1].strip(): line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")}
    # plain: 0.25 and 0.5, mean 0.375, SE over seeds 0.125; a run's SE over questions: sd/sqrt(4)
    # (0.5/2 = 0.250 for one right of four, 0.577/2 = 0.289 for two). C-RLFT: 0.5 and 0.75.
    # Difference per seed +0.25 both times (SE 0); per question, averaged over seeds: 0, .5, .5, 0,
    # mean 0.25, sd sqrt(0.25/3) = 0.289, SE 0.144.
    assert lines["fact"] == ("| fact | 4 | **0.375 ± 0.125** (0.250±0.250, 0.500±0.289) | "
                             "**0.625 ± 0.125** (0.500±0.289, 0.750±0.250) | +0.250 (SE seeds 0.000, questions 0.144) |")
    assert lines["all"].endswith("+0.250 (SE seeds 0.000, questions 0.144) |")
