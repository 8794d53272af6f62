"""Left truncation of a pair or ranking cuts the same prompt prefix from every answer, or rejects the group."""

from __future__ import annotations

from chatforge.data.shared_truncation import shared_left_cut, shared_prompt_tokens

PROMPT = [1, 2, 3, 4, 5, 6]  # six prompt tokens both answers share


def test_the_longer_answer_sets_one_cut_for_both():
    chosen, rejected = PROMPT + [10, 11, 12], PROMPT + [20]  # 9 and 7 tokens
    cut = shared_left_cut([chosen, rejected], prompt_tokens=6, max_length=6)
    assert cut == 3  # 9 - 6: the same 3 prompt tokens go from both
    assert chosen[cut:] == [4, 5, 6, 10, 11, 12] and rejected[cut:] == [4, 5, 6, 20]


def test_nothing_is_cut_when_everything_fits():
    assert shared_left_cut([PROMPT + [10], PROMPT + [20, 21]], prompt_tokens=6, max_length=8) == 0


def test_a_cut_reaching_into_an_answer_rejects_the_group():
    # 6 prompt + 4 answer tokens in 3 positions: even without the prompt the answer does not fit
    assert shared_left_cut([PROMPT + [10, 11, 12, 13], PROMPT + [20]], prompt_tokens=6, max_length=3) is None
    # exactly the whole prompt cut: the answer fits, conditioned on nothing before it
    assert shared_left_cut([PROMPT + [10, 11, 12, 13], PROMPT + [20]], prompt_tokens=6, max_length=4) == 6


def test_the_shared_prompt_stops_where_rows_differ_or_an_answer_starts():
    rows = [[1, 2, 3, 9, 9], [1, 2, 3, 9, 8], [1, 2, 7, 9]]
    assert shared_prompt_tokens(rows, answer_starts=[4, 4, 4]) == 2
    assert shared_prompt_tokens(rows[:2], answer_starts=[3, 3]) == 3


# -- wired into the DPO and reward-model data ---------------------------------------------------

LONG_PROMPT = "Tell me about the history of the city and its rivers, " * 3


def _full(tokenizer, prompt: str, answer: str) -> list[int]:
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
    return list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False))


def test_dpo_left_truncation_cuts_the_same_prompt_prefix_from_both_answers(tiny_tokenizer):
    from chatforge.dpo.data import Pair, encode_pairs
    from chatforge.losses.lm import IGNORE_INDEX
    from chatforge.run_dir import RejectLog

    chosen, rejected = "Two.", "It is two, and here is a much longer answer about it."
    full_c, full_r = _full(tiny_tokenizer, LONG_PROMPT, chosen), _full(tiny_tokenizer, LONG_PROMPT, rejected)
    max_length = len(full_r) - 10  # the longer side is 10 tokens over
    pair = Pair([{"role": "user", "content": LONG_PROMPT}], chosen, rejected, "pairs.jsonl", "line 1", {})
    rejects = RejectLog(None)
    (enc,) = encode_pairs(tiny_tokenizer, iter([pair]), rejects, max_length, truncation="left")
    assert len(enc.rejected_ids) == max_length
    # both lost the same 10 prompt tokens: what is left of each is the whole conversation's tail
    assert enc.chosen_ids == full_c[10:] and enc.rejected_ids == full_r[10:]
    # every answer token is still scored
    answer_c = [t for t in enc.chosen_labels if t != IGNORE_INDEX]
    assert len(answer_c) == len([t for t in encode_pairs(tiny_tokenizer, iter([pair]), rejects, 10_000, "left")[0].chosen_labels
                                 if t != IGNORE_INDEX])
    assert rejects.total == 0


def test_dpo_pair_whose_answer_does_not_fit_is_rejected_not_cut(tiny_tokenizer):
    from chatforge.dpo.data import Pair, encode_pairs
    from chatforge.run_dir import RejectLog

    long_answer = "word " * 80
    pair = Pair([{"role": "user", "content": "Hi"}], "Short.", long_answer, "pairs.jsonl", "line 3", {})
    rejects = RejectLog(None)
    assert encode_pairs(tiny_tokenizer, iter([pair]), rejects, 40, truncation="left") == []
    assert rejects.counts == {"too_long": 1}


def test_rm_left_truncation_cuts_the_same_prompt_prefix_from_every_response(tiny_tokenizer):
    from chatforge.rm.data import Group, encode_groups
    from chatforge.run_dir import RejectLog

    responses = ["Two.", "It is two, and here is a much longer answer about it.", "Three, I think."]
    prompt = [{"role": "user", "content": LONG_PROMPT}]
    full = [_full(tiny_tokenizer, LONG_PROMPT, r) for r in responses]
    max_length = max(len(f) for f in full) - 7
    group = Group(prompt, list(responses), [0, 1, 2], None, "rankings.jsonl", "line 1", is_pair=False)
    rejects = RejectLog(None)
    (kept,), _ = encode_groups([group], tiny_tokenizer, max_length, "left", rejects)
    assert kept.input_ids == [f[7:] for f in full]  # the same 7 prompt tokens off each

    too_long = Group([{"role": "user", "content": "Hi"}], ["Short.", "word " * 80], [0, 1], None, "r.jsonl", "line 2")
    assert encode_groups([too_long], tiny_tokenizer, 40, "left", rejects)[0] == []
    assert rejects.counts == {"too_long": 1}


# -- rankings ---------------------------------------------------------------------------------------

def test_rankings_refuse_garbage_ranks():
    import pytest

    from chatforge.data.parsers import parse_ranking
    from chatforge.data.records import RecordError

    def reason(ranks, responses=("a", "b")) -> str:
        with pytest.raises(RecordError) as info:
            parse_ranking({"prompt": "q", "responses": list(responses), "ranks": ranks})
        return f"{info.value.reason}: {info.value.detail}"

    assert reason([True, False]).startswith("bad_field: field 'ranks' must be one integer per response")
    assert reason([-5, 1e30]).startswith("bad_field")
    assert reason([-5, 1]) == "bad_field: field 'ranks' is [-5, 1]; ranks of 2 responses are 0 (best) to 1"
    assert reason([0, 2]).startswith("bad_field: field 'ranks' is [0, 2]")
    assert reason([0, 1], ("same", "same")) == "identical_responses: responses 0 and 1 are the same text ranked 0 and 1"
    with pytest.raises(RecordError, match="identical_responses"):
        parse_ranking({"prompt": "q", "responses": ["same", "b", "same"]})  # best-first order ranks them 0 and 2
    # ties and any order of valid ranks are fine
    assert parse_ranking({"prompt": "q", "responses": ["a", "b", "c"], "ranks": [1, 0, 1]}).ranks == [1, 0, 1]
    assert parse_ranking({"prompt": "q", "responses": ["x", "x", "y"], "ranks": [0, 0, 1]}).ranks == [0, 0, 1]
