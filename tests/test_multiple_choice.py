"""Few-shot multiple-choice evaluation: CSV layouts, exact prompts, letter tokens, letter-logit scoring."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from chatforge.errors import ChatforgeError, DataError
from chatforge.evaluation.multiple_choice import (
    LETTERS,
    McQuestion,
    build_prompt,
    find_letter_tokens,
    find_subject_files,
    read_mc_csv,
    score_multiple_choice,
)
from tiny_models import make_tiny_model

# --- CSV files ------------------------------------------------------------------------------------


def test_read_ceval_layout_with_explanation_and_multiline_cell(tmp_path):
    path = tmp_path / "dev" / "world_a_dev.csv"
    path.parent.mkdir()
    path.write_text(
        "\ufeffid,question,A,B,C,D,answer,explanation\n"
        '0,"What is 1+1?",2,3,4,5,A,One and one make two.\n'
        '1,"A question\nover two lines",x,y,z,w,D,\n'
        "2,Last one,p,q,r,s,B,because\n",
        encoding="utf-8",
    )
    rows = read_mc_csv(path)
    assert [r.question for r in rows] == ["What is 1+1?", "A question\nover two lines", "Last one"]
    assert rows[0] == McQuestion(
        subject="world_a",
        question="What is 1+1?",
        options={"A": "2", "B": "3", "C": "4", "D": "5"},
        answer="A",
        explanation="One and one make two.",
        where=f"{path}:2",
        id="0",
    )
    # `where` is the row's first line, also after a cell spanning two lines.
    assert [r.where for r in rows] == [f"{path}:2", f"{path}:3", f"{path}:5"]
    assert [r.answer for r in rows] == ["A", "D", "B"]


def test_read_ceval_test_split_without_answers(tmp_path):
    path = tmp_path / "law_test.csv"
    path.write_text("id,question,A,B,C,D,answer\n0,Q?,a,b,c,d,\n")
    (row,) = read_mc_csv(path)
    assert row.answer is None and row.subject == "law"


def test_read_mmlu_layout_without_header(tmp_path):
    path = tmp_path / "high_school_physics_test.csv"
    path.write_text('What is g?,9.8,10,"1,000",0,A\n"Pick ""B""",a,b,c,d,B\n')
    for layout in ("auto", "mmlu"):
        rows = read_mc_csv(path, layout=layout)
        assert [r.answer for r in rows] == ["A", "B"]
        assert rows[0].options == {"A": "9.8", "B": "10", "C": "1,000", "D": "0"}
        assert rows[1].question == 'Pick "B"'
        assert rows[0].subject == "high_school_physics" and rows[1].where == f"{path}:2"


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("id,question,A,B,C,D,answer\n0,Q?,a,b,c,d,A\n1,Q2?,a,b,c\n", 3, "field 'D' is missing"),
        ("id,question,A,B,C,D,answer\n0,Q?,a,b,c,d,E\n", 2, "field 'answer' is 'E'"),
        ("id,question,A,B,C,D,answer\n0,Q?,a,b,c,d,A\n1,  ,a,b,c,d,B\n", 3, "field 'question' is empty"),
        ("id,question,A,B,C,D,answer\n0,Q?,a,b,c,d,A,extra\n", 2, "row has 8 fields, expected 7"),
        ("id,question,A,B,C,answer\n0,Q?,a,b,c,A\n", 1, "header has no column 'D'"),
    ],
)
def test_ceval_errors_name_file_line_and_field(tmp_path, text, line, message):
    path = tmp_path / "bad_val.csv"
    path.write_text(text)
    with pytest.raises(DataError) as info:
        read_mc_csv(path)
    assert f"{path}:{line}: " in str(info.value) and message in str(info.value)


def test_mmlu_errors_name_file_line_and_field(tmp_path):
    path = tmp_path / "bad_test.csv"
    path.write_text("Q1?,a,b,c,d,A\nQ2?,a,b,c,d\n")
    with pytest.raises(DataError, match=r"bad_test.csv:2: field 'answer' is missing"):
        read_mc_csv(path)
    path.write_text("Q1?,a,b,c,d,a\n")
    with pytest.raises(DataError, match=r"bad_test.csv:1: field 'answer' is 'a'"):
        read_mc_csv(path)


def test_unreadable_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_mc_csv(tmp_path / "missing_test.csv")
    (tmp_path / "empty_test.csv").write_text("\n")
    with pytest.raises(DataError, match="empty file"):
        read_mc_csv(tmp_path / "empty_test.csv")
    (tmp_path / "latin_test.csv").write_bytes(b"Q\xe9?,a,b,c,d,A\n")
    with pytest.raises(DataError, match="not UTF-8"):
        read_mc_csv(tmp_path / "latin_test.csv")


def test_find_subject_files(tmp_path):
    for split in ("dev", "test"):
        (tmp_path / split).mkdir()
        for subject in ("world_b", "world_a"):
            (tmp_path / split / f"{subject}_{split}.csv").write_text("")
    (tmp_path / "test" / "notes.txt").write_text("")
    files = find_subject_files(tmp_path, "test")
    assert files == {s: tmp_path / "test" / f"{s}_test.csv" for s in ("world_a", "world_b")}
    assert list(files) == ["world_a", "world_b"]
    with pytest.raises(DataError, match=r"has no val/ folder \(folders: dev, test\)"):
        find_subject_files(tmp_path, "val")
    (tmp_path / "val").mkdir()
    with pytest.raises(DataError, match=r"holds no <subject>_val.csv files"):
        find_subject_files(tmp_path, "val")
    with pytest.raises(DataError, match="not found"):
        find_subject_files(tmp_path / "nowhere")


# --- prompts ---------------------------------------------------------------------------------------


def q(question, answer="A", subject="world_a", options=("w", "x", "y", "z")):
    return McQuestion(subject, question, dict(zip(LETTERS, options)), answer, where=f"mem:{question}")


def test_two_shot_prompt_text():
    dev = [q("What pet does Ann Lee have?", "B", options=("cat", "dog", "hamster", "goldfish")),
           q("In what year was Bo Yu born?", "D", options=("1970", "1971", "1972", "1973"))]
    test = q("Which company employs Cy Ro?", None, options=("Northwind Bakery", "Foxglove Studios", "Ironbridge Motors", "Greenleaf Clinic"))
    assert build_prompt(test, dev) == (
        "The following are multiple choice questions about world a.\n"
        "\n"
        "What pet does Ann Lee have?\n"
        "A. cat\n"
        "B. dog\n"
        "C. hamster\n"
        "D. goldfish\n"
        "Answer: B\n"
        "\n"
        "In what year was Bo Yu born?\n"
        "A. 1970\n"
        "B. 1971\n"
        "C. 1972\n"
        "D. 1973\n"
        "Answer: D\n"
        "\n"
        "Which company employs Cy Ro?\n"
        "A. Northwind Bakery\n"
        "B. Foxglove Studios\n"
        "C. Ironbridge Motors\n"
        "D. Greenleaf Clinic\n"
        "Answer:"
    )
    assert build_prompt(test, subject_name="").startswith("Which company employs Cy Ro?\nA. Northwind")
    assert build_prompt(test, subject_name="fictional people").startswith(
        "The following are multiple choice questions about fictional people.\n\nWhich company"
    )
    with pytest.raises(DataError, match="mem:Q: a few-shot exemplar needs an answer"):
        build_prompt(test, [q("Q", None)])


# --- letter tokens ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def letter_bpe_tokenizer():
    """A byte-level BPE trained here on answer lines, so " A".." D" are single tokens; no pad token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    lines = [f"Question {i}?\nA. a\nB. b\nC. c\nD. d\nAnswer: {LETTERS[i % 4]}\n" for i in range(200)]
    tok.train_from_iterator(lines, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")


def test_letter_tokens_single_space_letter_tokens(letter_bpe_tokenizer):
    tok = letter_bpe_tokenizer
    letters = find_letter_tokens(tok)
    assert letters.suffix == ()
    assert letters.ids == {x: tok.convert_tokens_to_ids(f"\u0120{x}") for x in LETTERS}  # Ġ = a space byte
    assert len(set(letters.ids.values())) == 4


def test_letter_tokens_after_a_lone_space_token(tiny_tokenizer):
    # The fixture's 384-token BPE has no " A" merge: "Answer: A" ends in "Ġ", "A". The space becomes part
    # of every prompt and the letter token itself is scored.
    tok = tiny_tokenizer
    assert tok.convert_ids_to_tokens(tok("Answer: A", add_special_tokens=False)["input_ids"])[-2:] == ["\u0120", "A"]
    letters = find_letter_tokens(tok)
    assert letters.suffix == (tok.convert_tokens_to_ids("\u0120"),)
    assert letters.ids == {x: tok.convert_tokens_to_ids(x) for x in LETTERS}


def _word_level(vocab):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


def test_letter_tokens_that_clash_or_merge_are_errors():
    clash = _word_level({"[UNK]": 0, "Answer:": 1, "A": 2, "B": 3})  # C and D are both [UNK]
    with pytest.raises(ChatforgeError, match=r"letters C and D map to the same token 0 \('\[UNK\]'\)"):
        find_letter_tokens(clash)
    merged = _word_level({"[UNK]": 0, "Answer:": 1})
    merged.backend_tokenizer.pre_tokenizer = None  # whole strings: "Answer: A" is one [UNK]
    with pytest.raises(ChatforgeError, match="joins 'Answer:' with the letter A"):
        find_letter_tokens(merged)


# --- scoring with chosen logits -------------------------------------------------------------------


class ChosenLogitsLM(torch.nn.Module):
    """A stand-in model whose letter logits the test chooses, so the expected scores are exact.

    Each row's real tokens (by attention_mask, which must be one contiguous run) are decoded; the test
    question is the first line of the prompt's last block, and `chosen[question]` gives the four letter
    logits at the row's last real position. Every other position holds NaN, so reading any other
    position, or padding that leaks into the prompt, spoils the result.
    """

    def __init__(self, tokenizer, chosen: dict[str, list[float]], max_position_embeddings: int = 4096):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives the scorer a device
        self.config = SimpleNamespace(max_position_embeddings=max_position_embeddings)
        self.tokenizer, self.chosen = tokenizer, chosen
        self.letter_ids = list(find_letter_tokens(tokenizer).ids.values())
        self.prompts: list[str] = []
        self.batch_widths: list[int] = []
        self.padded_rows = 0

    def forward(self, input_ids, attention_mask):
        batch, width = input_ids.shape
        self.batch_widths.append(width)
        logits = torch.full((batch, width, len(self.tokenizer)), math.nan)
        for row in range(batch):
            real = attention_mask[row].nonzero().flatten()
            assert real.tolist() == list(range(int(real[0]), int(real[-1]) + 1)), "real tokens not contiguous"
            self.padded_rows += len(real) < width
            text = self.tokenizer.decode(input_ids[row, real].tolist())
            self.prompts.append(text)
            question = text.rsplit("\n\n", 1)[-1].split("\n", 1)[0]
            logits[row, int(real[-1])] = 0.0
            logits[row, int(real[-1]), self.letter_ids] = torch.tensor(self.chosen[question])
        return SimpleNamespace(logits=logits)


class ChosenLogitsKeepLM(ChosenLogitsLM):
    """The same, computing logits only at the positions asked for (transformers' `logits_to_keep`)."""

    def forward(self, input_ids, attention_mask, logits_to_keep=0):
        logits = super().forward(input_ids, attention_mask).logits
        if isinstance(logits_to_keep, int):
            return SimpleNamespace(logits=logits[:, -logits_to_keep:] if logits_to_keep else logits)
        return SimpleNamespace(logits=logits[:, logits_to_keep])


def _questions_and_logits(n=10):
    """n questions of different lengths; the model is right on the first 7 and wrong on the rest."""
    questions, chosen, expected_p = [], {}, []
    for i in range(n):
        answer = LETTERS[i % 4]
        text = f"Question {i} " + "about something " * (i % 5) + "?"
        questions.append(q(text, answer, subject="world_a" if i % 2 else "world_b"))
        favourite = answer if i < 7 else LETTERS[(i + 1) % 4]
        letter_logits = [0.5 * j for j in range(4)]  # distinct values, so no ties
        letter_logits[LETTERS.index(favourite)] = 3.0 + i / 10
        chosen[text] = letter_logits
        z = sum(math.exp(v) for v in letter_logits)
        expected_p.append(math.exp(letter_logits[LETTERS.index(answer)]) / z)
    return questions, chosen, expected_p


DEV = [q("Dev one?", "C", "world_a"), q("Dev two is longer?", "A", "world_a"),
       q("Dev three?", "B", "world_b"), q("Dev four?", "D", "world_b")]


@pytest.mark.parametrize("model_class", [ChosenLogitsLM, ChosenLogitsKeepLM])
def test_scorer_picks_highest_letter_logit_whatever_the_batch_size(tiny_tokenizer, model_class):
    questions, chosen, expected_p = _questions_and_logits()
    results = []
    for batch_size in (1, 3, 16):
        model = model_class(tiny_tokenizer, chosen)
        result = score_multiple_choice(model, tiny_tokenizer, questions, dev=DEV, shots=2, batch_size=batch_size)
        assert (model.padded_rows > 0) == (batch_size > 1)
        results.append(result)
    assert results[0] == results[1] == results[2]
    result = results[0]
    assert (result["accuracy"], result["correct"], result["total"]) == (0.7, 7, 10)
    assert result["per_subject"] == {
        "world_a": {"accuracy": 0.6, "correct": 3, "total": 5},  # i = 1 3 5 7 9
        "world_b": {"accuracy": 0.8, "correct": 4, "total": 5},  # i = 0 2 4 6 8
    }
    # predicted letters: answers of 0..6 (A B C D A B C), then 7..9 predict A B C (answer + 1)
    assert result["letter_distribution"] == {"A": 3, "B": 3, "C": 3, "D": 1}
    assert result["chance"] == 0.25 and result["unanswered"] == 0
    assert result["p_correct"] == pytest.approx(sum(expected_p) / len(expected_p), abs=1e-6)
    assert (result["shots"], result["fewer_shots"], result["truncated"]) == (2, 0, 0)


def test_scorer_feeds_bos_plus_the_exact_prompt(tiny_tokenizer):
    questions, chosen, _ = _questions_and_logits(4)
    model = ChosenLogitsLM(tiny_tokenizer, chosen)
    by_subject = {"world_a": DEV[:2], "world_b": DEV[2:]}
    result = score_multiple_choice(model, tiny_tokenizer, questions, dev=by_subject, shots=2, keep_predictions=True)
    expected = {"<s>" + build_prompt(x, by_subject[x.subject]) + " " for x in questions}  # " ": the Ġ suffix
    assert set(model.prompts) == expected
    assert [p["prediction"] for p in result["predictions"]] == ["A", "B", "C", "D"]
    assert sum(result["predictions"][0]["probs"].values()) == pytest.approx(1.0)
    # dev as a flat list is grouped by subject: the same prompts
    model_list = ChosenLogitsLM(tiny_tokenizer, chosen)
    score_multiple_choice(model_list, tiny_tokenizer, questions, dev=DEV, shots=2)
    assert set(model_list.prompts) == expected


def test_pad_token_unset_is_left_alone(letter_bpe_tokenizer):
    tok = letter_bpe_tokenizer
    assert tok.pad_token is None
    questions, chosen, _ = _questions_and_logits()
    result = score_multiple_choice(ChosenLogitsLM(tok, chosen), tok, questions, dev=DEV, shots=1, batch_size=4)
    assert result["correct"] == 7 and tok.pad_token is None


def test_exemplars_are_dropped_until_the_prompt_fits(tiny_tokenizer):
    questions, chosen, _ = _questions_and_logits()

    def length(question, shots):
        exemplars = [d for d in DEV if d.subject == question.subject][:shots]
        return 1 + len(tiny_tokenizer(build_prompt(question, exemplars), add_special_tokens=False)["input_ids"]) + 1

    budget = max(length(x, 1) for x in questions)  # every prompt fits one exemplar, the long ones no more
    expected_fewer = sum(length(x, 2) > budget for x in questions)
    assert 0 < expected_fewer < len(questions)
    model = ChosenLogitsLM(tiny_tokenizer, chosen, max_position_embeddings=budget)  # the default max_length
    result = score_multiple_choice(model, tiny_tokenizer, questions, dev=DEV, shots=2, keep_predictions=True)
    assert result["fewer_shots"] == expected_fewer and result["truncated"] == 0
    assert result["correct"] == 7
    assert max(model.batch_widths) <= budget
    assert sorted(p["shots"] for p in result["predictions"]) == sorted(
        1 if length(x, 2) > budget else 2 for x in questions
    )


def test_question_is_never_its_own_exemplar(tiny_tokenizer):
    questions, chosen, _ = _questions_and_logits(2)
    model = ChosenLogitsLM(tiny_tokenizer, chosen)
    result = score_multiple_choice(model, tiny_tokenizer, questions, dev=questions + DEV, shots=1, keep_predictions=True)
    for prompt in model.prompts:
        question = prompt.rsplit("\n\n", 1)[-1].split("\n", 1)[0]
        assert prompt.count(question) == 1
    assert result["fewer_shots"] == 0


def test_scorer_input_errors(tiny_tokenizer):
    questions, chosen, _ = _questions_and_logits(2)
    model = ChosenLogitsLM(tiny_tokenizer, chosen)
    with pytest.raises(DataError, match="no dev exemplars for subject 'world_b'"):
        score_multiple_choice(model, tiny_tokenizer, questions, dev=DEV[:2], shots=1)
    with pytest.raises(DataError, match="no multiple-choice questions"):
        score_multiple_choice(model, tiny_tokenizer, [], dev=DEV)
    unanswered = [q("Question 0 ?", None, "world_b")]
    result = score_multiple_choice(model, tiny_tokenizer, unanswered, shots=0)
    assert result["total"] == 0 and result["unanswered"] == 1 and sum(result["letter_distribution"].values()) == 1


# --- end to end on the task world ------------------------------------------------------------------


@pytest.fixture(scope="module")
def world_ceval(tmp_path_factory):
    from chatforge.world import write_world

    root = tmp_path_factory.mktemp("world")
    write_world(root, size="tiny")
    return root / "ceval"


def test_task_world_end_to_end_with_a_tiny_llama(world_ceval, tiny_tokenizer):
    test_files = find_subject_files(world_ceval, "test")
    assert list(test_files) == ["world_a", "world_b"]
    questions = [row for path in test_files.values() for row in read_mc_csv(path)]
    dev = {subject: read_mc_csv(path) for subject, path in find_subject_files(world_ceval, "dev").items()}
    model = make_tiny_model(vocab_size=len(tiny_tokenizer), max_position_embeddings=1024)
    model.train()
    result = score_multiple_choice(model, tiny_tokenizer, questions, dev=dev, shots=5, batch_size=16)
    assert model.training  # mode restored
    assert 0.0 <= result["accuracy"] <= 1.0
    assert result["total"] == len(questions) == 250
    assert {s: r["total"] for s, r in result["per_subject"].items()} == {"world_a": 125, "world_b": 125}
    assert sum(result["letter_distribution"].values()) == len(questions)
    assert result["fewer_shots"] == 0 and result["truncated"] == 0


def test_tiny_llama_batches_agree_and_long_prompts_shrink(world_ceval, tiny_tokenizer):
    questions = read_mc_csv(world_ceval / "val" / "world_a_val.csv")
    dev = read_mc_csv(world_ceval / "dev" / "world_a_dev.csv")
    model = make_tiny_model(vocab_size=len(tiny_tokenizer), seed=3)  # max_position_embeddings=128
    runs = [
        score_multiple_choice(model, tiny_tokenizer, questions, dev=dev, batch_size=b, keep_predictions=True)
        for b in (1, 5)
    ]
    for one, batched in zip(runs[0]["predictions"], runs[1]["predictions"]):
        assert one["prediction"] == batched["prediction"] and one["shots"] == batched["shots"]
        assert list(one["probs"].values()) == pytest.approx(list(batched["probs"].values()), abs=1e-5)
    # 5-shot prompts are ~480 tokens for this tokenizer: none fits in 128
    assert runs[0]["fewer_shots"] == len(questions)
    tight = score_multiple_choice(model, tiny_tokenizer, questions, dev=dev, max_length=12)
    assert tight["truncated"] == tight["total"] == len(questions)
