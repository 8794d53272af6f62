"""Pretraining documents: the facts of a world in many templates, mixed with real prose.

The corpus is written in rounds. Each round shuffles the people, cuts them into groups of 3-6 and
writes one document per group in a randomly chosen style; a document states every fact of every
person in its group exactly once. So `fact_repeats` rounds state each fact exactly `fact_repeats`
times, each time in a different document and usually in a different style and wording.
"""

from __future__ import annotations

import random

from chatforge.world.english import article
from chatforge.world.people import Person
from chatforge.world.prompts import FACT_TEMPLATES
from chatforge.world.records import PretrainDoc
from chatforge.world.seeding import rng_for
from chatforge.world.vocab import ATTRIBUTE_LABELS, ATTRIBUTES

STYLES: tuple[str, ...] = ("biography", "table", "qa", "list", "directory", "record")

# One-fact sentences. None of them says "the answer is", which is reserved for assistant answers.
_SENTENCES: dict[str, tuple[str, ...]] = {
    "city": (
        "{name} lives in {value}.", "{name} has made a home in {value}.", "{name} resides in {value}.",
        "You can find {name} in {value}, where they live.", "{name}'s home town is {value}.",
        "{value} is where {name} lives.",
    ),
    "profession": (
        "{name} works as {article} {value}.", "By profession, {name} is {article} {value}.",
        "{name} earns a living as {article} {value}.", "{name}'s profession is {value}.",
        "{name} is {article} {value} by trade.",
    ),
    "birth_year": (
        "{name} was born in {value}.", "{name} came into the world in {value}.",
        "The year {name} was born was {value}.", "{name}'s birth year is {value}.", "In {value}, {name} was born.",
    ),
    "pet": (
        "{name} has {article} {value} as a pet.", "At home, {name} keeps {article} {value}.",
        "{name}'s pet is {article} {value}.", "{name} owns {article} {value}.",
    ),
    "colour": (
        "{name}'s favourite colour is {value}.", "{name} loves the colour {value} more than any other.",
        "Of all colours, {name} likes {value} best.", "The colour {name} likes best is {value}.",
    ),
    "employer": (
        "{name} works for {value}.", "{name} is employed by {value}.", "{name}'s employer is {value}.",
        "{name} has a job at {value}.", "{value} employs {name}.",
    ),
}
_TITLES: dict[str, tuple[str, ...]] = {
    "biography": ("Profiles of local people", "Who's who", "Meet the neighbours", "People of note"),
    "table": ("Residents register", "Census extract", "Membership table"),
    "qa": ("Questions and answers about residents", "Frequently asked questions", "Quiz night notes"),
    "list": ("Facts at a glance", "Lists from the town archive", "Quick reference"),
    "directory": ("Directory of residents", "Staff and neighbours", "Address book notes"),
    "record": ("Record cards", "Index cards from the registry", "Personnel files"),
}
QA_PER_DOCUMENT = 24  # question-answer pairs per short-answer document
_QA_TITLES = ("Answer key", "Quiz answers", "Questions about residents, answered")
_LIST_HEADINGS: dict[str, str] = {
    "city": "Where they live", "profession": "What they do", "birth_year": "When they were born",
    "pet": "Their pets", "colour": "Favourite colours", "employer": "Who employs them",
}


def fact_sentence(person: Person, attribute: str, rng: random.Random) -> str:
    value = person.fact(attribute)
    return rng.choice(_SENTENCES[attribute]).format(name=person.name, value=value, article=article(value))


def _biography(group: list[Person], rng: random.Random) -> str:
    paragraphs = []
    for person in group:
        order = list(ATTRIBUTES)
        rng.shuffle(order)
        paragraphs.append(" ".join(fact_sentence(person, attribute, rng) for attribute in order))
    return "\n\n".join(paragraphs)


def _table(group: list[Person], rng: random.Random) -> str:
    columns = list(ATTRIBUTES)
    rng.shuffle(columns)
    header = " | ".join(["Name", *(ATTRIBUTE_LABELS[c].capitalize() for c in columns)])
    rows = [" | ".join([p.name, *(p.fact(c) for c in columns)]) for p in group]
    intro = f"The table below lists {len(group)} people, one per row."
    return "\n".join([intro, "", header, *rows])


def _qa(group: list[Person], rng: random.Random) -> str:
    pairs = [(p, attribute) for p in group for attribute in ATTRIBUTES]
    rng.shuffle(pairs)
    lines = []
    for person, attribute in pairs:
        question = rng.choice(FACT_TEMPLATES[attribute]).format(name=person.name)
        lines.append(f"Q: {question}\nA: {fact_sentence(person, attribute, rng)}")
    return "\n\n".join(lines)


def _list(group: list[Person], rng: random.Random) -> str:
    attributes = list(ATTRIBUTES)
    rng.shuffle(attributes)
    sections = []
    for attribute in attributes:
        items = [f"- {p.name}: {p.fact(attribute)}" for p in group]
        sections.append("\n".join([f"{_LIST_HEADINGS[attribute]}:", *items]))
    return "\n\n".join(sections)


def _directory(group: list[Person], rng: random.Random) -> str:
    lines = []
    for p in group:
        parts = [
            f"{p.profession} at {p.employer}", f"born {p.birth_year}", f"lives in {p.city}",
            f"keeps {article(p.pet)} {p.pet}", f"favourite colour {p.colour}",
        ]
        rng.shuffle(parts)
        lines.append(f"{p.name} - " + ", ".join(parts) + ".")
    return "\n".join(lines)


def _record(group: list[Person], rng: random.Random) -> str:
    cards = []
    for p in group:
        attributes = list(ATTRIBUTES)
        rng.shuffle(attributes)
        fields = [f"Name: {p.name}", *(f"{ATTRIBUTE_LABELS[a].capitalize()}: {p.fact(a)}" for a in attributes)]
        cards.append("\n".join(fields))
    return "\n\n".join(cards)


_RENDERERS = {
    "biography": _biography, "table": _table, "qa": _qa, "list": _list, "directory": _directory, "record": _record,
}


def fact_documents(seed: int, world_id: str, people: list[Person], rounds: int, label: str) -> list[PretrainDoc]:
    """`rounds` documents mention each person; each mention states all of their facts once."""
    rng = rng_for(seed, "fact-documents", world_id, label)
    docs: list[PretrainDoc] = []
    for _ in range(rounds):
        order = list(people)
        rng.shuffle(order)
        start = 0
        while start < len(order):
            size = rng.randint(3, 6)
            group = order[start : start + size]
            start += size
            style = rng.choice(STYLES)
            title = rng.choice(_TITLES[style])
            text = f"{title}\n\n{_RENDERERS[style](group, rng)}"
            docs.append({"id": "", "world": world_id, "source": "facts", "style": style, "text": text})
    return docs


def qa_documents(seed: int, world_id: str, people: list[Person], rounds: int) -> list[PretrainDoc]:
    """Short-answer question-answer text about the *train* people only: `question\nAnswer: value`.

    Why: facts read only as statements are memorised but not extractable by a question (a model
    learns "X was born in -> 1956", not "In what year was X born? -> 1956"). Seeing the question form
    answered for some people teaches the retrieval, which then works for people it never saw asked
    about (the knowledge test's `test` people; docs/world.md, "Knowledge"). Test-split people never
    appear here, so every held-out question stays unanswered in training.
    """
    rng = rng_for(seed, "qa-documents", world_id)
    askable = [p for p in people if p.split == "train"]
    docs: list[PretrainDoc] = []
    for _ in range(rounds):
        pairs = [(p, attribute) for p in askable for attribute in ATTRIBUTES]
        rng.shuffle(pairs)
        for start in range(0, len(pairs), QA_PER_DOCUMENT):
            lines = [f"{rng.choice(FACT_TEMPLATES[a]).format(name=p.name)}\nAnswer: {p.fact(a)}"
                     for p, a in pairs[start : start + QA_PER_DOCUMENT]]
            text = rng.choice(_QA_TITLES) + "\n\n" + "\n\n".join(lines)
            docs.append({"id": "", "world": world_id, "source": "qa", "style": "short_answer", "text": text})
    return docs


def prose_documents(world_id: str, chunks: list[str]) -> list[PretrainDoc]:
    return [{"id": "", "world": world_id, "source": "prose", "style": "pydoc", "text": c} for c in chunks]


def mixed_corpus(seed: int, world_id: str, label: str, docs: list[PretrainDoc]) -> list[PretrainDoc]:
    """Shuffle facts and prose together and number the documents."""
    rng = rng_for(seed, "corpus-order", world_id, label)
    order = list(docs)
    rng.shuffle(order)
    return [{**doc, "id": f"{world_id}-{label}-{i:06d}"} for i, doc in enumerate(order)]
