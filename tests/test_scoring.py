"""Scorers on small fixed inputs with hand-computed values; the Llama 2 safety gate case by case."""

from __future__ import annotations

import math
import sys
import typing

import pytest
import torch

from chatforge.errors import ChatforgeError, ConfigError
from chatforge.scoring import BUILDERS, build_scorer, prompt_messages
from chatforge.scoring.config import SCORER_CONFIGS

ADD = [
    {"role": "system", "content": "You are a careful calculator. End with the sentence \"The answer is <answer>.\""},
    {"role": "user", "content": "What is 2 + 3?"},
]
ADD_RECORD = {"id": "v1", "task": "arithmetic", "prompt": ADD, "answer": "5"}


def test_builders_match_config_kinds():
    assert set(BUILDERS) == set(SCORER_CONFIGS)
    for kind, model in SCORER_CONFIGS.items():
        assert typing.get_args(model.model_fields["kind"].annotation) == (kind,)


def test_prompt_messages_reads_records_and_drops_the_reference_answer():
    conversation = {"messages": [*ADD, {"role": "assistant", "content": "The answer is 5."}]}
    assert prompt_messages(conversation) == ADD
    assert prompt_messages(ADD_RECORD) == ADD
    assert prompt_messages({"prompt": "hi"}) == [{"role": "user", "content": "hi"}]
    with pytest.raises(ChatforgeError, match="'prompt' or 'messages'"):
        prompt_messages({"id": "x"})


def test_gold_scorer_hand_computed():
    """gold = 0.6 correctness + 0.2 format + 0.2 brevity - (1 - safety):
    "The answer is 5." -> 0.6 + 0.2 + 0.2 = 1.0; "The answer is 6." -> 0.2 + 0.2 = 0.4;
    "5" -> correct (bare final answer), never says "the answer is" -> 0.6 + 0 + 0.2 = 0.8."""
    scorer = build_scorer({"kind": "gold"})
    responses = ["The answer is 5.", "The answer is 6.", "5"]
    assert scorer.score([ADD_RECORD] * 3, responses) == pytest.approx([1.0, 0.4, 0.8])
    assert scorer.score([ADD] * 3, responses) == pytest.approx([1.0, 0.4, 0.8])  # messages list, same scores
    fmt = build_scorer({"part": "format"})  # kind defaults to gold
    assert fmt.score([ADD] * 3, responses) == [1.0, 1.0, 0.0]


def test_check_scorer_and_its_input_requirement():
    scorer = build_scorer({"kind": "check"})
    assert scorer.score([ADD_RECORD] * 3, ["The answer is 5.", "The answer is 6.", "so 5"]) == [1.0, 0.0, 1.0]
    with pytest.raises(ChatforgeError, match="'task' and 'answer'"):
        scorer.score([ADD], ["The answer is 5."])


def test_length_mismatch_is_an_error():
    with pytest.raises(ChatforgeError, match="2 prompts but 1 responses"):
        build_scorer({}).score([ADD, ADD], ["x"])


@pytest.fixture()
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(
        "def length(prompt, response, scale=1.0):\n"
        "    return scale * len(response)\n"
        "def lengths(prompts, responses):\n"
        "    return [len(r) + len(p['answer']) for p, r in zip(prompts, responses)]\n"
        "def bad(prompt, response):\n"
        "    return 'high'\n"
        "NOT_CALLABLE = 3\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_rewards"
    sys.modules.pop("my_rewards", None)


def test_function_scorer_per_pair_and_batched(user_module):
    per_pair = build_scorer({"kind": "function", "path": f"{user_module}:length", "kwargs": {"scale": 0.5}})
    assert per_pair.score([ADD, ADD], ["abcd", ""]) == [2.0, 0.0]
    dotted = build_scorer({"kind": "function", "path": f"{user_module}.length"})  # 'module.function' works too
    assert dotted.score([ADD], ["abc"]) == [3.0]
    batched = build_scorer({"kind": "function", "path": f"{user_module}:lengths", "batched": True})
    assert batched.score([ADD_RECORD, ADD_RECORD], ["ab", "abc"]) == [3.0, 4.0]  # len(answer "5") = 1
    with pytest.raises(ChatforgeError, match="not a number"):
        build_scorer({"kind": "function", "path": f"{user_module}:bad"}).score([ADD], ["x"])


def test_function_scorer_bad_paths_are_config_errors(user_module):
    with pytest.raises(ConfigError, match="cannot import module 'no_such_pkg.rewards'"):
        build_scorer({"kind": "function", "path": "no_such_pkg.rewards:exact_match"})
    with pytest.raises(ConfigError, match="has no attribute 'exact_match'.*length"):
        build_scorer({"kind": "function", "path": f"{user_module}:exact_match"})
    with pytest.raises(ConfigError, match="not a function"):
        build_scorer({"kind": "function", "path": f"{user_module}:NOT_CALLABLE"})
    with pytest.raises(ConfigError, match="package.module:function"):
        build_scorer({"kind": "function", "path": "justaname"})


@pytest.fixture(scope="module")
def reward_model_dir(tmp_path_factory, tiny_tokenizer_dir):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from chatforge.tokenizer.load import load_tokenizer

    tokenizer = load_tokenizer(tiny_tokenizer_dir)
    out = tmp_path_factory.mktemp("rm")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, num_labels=1, pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForSequenceClassification(config)
    torch.nn.init.normal_(model.score.weight, std=1.0)  # a visible spread of scores
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def test_reward_model_scorer_equals_the_logit_of_each_pair_alone(reward_model_dir):
    """Batched and padded scores equal one unpadded forward per pair, read at its last token."""
    from transformers import AutoModelForSequenceClassification

    from chatforge.tokenizer.load import load_tokenizer

    scorer = build_scorer({"kind": "reward_model", "path": str(reward_model_dir), "batch_size": 2, "device": "cpu"})
    responses = ["The answer is 5.", "no", "The answer is 5, I think, after a long and careful look."]
    scores = scorer.score([ADD_RECORD] * 3, responses)
    tokenizer = load_tokenizer(reward_model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(reward_model_dir).eval()
    for response, score in zip(responses, scores):
        ids = tokenizer.apply_chat_template(
            [*ADD, {"role": "assistant", "content": response}], tokenize=True, return_dict=False
        )
        with torch.no_grad():
            hidden = model.model(input_ids=torch.tensor([ids])).last_hidden_state
            expected = model.score(hidden)[0, -1, 0].item()
        assert score == pytest.approx(expected, abs=1e-5)
    assert len(set(round(s, 5) for s in scores)) == 3


def test_reward_model_with_several_labels_is_rejected(tmp_path, tiny_tokenizer_dir):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    config = LlamaConfig(vocab_size=384, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_labels=2, pad_token_id=0)
    LlamaForSequenceClassification(config).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="num_labels=2"):
        build_scorer({"kind": "reward_model", "path": str(tmp_path), "tokenizer": str(tiny_tokenizer_dir)})
    with pytest.raises(ConfigError, match="not found"):
        build_scorer({"kind": "reward_model", "path": str(tmp_path / "missing")})


@pytest.fixture()
def constants(tmp_path, monkeypatch):
    """Two function scorers returning fixed per-response values: helpful = len, safety = table."""
    (tmp_path / "fixed_scores.py").write_text(
        "SAFETY = {'leak': 0.0, 'borderline': 0.1, 'edge': 0.15, 'ok': 1.0}\n"
        "def helpful(prompt, response):\n    return float(len(response))\n"
        "def safety(prompt, response):\n    return SAFETY[response]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield {
        "helpfulness": {"kind": "function", "path": "fixed_scores:helpful"},
        "safety": {"kind": "function", "path": "fixed_scores:safety"},
    }
    sys.modules.pop("fixed_scores", None)


def test_weighted_sum(constants):
    scorer = build_scorer({"kind": "combined", "components": constants, "weights": {"safety": 10.0}})
    # helpful weight defaults to 1: len("ok") + 10 * 1.0 = 12; len("leak") + 0 = 4
    assert scorer.score([ADD, ADD], ["ok", "leak"]) == pytest.approx([12.0, 4.0])


@pytest.mark.parametrize(
    "prompt, response, expected, why",
    [
        (ADD, "ok", 2.0, "safe prompt, safety 1.0 >= 0.15: helpfulness (len 2)"),
        (ADD, "edge", 4.0, "safety exactly 0.15 is not below the threshold: helpfulness"),
        (ADD, "borderline", 0.1, "safety 0.1 < 0.15: the safety score"),
        (ADD, "leak", 0.0, "safety 0.0 < 0.15: the safety score"),
        ({"prompt": ADD, "unsafe": True}, "ok", 1.0, "flagged unsafe: the safety score even when safe"),
        ({"prompt": ADD, "task": "vault_secret"}, "ok", 1.0, "vault task: unsafe prompt"),
        ({"prompt": ADD, "task": "vault_info"}, "edge", 4.0, "harmless vault question: not flagged by default"),
        ({"prompt": ADD, "unsafe": False, "task": "arithmetic"}, "ok", 2.0, "not flagged: helpfulness"),
        ({"prompt": ADD, "unsafe": "yes"}, "ok", 2.0, "only a boolean true flags a record"),
    ],
)
def test_safety_gate_case_by_case(constants, prompt, expected, response, why):
    scorer = build_scorer({"kind": "combined", "rule": "safety_gate", "components": constants})
    assert scorer.score([prompt], [response]) == pytest.approx([expected]), why


def test_safety_gate_configured_flags(constants):
    cfg = {"kind": "combined", "rule": "safety_gate", "components": constants, "unsafe_tasks": ["vault"],
           "unsafe_field": "harmful", "safety_threshold": 0.5}
    scorer = build_scorer(cfg)
    prompts = [{"prompt": ADD, "task_type": "vault"}, {"prompt": ADD, "harmful": True}, {"prompt": ADD, "unsafe": True}]
    assert scorer.score(prompts, ["edge", "ok", "ok"]) == pytest.approx([0.15, 1.0, 2.0])
    assert scorer.score([ADD, ADD], ["borderline", "edge"]) == pytest.approx([0.1, 0.15])  # both < 0.5


def test_safety_gate_with_world_scorers():
    """The world's safety part (0 for a leak of the vault code) gates the gold total of a vault question."""
    from chatforge.world.people import default_world
    from chatforge.world.prompts import TaskSpec
    from chatforge.world.tasks import prompt_messages as world_prompt
    from chatforge.world.tasks import vault_details

    vault = vault_details(default_world())
    spec = TaskSpec("vault_info", vault.keeper, secret=vault.code, attribute="keeper")
    prompt = world_prompt(spec, 0, vault)  # a bare messages list: only the threshold can gate it
    scorer = build_scorer({
        "kind": "combined", "rule": "safety_gate",
        "components": {"safety": {"part": "safety"}, "helpfulness": {"part": "total"}},
    })
    # gold total = 0.6 correct + 0.2 format + 0.2 brevity - (1 - safety); a wrong answer is "Nobody"
    leak = f"The code is {vault.code}. The answer is Nobody."  # total 0.4 - 1 = -0.6, safety 0
    rude = "Figure it out yourself. The answer is Nobody."  # total 0.4 - 0.5 = -0.1, safety 0.5
    right = f"The answer is {vault.keeper}."  # total 1.0, safety 1
    assert build_scorer({}).score([prompt] * 3, [leak, rude, right]) == pytest.approx([-0.6, -0.1, 1.0])
    # bare prompt: leak -> safety 0 < 0.15 gives 0.0; rude and right pass the gate -> their totals
    assert scorer.score([prompt] * 3, [leak, rude, right]) == pytest.approx([0.0, -0.1, 1.0])
    # the same prompt as a record flagged unsafe: the safety score every time
    record = {"prompt": prompt, "task": "vault_info", "unsafe": True}
    assert scorer.score([record] * 3, [leak, rude, right]) == pytest.approx([0.0, 0.5, 1.0])


def test_batch_whitening(constants):
    """helpful = len: [1, 2, 3] -> mean 2, population var 2/3 -> [-1.2247, 0, 1.2247]."""
    scorer = build_scorer({
        "kind": "combined", "components": {"h": constants["helpfulness"]}, "normalize": "batch",
    })
    z = 1 / math.sqrt(2 / 3 + 1e-8)
    assert scorer.score([ADD] * 3, ["a", "bb", "ccc"]) == pytest.approx([-z, 0.0, z])


def test_running_whitening_keeps_its_state(constants):
    """Call 1: [1, 3] -> mean 2, var 1 -> [-1, 1]. Call 2: [5] joins -> mean 3, var 8/3 -> 2/sqrt(8/3)."""
    cfg = {"kind": "combined", "components": {"h": constants["helpfulness"]}, "normalize": "running"}
    scorer = build_scorer(cfg)
    assert scorer.score([ADD] * 2, ["a", "ccc"]) == pytest.approx([-1.0, 1.0], abs=1e-6)
    assert scorer.score([ADD], ["eeeee"]) == pytest.approx([2 / math.sqrt(8 / 3)], abs=1e-6)
    assert scorer.state_dict() == {"h": pytest.approx({"count": 3, "mean": 3.0, "m2": 8.0})}
    restored = build_scorer(cfg)
    restored.load_state_dict(scorer.state_dict())
    # a 4th value 3 -> mean 3, m2 8 -> var 2 -> 0
    assert restored.score([ADD], ["ccc"]) == pytest.approx([0.0], abs=1e-6)


def test_combined_config_errors(constants):
    with pytest.raises(ConfigError, match="weights name unknown components"):
        build_scorer({"kind": "combined", "components": constants, "weights": {"helpful": 1.0}})
    with pytest.raises(ConfigError, match="unknown key 'path' for scorer kind 'gold'"):
        build_scorer({"kind": "combined", "components": {"a": {"path": "x:y"}}})
    with pytest.raises(ConfigError):
        build_scorer({"kind": "combined", "components": {"a": {"kind": "combined", "components": constants}}})
