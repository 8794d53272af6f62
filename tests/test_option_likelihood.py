"""Multiple choice by option likelihood: each option's summed log-probability, computed by hand."""

from __future__ import annotations

import pytest
import torch

from chatforge.evaluation.mc_data import McQuestion
from chatforge.evaluation.option_likelihood import cloze_prompt, score_by_option_likelihood
from tiny_models import make_tiny_model


def question(text: str, answer: str, subject: str = "world_a", **options: str) -> McQuestion:
    return McQuestion(subject=subject, question=text, options=options, answer=answer, explanation="", where="t.csv:2")


Q1 = question("In which city does Ann Lee live?", "C", A="Ambervale", B="Dunmere", C="Juniper Falls", D="Rosmarket")
Q2 = question("What pet does Bo Yu have?", "A", A="cat", B="hamster", C="goldfish", D="parrot")
DEV = [question("What is Cy Ho's profession?", "B", A="baker", B="nurse", C="pilot", D="mechanic")]


def test_cloze_prompt_shows_exemplars_with_their_answer_text():
    assert cloze_prompt(Q1, DEV) == (
        "The following are questions about world a.\n\n"
        "What is Cy Ho's profession?\nAnswer: nurse\n\n"
        "In which city does Ann Lee live?\nAnswer:"
    )


def test_scores_equal_hand_computed_log_likelihoods_and_do_not_depend_on_batching(tiny_tokenizer):
    model = make_tiny_model(len(tiny_tokenizer)).eval()
    result = score_by_option_likelihood(model, tiny_tokenizer, [Q1, Q2], dev=DEV, shots=1, keep_predictions=True)
    bos = [tiny_tokenizer.bos_token_id] if tiny_tokenizer.bos_token_id is not None else []
    for q, prediction in zip([Q1, Q2], result["predictions"]):
        context = bos + tiny_tokenizer(cloze_prompt(q, DEV), add_special_tokens=False)["input_ids"]
        scores = []
        for letter in "ABCD":
            cont = tiny_tokenizer(" " + q.options[letter], add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=torch.tensor([context + cont])).logits[0], -1)
            scores.append(sum(logp[len(context) - 1 + j, t].item() for j, t in enumerate(cont)))
        expected = torch.softmax(torch.tensor(scores), -1).tolist()
        assert [prediction["probs"][x] for x in "ABCD"] == pytest.approx(expected, abs=1e-4)
        assert prediction["prediction"] == "ABCD"[max(range(4), key=scores.__getitem__)]
    one_by_one = score_by_option_likelihood(model, tiny_tokenizer, [Q1, Q2], dev=DEV, shots=1, batch_size=1)
    assert one_by_one["accuracy"] == result["accuracy"] and one_by_one["p_correct"] == pytest.approx(result["p_correct"])
    assert result["method"] == "option_likelihood" and 0 <= result["accuracy_norm"] <= 1


def test_long_prompts_drop_exemplars_to_fit(tiny_tokenizer):
    model = make_tiny_model(len(tiny_tokenizer)).eval()
    dev = DEV * 3 + [question("What pet does Di Wu have?", "A", A="cat", B="dog", C="eel", D="owl")]
    full = score_by_option_likelihood(model, tiny_tokenizer, [Q1], dev=dev, shots=4, max_length=10_000)
    tight = score_by_option_likelihood(model, tiny_tokenizer, [Q1], dev=dev, shots=4, max_length=60)
    assert full["fewer_shots"] == 0 and tight["fewer_shots"] == 1
