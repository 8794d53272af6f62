"""World format 2: short-answer QA text only about train people, the arithmetic and word ladders."""

from __future__ import annotations

import random
import re
from collections import Counter

from world_files import read_jsonl

from chatforge.world import build_world, spec_from_prompt
from chatforge.world.documents import qa_documents
from chatforge.world.tasks import ARITHMETIC_RUNGS, arithmetic_rung, sample_arithmetic, sample_string
from chatforge.world.vocab import ATTRIBUTES


def test_qa_text_answers_every_train_fact_and_never_names_a_test_person(tiny_dir):
    for world_id in ("a", "b"):
        people = read_jsonl(tiny_dir / f"facts/world_{world_id}_people.jsonl")
        text = "\n".join(d["text"] for d in read_jsonl(tiny_dir / f"pretrain/world_{world_id}_qa.jsonl"))
        assert {p["split"] for p in people} == {"train", "test"}
        for person in people:
            named = re.search(rf"(?<!\w){re.escape(person['name'])}(?!\w)", text)
            if person["split"] == "test":
                assert named is None, person["name"]
                continue
            for attribute in ATTRIBUTES:  # the question, then "Answer: <value>" on the next line
                pattern = rf"{re.escape(person['name'])}(?!\w)[^\n]*\?\nAnswer: {re.escape(person[attribute])}\n"
                assert re.search(pattern, text + "\n"), (person["name"], attribute)


def test_qa_rounds_state_each_train_fact_once_per_round():
    world = build_world(seed=7, size="tiny")
    people = world.people["a"]
    docs = qa_documents(7, "a", people, rounds=3)
    answers = Counter(line for d in docs for line in d["text"].split("\n\n")[1:])
    train = [p for p in people if p.split == "train"]
    assert sum(answers.values()) == 3 * len(train) * len(ATTRIBUTES)
    assert all(d["source"] == "qa" for d in docs)


def test_arithmetic_rungs_by_hand():
    assert arithmetic_rung(7, "+", 5) == 1
    assert arithmetic_rung(34, "+", 5) == 1   # 2-digit + 1-digit is the first rung
    assert arithmetic_rung(34, "+", 15) == 2
    assert arithmetic_rung(8, "*", 7) == 1
    assert arithmetic_rung(34, "*", 7) == 2
    assert arithmetic_rung(34, "*", 17) == 3  # two 2-digit factors: rung 3
    assert arithmetic_rung(4321, "-", 999) == 4
    assert arithmetic_rung(12345, "+", 1) == 5  # beyond the ladder


def test_sampled_problems_follow_the_rung_weights():
    rng = random.Random(0)
    draws = [sample_arithmetic(rng) for _ in range(4000)]
    rungs = Counter(arithmetic_rung(s.a, s.op, s.b) for s in draws)
    for rung, weight in ARITHMETIC_RUNGS.items():
        share = rungs[rung] / len(draws)
        # A problem drawn for rung r may also fit a lower rung (e.g. 5 + 3 drawn for rung 2's "+").
        assert share <= weight + 0.03 or rung == 1, (rung, share)
    assert rungs[1] / len(draws) >= ARITHMETIC_RUNGS[1] - 0.03
    assert set(rungs) <= set(ARITHMETIC_RUNGS)
    assert all(s.a > 0 and s.b > 0 and int(s.answer) >= 0 for s in draws)
    for rung in ARITHMETIC_RUNGS:
        spec = sample_arithmetic(random.Random(rung), rung=rung)
        assert arithmetic_rung(spec.a, spec.op, spec.b) <= rung


def test_string_tasks_prefer_short_words():
    words = [w * 1 for w in ("abcd", "bcde", "abcde", "abcdef", "abcdefg", "abcdefgh", "abcdefghi")]
    rng = random.Random(1)
    lengths = Counter(len(sample_string(rng, words).word) for _ in range(3000))
    assert lengths[4] > lengths[5] > lengths[6] > lengths[9]


def test_test_arithmetic_never_repeats_a_training_problem_at_any_rung(tiny_dir):
    def problems(split):
        found = set()
        for record in read_jsonl(tiny_dir / f"instructions/{split}.jsonl"):
            for i, message in enumerate(record["messages"]):
                if message["role"] == "user" and record["task"] in ("arithmetic", "conversation"):
                    spec = spec_from_prompt(record["messages"][: i + 1])
                    if spec.task == "arithmetic":
                        found.add((spec.a, spec.op, spec.b))
        return found

    train, test = problems("train"), problems("test")
    assert train and test and not train & test
    assert {arithmetic_rung(*p) for p in test} >= {1, 2}


def test_novice_mistakes_follow_one_bug_per_task_by_hand():
    from chatforge.world.mistakes import novice_mistake
    from chatforge.world.prompts import TaskSpec

    world = build_world(seed=1234, size="tiny")
    rng = random.Random(0)
    assert novice_mistake(TaskSpec("arithmetic", "72", a=47, b=25, op="+"), rng, world).value == "62"  # no carry
    assert novice_mistake(TaskSpec("arithmetic", "18", a=43, b=25, op="-"), rng, world).value == "22"  # |3-5|, 4-2
    assert novice_mistake(TaskSpec("arithmetic", "1175", a=47, b=25, op="*"), rng, world).value == "235"  # 47 x 5
    assert novice_mistake(TaskSpec("reverse", "tac", word="cat"), rng, world).value == "cat"
    assert novice_mistake(TaskSpec("count_letter", "1", word="cats", letter="a"), rng, world).value == "4"
    person = world.people["a"][0]
    values = Counter(p.colour for p in world.people["a"])
    commonest = sorted(values, key=lambda v: (-values[v], v))
    expected = commonest[0] if commonest[0] != person.colour else commonest[1]
    spec = TaskSpec("fact", person.colour, name=person.name, attribute="colour")
    assert novice_mistake(spec, rng, world).value == expected
    # Where the bug gives the right answer (no carry), the novice is still wrong.
    assert novice_mistake(TaskSpec("arithmetic", "22", a=12, b=10, op="+"), rng, world).value != "22"


def test_arithmetic_text_never_shows_a_problem_any_task_file_asks(tiny_dir):
    from chatforge.world.arithmetic_drill import record_problems
    from chatforge.world.solutions import compute

    docs = read_jsonl(tiny_dir / "pretrain/arithmetic_train.jsonl")
    shown = set()
    for doc in docs:
        # One-line problems ("47 + 25 = 72") and the last line of worked ones ("So 47 + 25 = 72.").
        for a, op, b, c in re.findall(r"(?m)^(?:So )?(\d+) ([+×-]) (\d+) = (\d+)\.?$", doc["text"]):
            op = "*" if op == "×" else op
            assert compute(int(a), op, int(b)) == int(c)
            shown.add((int(a), op, int(b)))
    assert len(shown) == 160  # tiny's arithmetic_text, each problem once
    asked = set()
    for name in ("instructions/train", "instructions/test", "verifiable/train", "verifiable/test",
                 "preferences/pairs_train", "preferences/pairs_test", "preferences/rankings_train",
                 "preferences/rankings_test", "mixed_quality/train"):
        asked |= record_problems(read_jsonl(tiny_dir / f"{name}.jsonl"))
    assert asked and not shown & asked


def test_worked_arithmetic_text_states_its_problem_before_the_working(tiny_dir):
    docs = read_jsonl(tiny_dir / "pretrain/arithmetic_train.jsonl")
    worked = [block for doc in docs for block in doc["text"].split("\n\n") if "\n" in block]
    assert worked
    for block in worked:
        lines = block.split("\n")
        first = re.fullmatch(r"Compute (\d+) ([+×-]) (\d+)\.", lines[0])
        assert first, block
        a, op, b = first.groups()
        assert lines[-1] == f"So {a} {op} {b} = {lines[-1].split(' = ')[-1]}", block
        ones = re.match(r"Ones: (\d) ", lines[1])
        if ones:  # column working starts from the ones digits of the problem just stated
            assert ones.group(1) == a[-1], block
