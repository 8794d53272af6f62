"""`split_digits`: every digit its own token, so a number tokenises the same way wherever it occurs."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from chatforge.errors import ConfigError
from chatforge.run_dir import RejectLog
from chatforge.tokenizer.train import TokenizerConfig, save_tokenizer, train_tokenizer

# Numbers repeated often enough that plain BPE merges digit pairs ("19", "198", ...).
CORPUS = "\n\n".join(
    f"Person {i} was born in 19{i % 100:02d} and paid {i * 37 % 1000} for {i * 12345 % 99999} items."
    for i in range(400)
)


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "numbers.txt"
    path.write_text(CORPUS + "\n", encoding="utf-8")
    loaded = {}
    for split, digit_space in ((False, False), (True, False), (True, True)):
        out = tmp_path_factory.mktemp(f"split{split}{digit_space}")
        cfg = TokenizerConfig(sources=[{"path": str(path)}], vocab_size=400, split_digits=split,
                              digit_space=digit_space, out=str(out))
        save_tokenizer(train_tokenizer(cfg, RejectLog(None)), out)
        loaded["space" if digit_space else split] = AutoTokenizer.from_pretrained(str(out))
    return loaded


def pieces(tok, text: str) -> list[str]:
    return [tok.decode([i]) for i in tok(text, add_special_tokens=False)["input_ids"]]


def test_plain_bpe_merges_digits_and_split_digits_does_not(tokenizers):
    text = "Person 7 was born in 1987 and paid 936 for 12345 items."
    plain = pieces(tokenizers[False], text)
    assert any(sum(c.isdigit() for c in p) > 1 for p in plain)  # the failure the option exists for
    split = pieces(tokenizers[True], text)
    digit_pieces = [p for p in split if any(c.isdigit() for c in p)]
    assert digit_pieces == list("7" "1987" "936" "12345")  # one token per digit, no space glued on


def test_split_digits_round_trips_and_is_saved(tokenizers):
    tok = tokenizers[True]
    for text in ("x = 3.14159, y=-2e10", " 0007  12\n3", "no numbers at all"):
        assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    # The same number inside different words tokenises to the same digit ids.
    a = tok("abc936", add_special_tokens=False)["input_ids"][-3:]
    b = tok("(936)", add_special_tokens=False)["input_ids"][1:4]
    assert a == b == [tok.convert_tokens_to_ids(d) for d in "936"]


def test_split_digits_is_a_bpe_option():
    with pytest.raises(ConfigError, match="split_digits is a bpe option"):
        train_tokenizer(TokenizerConfig(kind="wordpiece", split_digits=True), RejectLog(None))


def test_digit_space_makes_a_spaced_digit_one_token(tokenizers):
    tok = tokenizers["space"]
    # A spaced digit is one token, space included, as a spelled letter is; digits after the first of
    # an unspaced number stay bare, one token each; the space never stands alone before a digit.
    digit_pieces = [p for p in pieces(tok, "paid 4 0 8 for 1987") if any(c.isdigit() for c in p)]
    assert digit_pieces == [" 4", " 0", " 8", " 1", "9", "8", "7"]
    ids = tok(" 4 4", add_special_tokens=False)["input_ids"]
    assert len(ids) == 2 and ids[0] == ids[1]
    for text in ("x = 3.14159, y=-2e10", " 0007  12\n3", "1 2 3 4 5 6 7 8 9 0"):
        assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    # Without digit_space the space is its own token before every spaced digit.
    assert pieces(tokenizers[True], " 4 0") == [" ", "4", " ", "0"]


def test_digit_space_needs_split_digits():
    with pytest.raises(ConfigError, match="digit_space=true needs split_digits=true"):
        train_tokenizer(TokenizerConfig(digit_space=True), RejectLog(None))
