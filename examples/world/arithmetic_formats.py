"""A copy of a written world whose arithmetic is always worked, in one working style (docs/world_learnability.md,
"Arithmetic always worked, ones first"): the experiment behind the choice of the world's arithmetic format.

    python examples/world/arithmetic_formats.py runs/w5 runs/fmt_ones_first --style ones_first [--drill 3000] [--digit-puzzles 40000] [--spelled-numbers]

WORLD is a directory holding `data/` (a written world) and `tokenizer/`. OUT gets a copy of the data
in which
  - every single-turn arithmetic instruction (train and test) asks for working in its system prompt
    and answers with `solutions.worked_lines(..., style)` then "The answer is N.", direct questions
    included: a 2M model cannot add four-digit numbers in one step, so no question asks it to;
  - every worked problem of the pretraining arithmetic text is rewritten in the same style, and every
    verifiable arithmetic prompt (verifiable/*.jsonl, for ReST-EM and RL) asks for working;
  - with --drill N, `drill.jsonl`: N more worked arithmetic records in the style, none a problem of the world;
  - with --digit-puzzles N, `data/pretrain/digits_train.jsonl`: N solved number-copying puzzles
    (copy, spell, reverse a number; name a problem's operands, never a problem of the world);
  - with --spelled-numbers, every number of the arithmetic (questions, working, answers, pretraining
    text, drill, puzzles) spelled digit by digit, "3 3 9 + 7 5", as the letter tasks spell words: with a
    `digit_space` tokenizer each digit is then one token, as each spelled letter is (train one on OUT/data);
and a link to WORLD's tokenizer (unless OUT has one). Problems, answers and splits are unchanged, so held-out exact match
compares styles on the same questions.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import re
import shutil
from pathlib import Path

from chatforge.world import spec_from_prompt
from chatforge.world.arithmetic_drill import drill_records, world_problems
from chatforge.world.prompts import FINAL_ANSWER_CONVENTION, canonical_op, read_question, spell_digits
from chatforge.world.responses import render_answer
from chatforge.world.solutions import WORKING_STYLES, worked_lines

WORKED_SYSTEM = "You are a careful calculator. Work it out step by step. " + FINAL_ANSWER_CONVENTION
_COMPUTE = re.compile(r"^Compute (\d+) (\+|-|×) (\d+)\.$")


def rewrite_record(record: dict, style: str) -> dict:
    """A single-turn arithmetic record with the worked system prompt and a worked answer; others unchanged."""
    if record.get("task") != "arithmetic":
        return record
    messages = [dict(m) for m in record["messages"]]
    spec = dataclasses.replace(spec_from_prompt(messages[:-1]), worked=True)
    working = worked_lines(spec.a, spec.op, spec.b, style)
    for message in messages:
        if message["role"] == "system":
            message["content"] = WORKED_SYSTEM
        if message["role"] == "assistant":
            message["content"] = render_answer(spec, spec.answer, working=working)
    return {**record, "messages": messages}


def rewrite_verifiable(record: dict, style: str, spelled: bool) -> dict:
    """A verifiable arithmetic prompt (ReST-EM, RL) with the worked system prompt, spelled when `spelled`;
    its `answer` stays the plain number, which the checker compares as an integer."""
    if record.get("task") != "arithmetic":
        return record
    conversation = rewrite_record({"task": "arithmetic", "messages": [*record["prompt"], {"role": "assistant", "content": ""}]}, style)
    if spelled:
        conversation = spell_record(conversation)
    *prompt, reference = conversation["messages"]
    return {**record, "prompt": prompt, "reference": reference["content"]}


def spell_record(record: dict) -> dict:
    """Every arithmetic turn's numbers (question and answer) spelled digit by digit; other turns unchanged."""
    messages = [dict(m) for m in record["messages"]]
    arithmetic = False
    for message in messages:
        if message["role"] == "user":
            question = read_question(message["content"])
            arithmetic = question is not None and question.task == "arithmetic"
        if arithmetic and message["role"] in ("user", "assistant"):
            message["content"] = spell_digits(message["content"])
    answers = record.get("answers")
    if arithmetic and answers:  # the last question asked is arithmetic: its answers are spelled too
        answers = [spell_digits(str(a)) for a in answers]
    return {**record, "messages": messages, **({"answers": answers} if answers is not None else {})}


def rewrite_text(text: str, style: str) -> str:
    """Pretraining text: each "Compute A op B." block's working rewritten in `style`."""
    blocks = text.split("\n\n")
    for i, block in enumerate(blocks):
        head = block.split("\n", 1)[0]
        found = _COMPUTE.match(head)
        if found:
            a, op, b = int(found.group(1)), canonical_op(found.group(2)), int(found.group(3))
            blocks[i] = "\n".join([head, *worked_lines(a, op, b, style)])
    return "\n\n".join(blocks)


def rewrite_jsonl(path: Path, change) -> None:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    path.write_text("".join(json.dumps(change(row)) + "\n" for row in rows), encoding="utf-8")


_DIGIT_KINDS, _DIGIT_WEIGHTS = ("repeat", "spell", "ones_first", "operands"), (0.3, 0.2, 0.25, 0.25)


def digit_puzzle(kind: str, rng, exclude: set) -> str:
    """One solved number-copying puzzle on random numbers (1-6 digits), as letters_text does for letters."""
    def number() -> int:
        digits = rng.randint(1, 6)
        return rng.randrange(10 ** (digits - 1) if digits > 1 else 1, 10**digits)

    n = number()
    spelled, backwards = " ".join(str(n)), " ".join(str(n)[::-1])
    if kind == "repeat":
        return f"Say {n} three times: {n} ; {n} ; {n}."
    if kind == "spell":
        return rng.choice((f"The digits of {n} are {spelled}.", f"{spelled} written as a number is {n}."))
    if kind == "ones_first":
        return rng.choice((f"Ones first, {n} is {backwards}.", f"Ones first: {backwards}. In order: {spelled}. That is {n}."))
    while True:  # the operands of a problem, never one the world asks
        a, b, op = number(), number(), rng.choice("+-×")
        if (a, canonical_op(op), b) not in exclude:
            return f"In {a} {op} {b} the numbers are {a} and {b}; ones first, {' '.join(str(a)[::-1])} and {' '.join(str(b)[::-1])}."


def digit_documents(count: int, exclude: set, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    docs, blocks = [], []
    for _ in range(count):
        blocks.append(digit_puzzle(rng.choices(_DIGIT_KINDS, weights=_DIGIT_WEIGHTS)[0], rng, exclude))
        if len(blocks) == 12:
            docs.append({"id": f"digits-{len(docs):06d}", "world": "general", "source": "digits",
                         "style": "solved_puzzles", "text": "Number copying, solved\n\n" + "\n".join(blocks)})
            blocks = []
    return docs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("world", type=Path, help="a directory with data/ (a written world) and tokenizer/")
    parser.add_argument("out", type=Path)
    parser.add_argument("--style", choices=WORKING_STYLES, required=True)
    parser.add_argument("--drill", type=int, default=0, help="extra worked arithmetic records to write to OUT/drill.jsonl")
    parser.add_argument("--digit-puzzles", type=int, default=0,
                        help="solved number-copying puzzles to write to OUT/data/pretrain/digits_train.jsonl")
    parser.add_argument("--spelled-numbers", action="store_true",
                        help="spell every number of the arithmetic digit by digit (\"3 3 9 + 7 5\")")
    args = parser.parse_args()
    data = args.out / "data"
    if data.exists():
        shutil.rmtree(data)
    shutil.copytree(args.world / "data", data)
    spell = spell_digits if args.spelled_numbers else (lambda text: text)
    spell_rec = spell_record if args.spelled_numbers else (lambda record: record)
    for split in ("train", "test"):
        rewrite_jsonl(data / "instructions" / f"{split}.jsonl", lambda r: spell_rec(rewrite_record(r, args.style)))
        rewrite_jsonl(data / "verifiable" / f"{split}.jsonl", lambda r: rewrite_verifiable(r, args.style, args.spelled_numbers))
    rewrite_jsonl(data / "pretrain" / "arithmetic_train.jsonl",
                  lambda d: {**d, "text": spell(rewrite_text(d["text"], args.style))})
    tokenizer = args.out / "tokenizer"
    if not tokenizer.exists():
        tokenizer.symlink_to((args.world / "tokenizer").resolve())
    asked = world_problems(data)
    if args.drill:
        records = [spell_rec(rewrite_record(r, args.style)) for r in drill_records(1, args.drill, asked)]
        (args.out / "drill.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    if args.digit_puzzles:
        docs = [{**d, "text": spell(d["text"])} for d in digit_documents(args.digit_puzzles, asked)]
        (data / "pretrain" / "digits_train.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    print(f"wrote {data} ({args.style} working{', numbers spelled' if args.spelled_numbers else ''})" + (f" and {args.drill} drill records" if args.drill else ""))


if __name__ == "__main__":
    main()
