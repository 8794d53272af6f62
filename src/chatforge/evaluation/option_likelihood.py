"""Multiple choice by option likelihood (cloze form), for models too small to answer with a letter.

Letter-logit scoring (multiple_choice.py) needs a model that has learned the "A. … Answer: B" format;
a small base model has not, and predicts one letter for everything (accuracy = chance) even when it
knows the facts. The cloze form asks what the model believes instead: each option's text is scored as
the continuation of the question, and the most likely option is the prediction (lm-evaluation-harness
`acc`; `acc_norm` divides by the option's UTF-8 bytes so long options are not penalised).

    {question}
    Answer: {option text}        <- log p(" " + option text | prompt), summed over its tokens

Exemplars from the dev split are shown in the same form with their right answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from chatforge.data.padding import pad_sequences
from chatforge.errors import DataError
from chatforge.evaluation.mc_data import LETTERS, McQuestion
from chatforge.evaluation.multiple_choice import (
    ANSWER_PREFIX,
    HEADER,
    _exemplars_by_subject,
    _not_same,
    _summarise,
)


def cloze_prompt(question: McQuestion, exemplars: Sequence[McQuestion] = (), subject_name: str | None = None) -> str:
    name = subject_name if subject_name is not None else question.subject.replace("_", " ")
    blocks = [HEADER.format(subject=name).replace("multiple choice questions", "questions")] if name else []
    for exemplar in exemplars:
        if exemplar.answer is None:
            raise DataError(f"{exemplar.where}: a few-shot exemplar needs an answer (field 'answer' is empty)")
        blocks.append(f"{exemplar.question}\n{ANSWER_PREFIX} {exemplar.options[exemplar.answer]}")
    blocks.append(f"{question.question}\n{ANSWER_PREFIX}")
    return "\n\n".join(blocks)


def _encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Context and continuation ids, split from the joint encoding (as lm-evaluation-harness does):
    tokenizers that merge across the boundary (SentencePiece) would score other tokens otherwise."""
    ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    if whole[: len(ctx)] == ctx and len(whole) > len(ctx):
        return ctx, whole[len(ctx) :]
    return ctx, tokenizer(continuation, add_special_tokens=False)["input_ids"]


@torch.no_grad()
def _continuation_logprobs(model, pairs: list[tuple[list[int], list[int]]], batch_size: int, pad_id: int) -> list[float]:
    """Summed log-probability of each continuation given its context."""
    device = next(model.parameters()).device
    out = [0.0] * len(pairs)
    order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
    for begin in range(0, len(order), batch_size):
        rows = order[begin : begin + batch_size]
        input_ids, mask = pad_sequences([pairs[i][0] + pairs[i][1] for i in rows], pad_id)
        logprobs = torch.log_softmax(model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits.float(), -1)
        for r, i in enumerate(rows):
            context, continuation = pairs[i]
            positions = torch.arange(len(context) - 1, len(context) + len(continuation) - 1, device=logprobs.device)
            targets = torch.tensor(continuation, device=logprobs.device)
            out[i] = logprobs[r, positions, targets].sum().item()
    return out


def score_by_option_likelihood(
    model,
    tokenizer,
    questions: Sequence[McQuestion],
    dev: Mapping[str, Sequence[McQuestion]] | Sequence[McQuestion] | None = None,
    shots: int = 3,
    batch_size: int = 16,
    subject_name: str | None = None,
    max_length: int | None = None,
    *,
    add_bos: bool = True,
    keep_predictions: bool = False,
) -> dict:
    """Accuracy picking the option with the highest summed log-probability; also `accuracy_norm` (per byte).

    Same result keys as `score_multiple_choice`; `p_correct` is the softmax over the four options'
    summed log-probabilities at the right option.
    """
    if not questions:
        raise DataError("no multiple-choice questions to score")
    exemplars = _exemplars_by_subject(dev) if shots else {}
    bos = [tokenizer.bos_token_id] if add_bos and tokenizer.bos_token_id is not None else []
    if max_length is None:
        max_length = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    pairs, used, truncated = [], [], 0
    for question in questions:
        pool = [e for e in exemplars.get(question.subject, []) if _not_same(e, question)]
        if shots and not pool:
            raise DataError(f"{question.where}: no dev exemplars for subject {question.subject!r}; pass its dev rows or shots=0")
        k = min(shots, len(pool))
        while True:  # drop exemplars, last first, until the longest option fits
            prompt = cloze_prompt(question, pool[:k], subject_name)
            encoded = [_encode_pair(tokenizer, prompt, " " + question.options[x]) for x in LETTERS]
            longest = max(len(bos) + len(c) + len(o) for c, o in encoded)
            if max_length is None or longest <= max_length or k == 0:
                break
            k -= 1
        if max_length is not None and longest > max_length:
            truncated += 1  # cut the context from the left, keeping the question's end
            encoded = [(c[len(c) - (max_length - len(o) - len(bos)) :], o) for c, o in encoded]
        used.append(k)
        pairs.extend((bos + c, o) for c, o in encoded)
    pad_id = next(t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if t is not None)
    was_training = model.training
    model.eval()
    try:
        scores = torch.tensor(_continuation_logprobs(model, pairs, batch_size * len(LETTERS), pad_id)).view(-1, len(LETTERS))
    finally:
        model.train(was_training)
    nbytes = torch.tensor(
        [[len((" " + q.options[x]).encode("utf-8")) for x in LETTERS] for q in questions], dtype=torch.float32
    )
    predicted = [LETTERS[i] for i in scores.argmax(dim=-1).tolist()]
    result = _summarise(questions, predicted, torch.softmax(scores, -1), used, shots, truncated, keep_predictions)
    by_norm = [LETTERS[i] for i in (scores / nbytes).argmax(dim=-1).tolist()]
    answered = [(q, p) for q, p in zip(questions, by_norm) if q.answer is not None]
    result["accuracy_norm"] = sum(q.answer == p for q, p in answered) / len(answered) if answered else float("nan")
    result["method"] = "option_likelihood"
    return result
