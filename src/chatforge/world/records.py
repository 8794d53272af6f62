"""The record schemas of every file the world writes (stable: later stages import these).

Each `TypedDict` is exactly one JSON line (or one CSV row) of the file named in its docstring;
`docs/world.md` shows an example of each.
"""

from __future__ import annotations

from typing import TypedDict


class Message(TypedDict):
    role: str  # "system" | "user" | "assistant"
    content: str


class PersonRecord(TypedDict):
    """`facts/world_<a|b>_people.jsonl`: one person and their facts."""

    world: str
    index: int
    name: str
    city: str
    profession: str
    birth_year: str
    pet: str
    colour: str
    employer: str
    split: str  # "train" | "test": which instruction split asks about this person


class PretrainDoc(TypedDict):
    """`pretrain/*.jsonl`: one document of plain text."""

    id: str
    world: str  # "a" | "b" | "general"
    source: str  # "facts" | "prose"
    style: str  # fact template family ("biography", "table", ...) or "pydoc" for prose
    text: str


class McQuestion(TypedDict):
    """`ceval/<split>/world_<a|b>_<split>.csv` row (C-Eval layout). The dev split also has `explanation`."""

    id: int
    question: str
    A: str
    B: str
    C: str
    D: str
    answer: str  # "A" | "B" | "C" | "D"


class InstructionRecord(TypedDict):
    """`instructions/{train,test}.jsonl`: an OpenAI-style conversation with its exact answers."""

    id: str
    task: str  # fact | arithmetic | reverse | sort_letters | count_letter | vault_secret | vault_info | conversation
    task_type: str  # fact | arithmetic | string | vault | conversation (one system prompt each)
    messages: list[Message]
    answers: list[str]  # exact final answer of each assistant turn ("" where refusing is right)


class AlpacaRecord(TypedDict):
    """`instructions/{train,test}_alpaca.jsonl`: instruction/input/output, earlier turns in `history`."""

    id: str
    task: str
    system: str
    instruction: str
    input: str
    output: str
    history: list[list[str]]  # [[user, assistant], ...] turns before this one (multi-turn only)


# "from" is a Python keyword, hence the functional form. "from" is "human" or "gpt".
ShareGptTurn = TypedDict("ShareGptTurn", {"from": str, "value": str})


class ShareGptRecord(TypedDict):
    """`instructions/{train,test}_sharegpt.jsonl`."""

    id: str
    task: str
    system: str
    conversations: list[ShareGptTurn]


class PreferencePair(TypedDict):
    """`preferences/pairs_{train,test}.jsonl`: the gold reward of `chosen` is above that of `rejected`."""

    id: str
    task: str
    category: str  # "helpfulness" | "safety" (the vault slice)
    kind: str  # what is wrong with `rejected`: wrong | rambling | rude | wrong_format | over_refusal | unsafe_compliance
    prompt: list[Message]  # system + user
    chosen: str
    rejected: str
    chosen_reward: float
    rejected_reward: float
    chosen_safety: float
    rejected_safety: float


class Ranking(TypedDict):
    """`preferences/rankings_{train,test}.jsonl`: K = 4 responses, best first (strictly falling gold reward)."""

    id: str
    task: str
    category: str
    prompt: list[Message]
    responses: list[str]
    kinds: list[str]  # "chosen" for the best, else the rejected kind
    rewards: list[float]


class MixedQualityRecord(TypedDict):
    """`mixed_quality/train.jsonl`: one prompt answered once by each source (C-RLFT)."""

    id: str
    prompt_id: str  # shared by the expert and the novice answer of one prompt
    task: str
    source: str  # "expert" | "novice"
    messages: list[Message]
    correct: bool


class VerifiablePrompt(TypedDict):
    """`verifiable/{train,test}.jsonl`: a prompt whose answer `check` can verify."""

    id: str
    task: str  # arithmetic | reverse | sort_letters | count_letter
    prompt: list[Message]
    answer: str
    reference: str  # a correct response following the final-answer convention


class ProbeRecord(TypedDict):
    """`probes/probes.jsonl`: responses to one preference prompt, for learning-dynamics tooling."""

    id: str
    pair_id: str
    task: str
    prompt: list[Message]
    responses: dict[str, str]  # see PROBE_KINDS in probes.py
    rewards: dict[str, float]  # gold reward of each response


class PageTruth(TypedDict):
    keep: bool
    reason: str  # ok | spam | keyword_stuffing | near_duplicate | exact_duplicate | too_short | non_english | blocklisted_domain
    lang: str  # en | zh | fr | de | ru
    duplicate_of: str  # url of the kept original ("" unless a duplicate)


class WebPage(TypedDict):
    """`web/pages.jsonl`: a web-like HTML page and the ground truth for cleaning it."""

    url: str
    html: str
    truth: PageTruth
