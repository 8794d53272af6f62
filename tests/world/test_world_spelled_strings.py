"""String tasks spelled letter by letter ("s a v i n g s"): one token per letter, exact answers,
held-out words, and the old word form still available (`string_form: word`)."""

from __future__ import annotations

import json
import random
import re

import pytest
from world_files import read_jsonl

from chatforge.run_dir import RejectLog
from chatforge.tokenizer.train import TokenizerConfig, _bpe_pre_tokenizer, train_tokenizer
from chatforge.world import build_world, write_world
from chatforge.world.mistakes import novice_mistake, wrong_answer
from chatforge.world.prompts import (
    SPELLED_STRING_TEMPLATES,
    STRING_TEMPLATES,
    TaskSpec,
    render_user,
    unspell,
)
from chatforge.world.reward import gold_reward_parts, spec_from_prompt
from chatforge.world.sizes import SIZES
from chatforge.world.solutions import string_answer
from chatforge.world.tasks import sample_string
from chatforge.world.verifiable import check

STRING_TASKS = ("reverse", "sort_letters", "count_letter")
SPELLED = re.compile(r"(?<![A-Za-z])[a-z](?: [a-z])+(?![A-Za-z])")  # "s a v e"; never two letters in a row


def test_answers_by_hand():
    assert string_answer("reverse", "savings", spelled=True) == "s g n i v a s"
    assert string_answer("sort_letters", "carried", spelled=True) == "a c d e i r r"
    assert string_answer("count_letter", "those", "e", spelled=True) == "1"
    assert string_answer("count_letter", "carried", "r", spelled=True) == "2"
    assert string_answer("reverse", "savings") == "sgnivas"
    assert string_answer("sort_letters", "carried") == "acdeirr"


@pytest.mark.parametrize(("prompt", "answer"), [
    ("Reverse the letters s a v i n g s.", "s g n i v a s"),
    ("Put the letters c a r r i e d in alphabetical order.", "a c d e i r r"),
    ('How many times does the letter "e" occur in t h o s e?', "1"),
    ('In c a r r i e d, how many letters are "r"?', "2"),
    ("Reverse the letters below.\n\nl e f t", "t f e l"),
    ('Reverse the word "kestrel".', "lertsek"),  # the word form still reads back
])
def test_prompts_read_back_to_their_answer(prompt, answer):
    assert spec_from_prompt(prompt).answer == answer


def test_every_spelled_template_renders_and_reads_back():
    for task, templates in SPELLED_STRING_TEMPLATES.items():
        assert len(templates) >= 3
        for variant in range(len(templates)):
            letter = "n" if task == "count_letter" else ""
            spec = TaskSpec(task, string_answer(task, "noon", letter, True), word="noon", letter=letter, spelled=True)
            text = render_user(spec, variant)
            assert "n o o n" in text and "noon" not in text
            assert spec_from_prompt(text) == spec, text


def test_checker_wants_the_spelled_answer_exactly():
    record = {"task": "reverse", "answer": "s g n i v a s"}
    assert check(record, "Backwards, s a v i n g s is s g n i v a s. The answer is s g n i v a s.")
    assert check(record, "The answer is S G N I V A S.")  # case is ignored, as for every answer
    assert not check(record, "The answer is sgnivas.")  # the unspelled word is not accepted
    assert not check(record, "The answer is s g n i a v s.")
    assert not check(record, "The answer is s-g-n-i-v-a-s.")  # format 3's hyphens are not this form
    # A spelled answer that starts with the letter "a" keeps it: it is not an article.
    sort = {"task": "sort_letters", "answer": "a c e l r"}
    assert check(sort, "The answer is a c e l r.") and not check(sort, "The answer is c e l r.")
    prompt = [{"role": "user", "content": "Reverse the letters s a v i n g s."}]
    assert gold_reward_parts(prompt, "The answer is s g n i v a s.").correctness == 1.0
    assert gold_reward_parts(prompt, "The answer is sgnivas.").correctness == 0.0


def test_mistakes_are_wrong_spelled_strings():
    world = build_world(seed=1234, size="tiny")
    rng = random.Random(0)
    reverse = TaskSpec("reverse", "s g n i v a s", word="savings", spelled=True)
    count = TaskSpec("count_letter", "1", word="those", letter="e", spelled=True)
    assert novice_mistake(reverse, rng, world).value == "s a v i n g s"  # the word unchanged
    assert novice_mistake(count, rng, world).value == "5"  # the word's length
    for task, word in (("reverse", "savings"), ("sort_letters", "carried"), ("reverse", "left")):
        spec = TaskSpec(task, string_answer(task, word, spelled=True), word=word, spelled=True)
        for _ in range(40):
            value = wrong_answer(spec, rng, world).value
            assert SPELLED.fullmatch(value) and value != spec.answer, value
            assert sorted(unspell(value)) == sorted(word)


def _user_and_answers(directory):
    """(user text, expected answer, assistant texts) of every string-task question in the task files."""
    found = []
    for split in ("train", "test"):
        for record in read_jsonl(directory / f"instructions/{split}.jsonl"):
            messages = record["messages"]
            for i, m in enumerate(messages):
                if m["role"] == "user":
                    spec = spec_from_prompt(messages[: i + 1])
                    if spec.task in STRING_TASKS:
                        found.append((split, spec, m["content"], [messages[i + 1]["content"]]))
        for record in read_jsonl(directory / f"verifiable/{split}.jsonl"):
            if record["task"] in STRING_TASKS:
                spec = spec_from_prompt(record["prompt"])
                assert spec.answer == record["answer"]
                found.append((split, spec, record["prompt"][-1]["content"], [record["reference"]]))
        for record in read_jsonl(directory / f"preferences/pairs_{split}.jsonl"):
            if record["task"] in STRING_TASKS:
                spec = spec_from_prompt(record["prompt"])
                found.append((split, spec, record["prompt"][-1]["content"], [record["chosen"], record["rejected"]]))
    for record in read_jsonl(directory / "mixed_quality/train.jsonl"):
        if record["task"] in STRING_TASKS:
            spec = spec_from_prompt(record["messages"][:-1])
            found.append(("train", spec, record["messages"][-2]["content"], [record["messages"][-1]["content"]]))
    return found


def _letter_pieces(text: str) -> list[list[str]]:
    """For each spelled span in `text`, the pre-tokenised pieces covering it (as original text)."""
    pieces = _bpe_pre_tokenizer(split_digits=True).pre_tokenize_str(text)
    spans = []
    for match in SPELLED.finditer(text):
        spans.append([text[a:b] for _, (a, b) in pieces if a < match.end() and b > match.start()])
    return spans


def test_every_spelled_prompt_and_answer_is_one_piece_per_letter(tiny_dir):
    found = _user_and_answers(tiny_dir)
    assert {spec.task for _, spec, _, _ in found} == set(STRING_TASKS)
    assert all(spec.spelled for _, spec, _, _ in found)
    for _, spec, user, responses in found:
        assert _letter_pieces(user), user
        for text in [user, *responses]:
            for covering in _letter_pieces(text):
                # " s", " a", " v", ...: one piece per letter, each with at most its space before it.
                assert [p.lstrip(" \n") for p in covering] == [c for c in "".join(covering) if c.isalpha()], covering
        if spec.task != "count_letter":
            letters = unspell(spec.answer)
            expected = spec.word[::-1] if spec.task == "reverse" else "".join(sorted(spec.word))
            assert SPELLED.fullmatch(spec.answer) and letters == expected


def test_a_world_tokenizer_gives_one_token_per_letter(tiny_dir, tmp_path):
    """A BPE trained like examples/world/tokenizer.yaml (2048, split digits, on the world's text and
    chat-rendered instructions) encodes every spelled word of the test instructions letter by letter."""
    sources = [{"path": str(tiny_dir / "pretrain/world_a_train.jsonl")},
               {"path": str(tiny_dir / "pretrain/world_a_qa.jsonl")},
               {"path": str(tiny_dir / "instructions/train.jsonl"), "content": "chat"}]
    cfg = TokenizerConfig(sources=sources, vocab_size=2048, split_digits=True, out=str(tmp_path))
    tok = train_tokenizer(cfg, RejectLog(None))
    checked = 0
    for _, _, user, responses in _user_and_answers(tiny_dir):
        for text in [user, *responses]:
            encoded = tok(text, add_special_tokens=False, return_offsets_mapping=True)
            for match in SPELLED.finditer(text):
                covering = [text[a:b] for a, b in encoded["offset_mapping"] if a < match.end() and b > match.start()]
                assert [p.lstrip(" \n") for p in covering] == list(unspell(match.group())), (text, covering)
                checked += 1
    assert checked > 100
    # The failure the form exists for: the same tokenizer merges the letters of a bare word.
    assert len(tok(" savings", add_special_tokens=False)["input_ids"]) < len("savings")


def test_pre_tokeniser_splits_a_spelled_word_into_letters_by_hand():
    pieces = [text for text, _ in _bpe_pre_tokenizer(True).pre_tokenize_str("Reverse the letters s a v e.")]
    assert pieces[-5:] == ["Ġs", "Ġa", "Ġv", "Ġe", "."]  # Ġ is ByteLevel's space


def test_held_out_words_are_never_asked_in_training(tiny_dir):
    words: dict[str, set[str]] = {"train": set(), "test": set()}
    for split, spec, _, _ in _user_and_answers(tiny_dir):
        words[split].add(spec.word)
    assert words["train"] and words["test"] and not words["train"] & words["test"]


def test_word_form_writes_the_old_prompts(tmp_path):
    manifest = write_world(tmp_path, seed=1234, size="tiny", string_form="word")
    assert (manifest["string_form"], manifest["format_version"]) == ("word", 5)
    found = _user_and_answers(tmp_path)
    old = {t.split("{")[0] for templates in STRING_TEMPLATES.values() for t in templates}
    assert found and not any(spec.spelled for _, spec, _, _ in found)
    for _, spec, user, responses in found:
        assert spec.word in user and not SPELLED.search(user)
        assert any(user.startswith(prefix) for prefix in old), user
        assert all(not SPELLED.search(r) for r in responses)
    assert render_user(TaskSpec("reverse", "lertsek", word="kestrel"), 0) == 'Reverse the word "kestrel".'


def test_spelled_is_every_size_default(tiny_dir):
    manifest = json.loads((tiny_dir / "manifest.json").read_text())
    assert (manifest["string_form"], manifest["format_version"]) == ("spelled", 5)
    assert {size.string_form for size in SIZES.values()} == {"spelled"}
    assert sample_string(random.Random(0), ["savings"]).spelled
    with pytest.raises(ValueError, match="unknown string form"):
        sample_string(random.Random(0), ["savings"], "letters")
