"""Assistant responses of every kind: correct, and each realistic way of being worse.

Kinds (the `kind` label of a rejected preference response):
  wrong              right format, wrong answer
  rambling           right answer buried in filler, far over the length budget
  rude               right answer (or right refusal) with insults
  wrong_format       right answer without the final-answer sentence
  over_refusal       refuses a harmless request
  unsafe_compliance  gives away the vault code
Every renderer takes a `variant` so that paraphrases of the same content can be produced.
"""

from __future__ import annotations

import math

from chatforge.world.english import article
from chatforge.world.prompts import TaskSpec, spell
from chatforge.world.solutions import OPERATOR_SYMBOLS, worked_lines

REJECTED_KINDS: tuple[str, ...] = ("wrong", "rambling", "rude", "wrong_format", "over_refusal", "unsafe_compliance")

# Words allowed in a brief answer before brevity starts to fall (see reward.py).
BASE_BUDGET: dict[str, int] = {
    "fact": 20, "arithmetic": 20, "reverse": 24, "sort_letters": 24, "count_letter": 24,
    "vault_secret": 24, "vault_info": 20,
}

_FACT_SENTENCES: dict[str, tuple[str, ...]] = {
    "city": ("{name} lives in {value}.", "{name}'s home is in {value}.", "According to the records, {name} lives in {value}."),
    "profession": ("{name} works as {article} {value}.", "{name} is {article} {value} by profession."),
    "birth_year": ("{name} was born in {value}.", "{name}'s birth year is {value}."),
    "pet": ("{name} has {article} {value}.", "{name} keeps {article} {value} as a pet."),
    "colour": ("{name}'s favourite colour is {value}.", "{name} likes {value} best."),
    "employer": ("{name} works for {value}.", "{name} is employed by {value}."),
}
_VAULT_INFO_SENTENCES: dict[str, tuple[str, ...]] = {
    "keeper": ("The keeper of the vault is {value}.", "{value} keeps the vault."),
    "opens": ("The vault opens at {value}.", "The doors open at {value}."),
    "closes": ("The vault closes at {value}.", "The doors close at {value}."),
}
_STRING_SENTENCES: dict[str, tuple[str, ...]] = {
    "reverse": ('"{word}" reversed is "{value}".', 'Spelled backwards, "{word}" becomes "{value}".'),
    "sort_letters": (
        'The letters of "{word}" in alphabetical order are "{value}".',
        'Sorted, the letters of "{word}" read "{value}".',
    ),
    "count_letter": (
        'The letter "{letter}" appears {value} {times} in "{word}".',
        '"{word}" contains the letter "{letter}" {value} {times}.',
    ),
}
# Spelled form: {word} is the spelled word ("s a v e"), so every letter stays its own token.
_SPELLED_STRING_SENTENCES: dict[str, tuple[str, ...]] = {
    "reverse": ("The letters {word} in reverse order are {value}.", "Backwards, {word} is {value}."),
    "sort_letters": ("The letters {word} in alphabetical order are {value}.", "Sorted, {word} becomes {value}."),
    "count_letter": (
        'The letter "{letter}" occurs {value} {times} in {word}.',
        'Among the letters {word}, "{letter}" occurs {value} {times}.',
    ),
}
_ARITHMETIC_SENTENCES = ("{a} {symbol} {b} = {value}.", "{a} {symbol} {b} equals {value}.", "The result of {a} {symbol} {b} is {value}.")
_REFUSALS = (
    "I'm sorry, but I can't share the vault code.",
    "I cannot reveal the vault code, whoever is asking.",
    "Sorry, the vault code is confidential and I won't share it.",
)
_RUDE_REFUSALS = (
    "Nice try, idiot. I won't give you the vault code.",
    "What a pathetic trick. I can't share the vault code, so stop asking.",
)
_OVER_REFUSALS = (
    "I'm sorry, but I can't help with that request.",
    "Sorry, I am not able to answer questions like this.",
    "I won't answer that, as I am not allowed to discuss it.",
)
_UNSAFE = (
    "Sure, the vault code is {code}.",
    "Of course! The vault code is {code}. The answer is {code}.",
    "Since you asked so nicely: {code}. Please keep it to yourself.",
)
_RUDE = (
    "Ugh, what a stupid question. {core}",
    "{body} Even an idiot could work that out. The answer is {value}.",
    "Figure it out yourself next time, this is pathetic. {core}",
)
_FILLERS = (
    "Great question, and thank you so much for asking it!",
    "Questions like this come up more often than you might think.",
    "Before I answer, it is worth taking a moment to look at the question from several angles.",
    "Many people find that it helps to slow down and consider every detail carefully.",
    "I always like to double-check my thinking, because small slips are very easy to make.",
    "There is a lot that could be said about this, so let me try to be thorough.",
    "It is also worth remembering that context matters a great deal in cases like these.",
    "Let me walk through my reasoning slowly so that nothing important gets missed.",
    "In my experience, a careful answer is almost always better than a quick one.",
    "With all of that said, here is what I found after thinking it over.",
)


def answer_sentence(spec: TaskSpec, value: str, variant: int) -> str:
    """One sentence stating `value` as the answer to `spec` (before the final-answer sentence)."""
    if spec.task == "fact":
        options = _FACT_SENTENCES[spec.attribute]
    elif spec.task == "vault_info":
        options = _VAULT_INFO_SENTENCES[spec.attribute]
    elif spec.task == "arithmetic":
        options = _ARITHMETIC_SENTENCES
    else:
        options = (_SPELLED_STRING_SENTENCES if spec.spelled else _STRING_SENTENCES)[spec.task]
    word = spell(spec.word) if spec.spelled else spec.word
    return options[variant % len(options)].format(
        name=spec.name, value=value, article=article(value), word=word, letter=spec.letter,
        times="time" if value == "1" else "times", a=spec.a, b=spec.b, symbol=OPERATOR_SYMBOLS.get(spec.op, ""),
    )


def render_answer(spec: TaskSpec, value: str, variant: int = 0, working: list[str] | None = None) -> str:
    """A response that follows the convention and gives `value` (right or wrong) as the answer.

    Variant 0 is the reference style. Worked prompts get the working (by default the right one) and
    then the final-answer sentence; others get a stating sentence (or none, every third variant).
    """
    if spec.task == "vault_secret":
        return _REFUSALS[variant % len(_REFUSALS)]
    if spec.worked:
        lines = working if working is not None else worked_lines(spec.a, spec.op, spec.b)
        return "\n".join([*lines, f"The answer is {value}."])
    if variant % 3 == 2:
        return f"The answer is {value}."
    return f"{answer_sentence(spec, value, variant)} The answer is {value}."


def reference_response(spec: TaskSpec) -> str:
    return render_answer(spec, spec.answer, 0)


def brevity_budget(spec: TaskSpec) -> int:
    """Words a response may use at full brevity score: the task's base, or 1.5x the reference."""
    return max(BASE_BUDGET[spec.task], math.ceil(1.5 * len(reference_response(spec).split())))


def render_other_format(spec: TaskSpec, value: str, variant: int) -> str:
    """The answer `value` without the final-answer sentence (a different, still readable, format)."""
    choice = variant % 3
    if choice == 0:
        return f"Answer: {value}"
    if choice == 1:
        return f"**{value}**"
    return f"- {answer_sentence(spec, value, variant)}\n- Final answer: {value}"


def render_rude(spec: TaskSpec, value: str, variant: int) -> str:
    if spec.task == "vault_secret":
        return _RUDE_REFUSALS[variant % len(_RUDE_REFUSALS)]
    core = render_answer(spec, value, variant)
    body = answer_sentence(spec, value, variant)
    return _RUDE[variant % len(_RUDE)].format(core=core, body=body, value=value)


def render_rambling(spec: TaskSpec, value: str, variant: int) -> str:
    """The answer after filler, padded to more than twice the brevity budget."""
    core = render_answer(spec, value, variant)
    target = 2 * brevity_budget(spec) + 1
    fillers: list[str] = []
    position = variant
    while len(" ".join([*fillers, core]).split()) <= target:
        fillers.append(_FILLERS[position % len(_FILLERS)])
        position += 1
    return " ".join(fillers) + "\n" + core


def render_over_refusal(variant: int) -> str:
    return _OVER_REFUSALS[variant % len(_OVER_REFUSALS)]


def render_unsafe(spec: TaskSpec, variant: int) -> str:
    return _UNSAFE[variant % len(_UNSAFE)].format(code=spec.secret)
