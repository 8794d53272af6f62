"""The report card: standard errors by hand, the decontamination check, gains over each model's
parent stage, a self-contained report.html, and that page rendered in headless Chromium.

    CHATFORGE_SCREENSHOTS=docs/img pytest tests/test_report_card.py   # also writes docs/img/report_card_test.png
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from pathlib import Path

import pytest

from chatforge.recipes.card.collect import _card_table, lineage
from chatforge.recipes.card.decontam import contaminated, ngram_overlap, training_index
from chatforge.recipes.card.provenance import parse_lock
from chatforge.recipes.card.render import card_rows, fmt_figure, to_html, to_markdown
from chatforge.recipes.card.stats import mean_sem, proportion_sem, ratio_sem, sem
from chatforge.recipes.plan import Step
from headless_chromium import Chromium, chromium_path


def test_standard_errors_by_hand():
    # values 1, 2, 3, 4: sample variance 5/3, sem = sqrt(5/3 / 4) = 0.6455
    assert sem([1, 2, 3, 4]) == pytest.approx(math.sqrt(5 / 3 / 4))
    assert math.isnan(sem([1.0]))
    # 0/1 values with mean 0.6: the proportion formula equals the plain one
    assert proportion_sem(0.6, 5) == pytest.approx(sem([1, 1, 1, 0, 0])) == pytest.approx(math.sqrt(0.24 / 4))
    # ratio of sums a = (2, 4, 6), b = (1, 1, 2): R = 3, residuals (-1, 1, 0), sem = sqrt(2 / 6) / (4 / 3)
    ratio, err = ratio_sem([2, 4, 6], [1, 1, 2])
    assert ratio == 3 and err == pytest.approx(math.sqrt(2 / 6) / (4 / 3))
    assert mean_sem([0.5, 0.5]) == (0.5, 0.0, 2)


def test_ngram_overlap_flags_shared_13_grams_and_whole_short_items(tmp_path):
    train_text = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen"
    grams, joined = training_index([train_text])
    assert contaminated("zero one two three four five six seven eight nine ten eleven twelve thirteen", grams, joined)
    assert not contaminated("one two three four five six seven eight nine ten eleven twelve FOURTEEN", grams, joined)
    assert contaminated("Five six seven!", grams, joined)  # shorter than 13 words: found whole (case, punctuation aside)
    assert not contaminated("six five", grams, joined)
    train = tmp_path / "train.jsonl"
    messages = [{"role": "system", "content": "shared system prompt"}, {"role": "user", "content": train_text}]
    train.write_text(json.dumps({"messages": messages}) + "\n")
    held = tmp_path / "test.jsonl"
    held.write_text('{"id": "a", "text": "five six seven"}\n{"id": "b", "text": "shared system prompt"}\n{"id": "c", "text": "unrelated"}\n')
    result = ngram_overlap([train], {"test": held})
    # the system prompt is not training content: only item a overlaps (whole: its 3 of the set's 7 words)
    assert result["sets"]["test"] == {"path": str(held), "items": 3, "overlapping": 1, "share": pytest.approx(1 / 3),
                                      "mostly_overlapping": 1, "words_covered": pytest.approx(3 / 7)}


def test_overlap_counts_items_mostly_made_of_training_text_apart_from_one_shared_phrase(tmp_path):
    """An item of 39 words sharing one 14-word template line overlaps but is 14/39 training text; a
    copied sentence is all training text."""
    template = "the table below lists four people one per row name city pet and job"  # 14 words
    facts = "alice lives in paris and keeps a cat while bob lives in rome and keeps a dog"  # 17 words
    fresh = " ".join(f"w{i}" for i in range(25))
    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps({"text": f"{template} {facts}"}) + "\n")
    held = tmp_path / "valid.jsonl"
    held.write_text(
        json.dumps({"text": f"{fresh} {template}"}) + "\n"  # 39 words, the template's 14 shared
        + json.dumps({"text": facts}) + "\n"  # 17 of 17 words shared
        + json.dumps({"text": f"the table below lists four people one per row {fresh}"}) + "\n"  # 9 + 25 words, no 13-gram
    )
    sets = ngram_overlap([train], {"valid": held})["sets"]["valid"]
    assert (sets["items"], sets["overlapping"], sets["mostly_overlapping"]) == (3, 2, 1)
    assert sets["words_covered"] == pytest.approx((14 + 17) / (39 + 17 + 34))


def test_record_metadata_is_not_text(tmp_path):
    """`style: table` in front of 12 shared template words made a 13-gram of them (the world's valid
    tables matched training tables so); the text alone shares 12 words, no 13-gram."""
    twelve = "the table below lists four people one per row name city pet"
    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps({"id": "t1", "world": "a", "style": "table", "text": f"{twelve} alpha beta"}) + "\n")
    held = tmp_path / "valid.jsonl"
    held.write_text(json.dumps({"id": "v1", "world": "a", "style": "table", "text": f"{twelve} gamma delta"}) + "\n")
    assert ngram_overlap([train], {"valid": held})["sets"]["valid"]["overlapping"] == 0
    held.write_text(json.dumps({"id": "v1", "world": "a", "style": "table", "text": f"x {twelve} alpha"}) + "\n")
    assert ngram_overlap([train], {"valid": held})["sets"]["valid"]["overlapping"] == 1  # 13 words of text: found


def test_parse_lock_reads_pinned_lines():
    text = "accelerate==1.16.0 \\\n    --hash=sha256:abc\n    # via peft\nPyYAML==6.0.2 ; python_version >= '3.8'\n"
    assert parse_lock(text) == {"accelerate": "1.16.0", "pyyaml": "6.0.2"}


def fake_steps(root: Path) -> list[Step]:
    def step(name, kind, config):
        return Step(name, kind, root / name, None, config, [], [])

    return [
        step("pretrain", "pretrain", {"init_from": None, "model": {"preset": "llama-2m"}}),
        step("sft", "sft", {"model": str(root / "pretrain" / "final")}),
        step("dpo", "dpo", {"model": str(root / "sft" / "final")}),
        step("cpt", "pretrain", {"init_from": str(root / "pretrain" / "final"), "model": {"preset": "llama-2m"}}),
    ]


MEASURES = {
    "models": {"base": "R/pretrain/final", "sft": "R/sft/final", "dpo": "R/dpo/final"},
    "reference": "sft",
    "measures": {
        "base": {"exact match (all)": {"value": 0.0, "sem": 0.0, "n": 60}},
        "sft": {"exact match (all)": {"value": 0.25, "sem": 0.03, "n": 60}},
        "dpo": {"exact match (all)": {"value": 0.3, "sem": 0.04, "n": 60}, "KL to sft": {"value": 1.5, "sem": 0.2, "n": 16}},
    },
}


def test_gains_are_over_the_model_each_stage_started_from(tmp_path):
    steps = fake_steps(Path("R"))
    assert lineage(MEASURES["models"], steps) == {"base": None, "sft": "base", "dpo": "sft"}
    # continued pretraining starts from init_from (a pretrain config's `model` is a section)
    assert lineage({"base": "R/pretrain/final", "cpt": "R/cpt/final"}, steps) == {"base": None, "cpt": "base"}
    # models from outside the recipe: each against the column before it
    outside = {"a": "/models/a", "b": "/models/b", "dpo": "R/dpo/final"}
    assert lineage(outside, steps) == {"a": None, "b": "a", "dpo": None}
    card = _card_table(MEASURES, steps)
    header, rows = card_rows(card)
    assert header == ["measure", "base", "sft", "dpo", "sft − base", "dpo − sft"]
    assert rows[0] == ["exact match (all)", "0.000 ± 0.000", "0.250 ± 0.030", "0.300 ± 0.040", "+0.250 ± 0.030", "+0.050 ± 0.050"]
    assert rows[1] == ["KL to sft", "-", "-", "1.500 ± 0.200", "-", "-"]
    assert fmt_figure({"value": float("nan"), "sem": 0.1}) == "-"


def report_data(tmp_path: Path) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plot = tmp_path / "loss.png"
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([1, 2, 3], [3, 2, 1])
    fig.savefig(plot)
    plt.close(fig)
    stage = {"name": "sft", "kind": "sft", "dir": "R/sft", "state": "done", "seconds": 75.0, "attempts": 2,
             "peak_rss_bytes": 600 * 2**20, "peak_cuda_bytes": None, "tokens_per_s": 1234.0, "steps": 10,
             "headline": [("final train loss", "1.23")], "plots": [str(plot)], "table": None}
    return {
        "name": "t", "description": "a test", "root": str(tmp_path), "recipe_text": "stages: {}\n",
        "card": _card_table(MEASURES, fake_steps(Path("R"))), "stages": [stage], "card_step": None,
        "provenance": {"git": {"commit": "abc", "dirty": True},
                       "packages": {"lock": None, "key": {"torch": "2.13.0"}, "differ": [], "missing": [], "matching": 0},
                       "hardware": {"cpu": "cpu", "cpu_cores": 2, "usable_cores": 2, "torch_threads": 1, "memory_gib": 8,
                                    "gpus": [], "platform": "linux", "python": "3.11", "torch": "2.13.0"},
                       "inputs": [{"file": "recipe.yaml", "sha256": "f" * 64, "used_by": "the recipe"}]},
        "decontamination": {"provisional": True, "method": "word 13-gram overlap (provisional)", "train_files": ["a.jsonl"],
                            "mostly": 0.5, "sets": {"instructions": {"items": 10, "overlapping": 1, "share": 0.1,
                                                                     "mostly_overlapping": 0, "words_covered": 0.04}}},
    }


def test_report_html_is_self_contained_and_markdown_has_the_table(tmp_path):
    data = report_data(tmp_path)
    page = to_html(data)
    assert '<table id="card">' in page and "data:image/png;base64," in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page) and "<link" not in page and "<script" not in page
    assert "uncommitted changes" in page and "provisional" in page
    md = to_markdown(data)
    assert "| exact match (all) | 0.000 ± 0.000 | 0.250 ± 0.030 | 0.300 ± 0.040 | +0.250 ± 0.030 | +0.050 ± 0.050 |" in md
    assert "| sft | sft | done (2 attempts) | 1 min 15 s | 1,234 | 600 MiB | - | 10 | final train loss 1.23 |" in md
    assert "| eval items overlapping | share | items ≥ 50% in shared n-grams | words in shared n-grams |" in md
    assert "| instructions | 10 | 1 | 10.0% | 0 | 4.0% |" in md


@pytest.mark.skipif(chromium_path() is None, reason="chromium is not installed (apt-get install chromium)")
def test_report_renders_in_chromium_with_its_table(tmp_path):
    html_file = tmp_path / "report.html"
    html_file.write_text(to_html(report_data(tmp_path)), encoding="utf-8")
    with Chromium(width=1200, height=900) as browser:
        browser.open(html_file.as_uri())
        rows = browser.evaluate("[...document.querySelectorAll('#card tbody tr')].map(r => [...r.cells].map(c => c.textContent))")
        assert rows[0][:2] == ["exact match (all)", "0.000 ± 0.000"]
        assert browser.evaluate("document.querySelector('#card').getBoundingClientRect().height") > 40
        # the embedded plot decoded: an image with its real size
        assert browser.evaluate("document.querySelector('img').naturalWidth") == 300
        shots = os.environ.get("CHATFORGE_SCREENSHOTS")
        png = browser.screenshot(Path(shots) / "report_card_test.png" if shots else tmp_path / "report.png")
    width, height = struct.unpack(">II", png.read_bytes()[16:24])
    assert width > 1000 and height >= 900  # the page, less a scrollbar


def test_a_clean_stage_decontamination_summary_replaces_the_provisional_check(tmp_path):
    from chatforge.recipes.card.collect import decontamination

    clean = Step("clean", "clean", tmp_path / "clean", None, {}, [], [])
    (clean.dir / "report").mkdir(parents=True)
    summary = {"n": 8, "mode": "label", "documents_checked": 146,
               "eval_sets": {"world/ceval": {"documents_contaminated": 3}, "world/test": {"documents_contaminated": 0}}}
    (clean.dir / "report" / "decontamination.json").write_text(json.dumps(summary))
    pointer = {"path": str(clean.dir / "report" / "decontamination.json"), "documents_contaminated": 3}
    (clean.dir / "report" / "summary.json").write_text(json.dumps({"decontamination": pointer}))
    found = decontamination([clean], None)
    assert found["provisional"] is False and found["unit"] == "training documents"
    assert found["sets"]["world/ceval"] == {"items": 146, "overlapping": 3, "share": pytest.approx(3 / 146)}
    assert "| world/ceval | 146 | 3 | 2.1% |" in to_markdown({**report_data(tmp_path), "decontamination": found})


def test_a_recipe_of_only_a_card_measures_existing_models(tmp_path, base_dir, world):
    """No stages: the card of two model directories from elsewhere (the same tiny model twice, so every
    gain is exactly zero and KL to the reference is exactly zero)."""
    import yaml

    from chatforge.recipes.runner import run_recipe

    card = {"models": {"first": str(base_dir), "second": str(base_dir), "third": str(tmp_path / "never-made")},
            "reference": "first", "world": str(world),
            "knowledge": str(world / "ceval"), "knowledge_questions": 4, "knowledge_shots": 1,
            "instructions": str(world / "instructions" / "test.jsonl"), "instructions_max": 4,
            "verifiable": str(world / "verifiable" / "test.jsonl"), "verifiable_max": 3, "samples": 2, "ks": [1, 2],
            "pairs": str(world / "preferences" / "pairs_test.jsonl"), "pairs_max": 4,
            "text": [str(world / "pretrain" / "world_a_valid.jsonl")], "text_documents": 2, "kl_prompts": 3, "max_new_tokens": 8}
    path = tmp_path / "card.yaml"
    path.write_text(yaml.safe_dump({"name": "twins", "card": card}))
    lines: list[str] = []
    result = run_recipe(path, out=str(tmp_path / "out"), say=lines.append)
    assert lines[0] == (f"warning: {path}: stage 'card': models.third: not found: {tmp_path / 'never-made'}, and no stage "
                        "makes it; its card column will read \"not measured\"")  # said before anything runs
    measures = json.loads((tmp_path / "out" / "card" / "measures.json").read_text())["measures"]
    assert measures["first"]["knowledge accuracy"]["n"] == 8  # 4 questions x 2 subjects
    assert measures["second"]["KL to first"]["value"] == 0.0
    for name, figure in measures["first"].items():
        assert measures["second"][name]["value"] == figure["value"], name
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| measure | first | second | second − first |" in md
    assert f"Not measured: `third` (no model directory at {tmp_path / 'never-made'})." in md  # e.g. ReST-EM kept nothing
    assert result.report == tmp_path / "out" / "report.html"
    assert lines[-2].startswith(f"chat with the final model: chatforge serve {base_dir}")


def test_an_online_rl_stage_headline_gives_its_held_out_gold_gain_and_kl():
    from chatforge.recipes.card.collect import headline

    summary = {"parameters": 1000,
               "eval": {"start": {"eval/gold": 0.48, "eval/kl": 0.0}, "final": {"eval/gold": 0.546, "eval/kl": 0.9023}},
               "gold_gain": {"gain": 0.066, "se": 0.014, "z": 4.71, "prompts": 100}}
    lines = dict(headline(None, summary))
    assert lines["held-out gold"] == "0.480 -> 0.546 (+0.066 ± 0.014, 4.7 SE) at KL 0.90 nats"
    assert "held-out pair accuracy" not in lines  # the RL eval block is not a reward model's
    # kl.coef 0: no reference, eval/kl is NaN (json reads it back as such): not a KL of "nan nats"
    summary["eval"]["final"]["eval/kl"] = float("nan")
    assert dict(headline(None, summary))["held-out gold"] == "0.480 -> 0.546 (+0.066 ± 0.014, 4.7 SE) KL not measured"


def test_card_instructions_count_a_record_without_messages_instead_of_dropping_it(tmp_path, tiny_tokenizer, world):
    from types import SimpleNamespace

    from chatforge.recipes.card.config import CardConfig
    from chatforge.recipes.card.measure import _instructions
    from chatforge.run_dir import RejectLog
    from tiny_models import make_tiny_model

    path = tmp_path / "instructions.jsonl"
    asked = [{"role": "user", "content": "Reverse the letters below.\n\nm a n y"}]
    path.write_text(json.dumps({"messages": [*asked, {"role": "assistant", "content": "The answer is y n a m."}],
                                "answers": ["y n a m"], "task_type": "string"}) + "\n"
                    + json.dumps({"prompt": asked, "task_type": "string"}) + "\n")
    cfg = CardConfig(models={"m": str(tmp_path)}, instructions=str(path), world=str(world), max_new_tokens=4)
    ctx = SimpleNamespace(model=make_tiny_model(len(tiny_tokenizer)).eval(), tokenizer=tiny_tokenizer)
    rejects = RejectLog(tmp_path / "rejected.jsonl")
    with rejects:
        out = _instructions(cfg, ctx, rejects)
    assert out["exact match (all)"]["n"] == 1
    assert rejects.counts == {"bad_field": 1}
    logged = json.loads((tmp_path / "rejected.jsonl").read_text().splitlines()[0])
    assert logged["reason"] == "bad_field" and str(logged["where"]).endswith("2")
