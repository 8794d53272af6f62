"""Few-shot multiple-choice evaluation by option-letter logits (C-Eval / MMLU style).

A base model cannot be asked to "choose"; instead the prompt shows k solved exemplars from the
subject's dev split and ends the test question with "Answer:", so the natural next token is a letter.
The prediction is the letter whose token has the highest next-token logit; nothing is generated.

    The following are multiple choice questions about world a.

    What pet does Ann Lee have?
    A. cat
    B. dog
    C. hamster
    D. goldfish
    Answer: B

    ...(k exemplars)...

    In which city does Bo Yu live?
    A. Ambervale
    ...
    Answer:

    rows = read_mc_csv("data/world/ceval/test/world_a_test.csv")
    dev = read_mc_csv("data/world/ceval/dev/world_a_dev.csv")
    result = score_multiple_choice(model, tokenizer, rows, dev=dev, shots=5)
    result["accuracy"], result["per_subject"]["world_a"]
"""

from __future__ import annotations

import inspect
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from chatforge.data.padding import pad_sequences
from chatforge.errors import ChatforgeError, DataError
from chatforge.evaluation.mc_data import LETTERS, McQuestion, find_subject_files, read_mc_csv

__all__ = [
    "ANSWER_PREFIX",
    "LETTERS",
    "LetterTokens",
    "McQuestion",
    "build_prompt",
    "find_letter_tokens",
    "find_subject_files",
    "read_mc_csv",
    "score_multiple_choice",
]

ANSWER_PREFIX = "Answer:"
HEADER = "The following are multiple choice questions about {subject}."


def format_question(question: McQuestion, answer: str | None = None) -> str:
    """The question, its options one per line, and "Answer:" (followed by " X" for an exemplar)."""
    lines = [question.question, *(f"{letter}. {question.options[letter]}" for letter in LETTERS)]
    lines.append(f"{ANSWER_PREFIX} {answer}" if answer else ANSWER_PREFIX)
    return "\n".join(lines)


def build_prompt(
    question: McQuestion, exemplars: Sequence[McQuestion] = (), subject_name: str | None = None
) -> str:
    """Header line, solved exemplars and the test question, blocks separated by a blank line.

    The header names `subject_name`, or the question's subject with underscores as spaces; an empty
    name (`subject_name=""`, or a question without subject) leaves the header out. The prompt ends
    with "Answer:" and no space.
    """
    name = subject_name if subject_name is not None else question.subject.replace("_", " ")
    blocks = [HEADER.format(subject=name)] if name else []
    for exemplar in exemplars:
        if exemplar.answer is None:
            raise DataError(f"{exemplar.where}: a few-shot exemplar needs an answer (field 'answer' is empty)")
        blocks.append(format_question(exemplar, exemplar.answer))
    blocks.append(format_question(question))
    return "\n\n".join(blocks)


@dataclass(frozen=True)
class LetterTokens:
    """How the letters continue a prompt ending in "Answer:".

    `suffix` holds tokens every "Answer: X" shares after "Answer:" (a lone space token for a tokenizer
    without " A"-style tokens); they are appended to each prompt so that the next token is the letter.
    """

    suffix: tuple[int, ...]
    ids: dict[str, int]  # letter -> token id, in LETTERS order


def find_letter_tokens(tokenizer) -> LetterTokens:
    """The token each letter starts with after "Answer:", from tokenizing "Answer: X" vs "Answer:"."""

    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    base = encode(ANSWER_PREFIX)
    tails = {}
    for letter in LETTERS:
        full = encode(f"{ANSWER_PREFIX} {letter}")
        if full[: len(base)] != base:
            raise ChatforgeError(
                f"the tokenizer joins {ANSWER_PREFIX!r} with the letter {letter} "
                f"({tokenizer.convert_ids_to_tokens(full)} vs {tokenizer.convert_ids_to_tokens(base)}), "
                "so no single next token stands for the letter"
            )
        tails[letter] = full[len(base) :]
    shared = 0  # tokens all four continuations start with
    while all(len(t) > shared for t in tails.values()) and len({t[shared] for t in tails.values()}) == 1:
        shared += 1
    ids = {}
    for letter, tail in tails.items():
        if len(tail) <= shared:
            raise ChatforgeError(f"the tokenizer gives the letter {letter} no token of its own after {ANSWER_PREFIX!r}")
        ids[letter] = tail[shared]
    by_id: dict[int, list[str]] = {}
    for letter, token in ids.items():
        by_id.setdefault(token, []).append(letter)
    clashes = [letters for letters in by_id.values() if len(letters) > 1]
    if clashes:
        token = ids[clashes[0][0]]
        raise ChatforgeError(
            f"letters {' and '.join(clashes[0])} map to the same token {token} "
            f"({tokenizer.convert_ids_to_tokens([token])[0]!r}) after {ANSWER_PREFIX!r}; "
            "letter-logit scoring cannot tell them apart"
        )
    return LetterTokens(suffix=tuple(tails[LETTERS[0]][:shared]), ids=ids)


def _exemplars_by_subject(
    dev: Mapping[str, Sequence[McQuestion]] | Sequence[McQuestion] | None,
) -> dict[str, list[McQuestion]]:
    if dev is None:
        return {}
    if isinstance(dev, Mapping):
        return {subject: list(rows) for subject, rows in dev.items()}
    grouped: dict[str, list[McQuestion]] = {}
    for row in dev:
        grouped.setdefault(row.subject, []).append(row)
    return grouped


def _encode_prompts(tokenizer, questions, exemplars, shots, max_length, subject_name, add_bos, letters):
    """Token ids per question, dropping exemplars (last first) until the prompt fits in max_length.

    Returns (ids per question, shots used per question, number cut from the left because even the
    zero-shot prompt was too long).
    """
    bos = [tokenizer.bos_token_id] if add_bos and tokenizer.bos_token_id is not None else []
    encoded, used, truncated = [], [], 0
    for question in questions:
        pool = [e for e in exemplars.get(question.subject, []) if _not_same(e, question)]
        if shots and not pool:
            raise DataError(
                f"{question.where}: no dev exemplars for subject {question.subject!r} "
                f"(dev has: {', '.join(exemplars) or 'nothing'}); pass its dev rows or shots=0"
            )
        k = min(shots, len(pool))
        while True:
            text = build_prompt(question, pool[:k], subject_name)
            ids = bos + tokenizer(text, add_special_tokens=False)["input_ids"] + list(letters.suffix)
            if max_length is None or len(ids) <= max_length or k == 0:
                break
            k -= 1
        if max_length is not None and len(ids) > max_length:
            ids = ids[-max_length:]  # keep the end: the question and "Answer:"
            truncated += 1
        encoded.append(ids)
        used.append(k)
    return encoded, used, truncated


def _not_same(exemplar: McQuestion, question: McQuestion) -> bool:
    """Never show a question as its own exemplar (when scoring the dev split itself)."""
    return (exemplar.question, exemplar.options) != (question.question, question.options)


def _takes_logits_to_keep(model) -> bool:
    """Whether forward() can compute logits at chosen positions only (transformers >= 4.50 models)."""
    return "logits_to_keep" in inspect.signature(model.forward).parameters


@torch.no_grad()
def _letter_logits(model, encoded, letter_ids, batch_size, pad_id) -> torch.Tensor:
    """[N, 4] next-token logits of the letters after each prompt, in the order of `encoded`."""
    device = next(model.parameters()).device
    keep_some = _takes_logits_to_keep(model)
    index = torch.tensor(letter_ids, device=device)
    out = torch.empty(len(encoded), len(letter_ids), dtype=torch.float32)
    # Longest first: similar lengths share a batch, and an out-of-memory error shows up at once.
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    for begin in range(0, len(order), batch_size):
        rows = order[begin : begin + batch_size]
        # Right padding: a causal model never lets a real token see the pads after it, so every
        # prompt keeps the positions and context it has alone, whatever the model's position scheme.
        input_ids, mask = pad_sequences([encoded[i] for i in rows], pad_id)
        last = torch.tensor([len(encoded[i]) - 1 for i in rows])  # each row's last real token
        kwargs = {"input_ids": input_ids.to(device), "attention_mask": mask.to(device)}
        if keep_some:
            # Logits only at the rows' last positions: B x V per kept position instead of T x V.
            kept, last = torch.unique(last, return_inverse=True)
            kwargs["logits_to_keep"] = kept.to(device)
        logits = model(**kwargs).logits  # [B, T or kept, V]
        if logits.shape[-1] <= max(letter_ids):
            raise ChatforgeError(
                f"letter token id {max(letter_ids)} is outside the model's {logits.shape[-1]} logits: "
                "tokenizer and model do not match"
            )
        at_last = logits[torch.arange(len(rows), device=logits.device), last.to(logits.device)]  # [B, V]
        out[rows] = at_last.index_select(-1, index).float().cpu()
    return out


def score_multiple_choice(
    model,
    tokenizer,
    questions: Sequence[McQuestion],
    dev: Mapping[str, Sequence[McQuestion]] | Sequence[McQuestion] | None = None,
    shots: int = 5,
    batch_size: int = 16,
    max_length: int | None = None,
    subject_name: str | None = None,
    *,
    add_bos: bool = True,
    keep_predictions: bool = False,
) -> dict:
    """Few-shot accuracy of `model` on `questions`, predicting the letter with the highest logit.

    dev: exemplars, {subject: rows} or a list (grouped by each row's subject); the first `shots` rows of
        the question's subject are used, in order. `shots=0` needs none.
    max_length: prompt budget in tokens (default `model.config.max_position_embeddings`, no limit when
        the model has none); exemplars are dropped, last first, until the prompt fits, and a prompt too
        long even without exemplars is cut from the left.
    subject_name: the header's subject for every question (default: each question's subject with
        underscores as spaces; "" = no header).
    add_bos: start each prompt with the tokenizer's bos token, as chatforge pretraining starts documents.
    keep_predictions: also return "predictions", one dict per question (where, subject, answer,
        prediction, probs = softmax over the four letter logits).

    Returns accuracy/correct/total over questions with an answer (questions without one are predicted
    and counted in "unanswered"), per_subject, chance, letter_distribution (predicted letters),
    p_correct (mean softmax probability of the right letter), shots, fewer_shots (questions whose
    prompt had fewer than `shots` exemplars) and truncated.
    """
    if not questions:
        raise DataError("no multiple-choice questions to score")
    if shots < 0 or batch_size < 1:
        raise ValueError(f"shots must be >= 0 and batch_size >= 1 (got {shots}, {batch_size})")
    if max_length is None:
        max_length = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    letters = find_letter_tokens(tokenizer)
    exemplars = _exemplars_by_subject(dev) if shots else {}
    encoded, used, truncated = _encode_prompts(
        tokenizer, questions, exemplars, shots, max_length, subject_name, add_bos, letters
    )
    # The pad id only fills masked positions; the tokenizer itself is never changed.
    pad_id = next(t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if t is not None)
    was_training = model.training
    model.eval()
    try:
        logits = _letter_logits(model, encoded, [letters.ids[x] for x in LETTERS], batch_size, pad_id)
    finally:
        model.train(was_training)
    probs = torch.softmax(logits, dim=-1)
    predicted = [LETTERS[i] for i in logits.argmax(dim=-1).tolist()]  # ties go to the earlier letter
    return _summarise(questions, predicted, probs, used, shots, truncated, keep_predictions)


def _summarise(questions, predicted, probs, used, shots, truncated, keep_predictions) -> dict:
    per_subject: dict[str, dict] = {}
    p_correct = []
    for question, prediction, p in zip(questions, predicted, probs.tolist()):
        if question.answer is None:
            continue
        stats = per_subject.setdefault(question.subject, {"accuracy": 0.0, "correct": 0, "total": 0})
        stats["correct"] += prediction == question.answer
        stats["total"] += 1
        p_correct.append(p[LETTERS.index(question.answer)])
    for stats in per_subject.values():
        stats["accuracy"] = stats["correct"] / stats["total"]
    correct = sum(s["correct"] for s in per_subject.values())
    total = sum(s["total"] for s in per_subject.values())
    counts = Counter(predicted)
    result = {
        "accuracy": correct / total if total else math.nan,
        "correct": correct,
        "total": total,
        "unanswered": len(questions) - total,
        "per_subject": dict(sorted(per_subject.items())),
        "chance": 1 / len(LETTERS),
        "letter_distribution": {letter: counts[letter] for letter in LETTERS},
        "p_correct": sum(p_correct) / len(p_correct) if p_correct else math.nan,
        "shots": shots,
        "fewer_shots": sum(k < shots for k in used),
        "truncated": truncated,
    }
    if keep_predictions:
        result["predictions"] = [
            {
                "where": q.where,
                "subject": q.subject,
                "answer": q.answer,
                "prediction": pred,
                "shots": k,
                "probs": dict(zip(LETTERS, p)),
            }
            for q, pred, k, p in zip(questions, predicted, used, probs.tolist())
        ]
    return result
