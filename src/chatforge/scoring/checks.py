"""Checkers: `check(record, response) -> bool`, what pass@k, majority vote and exact match count.

    make_checker("world")                the task world's checker (`scoring.world.world_correct`)
    make_checker("answers")              the response, or its final answer, is one of the record's `answers`
    make_checker("function:pkg.mod:fn")  a user function fn(record, response) -> bool
"""

from __future__ import annotations

from collections.abc import Callable

from chatforge.errors import DataError

Checker = Callable[[dict, str], bool]


def make_checker(spec: str) -> Checker:
    if spec == "world":
        from chatforge.scoring.world import world_correct

        return world_correct
    if spec == "answers":
        return answers_check
    from chatforge.scoring.function import import_function

    return import_function(spec.removeprefix("function:"))


def answers_check(record: dict, response: str) -> bool:
    from chatforge.scoring.world import final_answer_in

    answers = record.get("answers")
    if not isinstance(answers, list):
        raise DataError(f"{record.get('_where', '?')}: checker answers needs a list field 'answers'")
    return final_answer_in(answers, response)
