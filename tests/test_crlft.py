"""C-RLFT: class conditions in the system message, class-reward token weights, the best class at inference."""

from __future__ import annotations

import json
import math

import pytest

from chatforge.sft.crlft import CRLFTConfig, condition, conditioned_chat_template
from chatforge.tokenizer.templates import CHAT_TEMPLATES

MESSAGES = [{"role": "user", "content": "Compute 2 + 3."}, {"role": "assistant", "content": "5"}]


def test_condition_goes_first_in_the_system_message():
    cfg = CRLFTConfig()
    assert condition(MESSAGES, "expert", cfg)[0] == {"role": "system", "content": "Source: expert."}
    with_system = [{"role": "system", "content": "Be brief."}, *MESSAGES]
    assert condition(with_system, "novice", cfg)[0]["content"] == "Source: novice. Be brief."
    assert condition(with_system, "novice", cfg)[1:] == MESSAGES


def test_weights_follow_the_code_or_the_paper():
    assert CRLFTConfig().weight("novice") == 0.1 and CRLFTConfig().weight("expert") == 1.0
    paper = CRLFTConfig(weighting="exp", beta=0.5)
    assert paper.weight("novice") == pytest.approx(math.exp(0.2)) and paper.weight("expert") == pytest.approx(math.exp(2))
    assert CRLFTConfig().inference_class == "expert"
    with pytest.raises(ValueError, match="best_class 'gpt4'"):
        CRLFTConfig(best_class="gpt4")


def test_stage_conditions_weights_and_rejects_unknown_classes(tmp_path, tiny_tokenizer_dir):
    from chatforge.run_dir import RejectLog
    from chatforge.sft.formats import ChatSourceConfig
    from chatforge.stages.sft import Config, load_examples
    from chatforge.tokenizer.load import load_tokenizer

    path = tmp_path / "mixed.jsonl"
    rows = [
        {"source": "expert", "messages": MESSAGES},
        {"source": "novice", "messages": [MESSAGES[0], {"role": "assistant", "content": "6"}]},
        {"source": "oracle", "messages": MESSAGES},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = Config(model="unused", data={"sources": [{"path": str(path)}]}, crlft={})
    tokenizer = load_tokenizer(tiny_tokenizer_dir)
    log = RejectLog(tmp_path / "rejected.jsonl")
    examples, stats = load_examples(cfg, cfg.data.sources, tokenizer, log)
    log.close()
    assert [e.weight for e in examples] == [1.0, 0.1] and stats["examples"] == 2
    assert "Source: expert." in tokenizer.decode(examples[0].input_ids)
    rejected = json.loads((tmp_path / "rejected.jsonl").read_text())
    assert rejected["reason"] == "unknown_class" and rejected["where"] == "line 3"
    assert isinstance(cfg.data.sources[0], ChatSourceConfig)


def test_weighted_rows_carry_the_class_weight_on_answer_tokens():
    from chatforge.sft.batches import Example, SFTBatches

    ignore = -100
    a = Example([5, 6, 7], [ignore, 6, 7], weight=0.1)
    batch = SFTBatches([a], 1, 8, 0, "pad").next_batch()
    assert batch["loss_weights"][0, :3].tolist() == pytest.approx([0.1, 0.1, 0.1])
    assert batch["labels"][0].tolist() == [6, 7, ignore]


# --- conditioned_chat_template: the serving template conditions plain messages on the best class itself.

SYSTEM = {"role": "system", "content": "Be brief."}
MULTI_TURN = [
    {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
    {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Bye!"},
]


@pytest.fixture(scope="module")
def toks():
    from test_sft_masking import bpe_tokenizer

    return {name: bpe_tokenizer(name) for name in CHAT_TEMPLATES}


def rendered(tok, messages, template=None, **kwargs):
    return tok.apply_chat_template(messages, chat_template=template, tokenize=False, **kwargs)


def masked(tok, messages, template=None, **kwargs):
    out = tok.apply_chat_template(
        messages, chat_template=template, tokenize=True, return_dict=True, return_assistant_tokens_mask=True, **kwargs
    )
    return list(out["input_ids"]), list(out["assistant_masks"])


@pytest.mark.parametrize("name", list(CHAT_TEMPLATES))
@pytest.mark.parametrize("system", [False, True], ids=["no_system", "system"])
@pytest.mark.parametrize("generation_prompt", [False, True], ids=["no_gen", "gen"])
@pytest.mark.parametrize("turns", [2, 3, 4], ids=["1turn", "open", "2turns"])
def test_conditioned_template_renders_the_conditioned_messages(toks, name, system, generation_prompt, turns):
    cfg, tok = CRLFTConfig(), toks[name]
    conditioned = conditioned_chat_template(CHAT_TEMPLATES[name], cfg)
    messages = [SYSTEM] * system + MULTI_TURN[:turns]
    expected = condition(messages, "expert", cfg)
    assert expected[0]["content"].startswith("Source: expert.")
    kwargs = {"add_generation_prompt": generation_prompt}
    assert rendered(tok, messages, conditioned, **kwargs) == rendered(tok, expected, **kwargs)
    ids, mask = masked(tok, messages, conditioned, **kwargs)
    assert (ids, mask) == masked(tok, expected, **kwargs)
    assert sum(mask) > 0
    # other render arguments reach the original template unchanged
    custom = {"bos_token": "<unk>", "eos_token": "<pad>", **kwargs}
    assert rendered(tok, messages, conditioned, **custom) == rendered(tok, expected, **custom)


@pytest.mark.parametrize("name", list(CHAT_TEMPLATES))
def test_conditioned_template_for_another_class(toks, name):
    cfg, tok = CRLFTConfig(), toks[name]
    conditioned = conditioned_chat_template(CHAT_TEMPLATES[name], cfg, "novice")
    for messages in (MULTI_TURN, [SYSTEM, *MULTI_TURN]):
        assert rendered(tok, messages, conditioned) == rendered(tok, condition(messages, "novice", cfg))


@pytest.mark.parametrize("name", list(CHAT_TEMPLATES))
def test_saved_tokenizer_serves_the_conditioned_prompt(toks, name, tmp_path):
    from transformers import AutoTokenizer

    cfg, tok = CRLFTConfig(), toks[name]
    original = tok.chat_template
    tok.chat_template = conditioned_chat_template(original, cfg)
    try:
        tok.save_pretrained(tmp_path)
    finally:
        tok.chat_template = original
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    prompt = [SYSTEM, MULTI_TURN[0]]
    served = loaded.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    assert served == rendered(tok, condition(prompt, "expert", cfg), add_generation_prompt=True)
    assert "Source: expert. Be brief." in served and served.count("Source:") == 1


@pytest.mark.parametrize("name", list(CHAT_TEMPLATES))
def test_already_tagged_messages_are_not_tagged_again(toks, name):
    cfg, tok = CRLFTConfig(), toks[name]
    conditioned = conditioned_chat_template(CHAT_TEMPLATES[name], cfg)
    for text in ("Source: expert. Be brief.", "Source: expert.", "Source: novice. Be brief."):
        messages = [{"role": "system", "content": text}, *MULTI_TURN]  # the user asks for a class explicitly
        out = rendered(tok, messages, conditioned, add_generation_prompt=True)
        assert out == rendered(tok, messages, add_generation_prompt=True) and out.count("Source:") == 1
    # a class that is not in cfg.rewards is ordinary text: the best class's tag still goes in front
    oracle = [{"role": "system", "content": "Source: oracle. Be brief."}, *MULTI_TURN]
    assert rendered(tok, oracle, conditioned) == rendered(tok, condition(oracle, "expert", cfg))


def test_conditioning_a_conditioned_template_replaces_its_prelude(toks):
    cfg, tok = CRLFTConfig(), toks["chatml"]
    once = conditioned_chat_template(CHAT_TEMPLATES["chatml"], cfg)
    assert conditioned_chat_template(once, cfg) == once
    assert conditioned_chat_template(conditioned_chat_template(CHAT_TEMPLATES["chatml"], cfg, "novice"), cfg) == once
    assert once.count("chatforge:crlft-condition begin") == 1
    # a bos prepended in front of the prelude later (tokenizer saving does that) still counts as conditioned
    with_bos = "{{ bos_token }}" + once
    again = conditioned_chat_template(with_bos, cfg)
    assert again.count("chatforge:crlft-condition begin") == 1
    assert rendered(tok, MULTI_TURN, again) == rendered(tok, MULTI_TURN, with_bos) == "<s>" + rendered(tok, MULTI_TURN, once)


@pytest.mark.parametrize(
    "condition_text",
    [
        "Source: {cls}.",
        "It's {cls}'s answer",
        'Quality "{cls}" \\ C:\\new\\{cls} \\n',
        "{{{{ {cls} }}}} {{% raw %}} #}} {{# %}} <|{cls}|>",
        "【来源】：{cls}。\n😀\t",
    ],
    ids=["default", "single_quote", "double_quote_backslash", "jinja_syntax", "unicode_newline"],
)
def test_condition_text_is_escaped_for_jinja(toks, condition_text):
    cfg, tok = CRLFTConfig(condition_text=condition_text), toks["chatml"]
    conditioned = conditioned_chat_template(CHAT_TEMPLATES["chatml"], cfg)
    for messages in (MULTI_TURN, [SYSTEM, *MULTI_TURN]):
        expected = condition(messages, "expert", cfg)
        assert rendered(tok, messages, conditioned) == rendered(tok, expected)
        tagged = [expected[0], *messages[-4:]]
        assert rendered(tok, tagged, conditioned) == rendered(tok, tagged)


def test_list_of_parts_content():
    """Parts content: the tag goes in front of the first text part, or as a text part of its own; others untouched."""
    from transformers.utils.chat_template_utils import render_jinja_template

    cfg = CRLFTConfig()
    show = "{% for m in messages %}{{ m['role'] }}={{ m['content'] | tojson }};{% endfor %}"
    conditioned = conditioned_chat_template(show, cfg)
    image = {"type": "image", "url": "x.png"}
    cases = [
        [{"role": "system", "content": [{"type": "text", "text": "Be brief."}, image]}, MULTI_TURN[0]],
        [{"role": "system", "content": [image, {"type": "text", "text": "Be brief."}]}, MULTI_TURN[0]],
        [{"role": "system", "content": []}, MULTI_TURN[0]],
        [{"role": "system", "content": None}, MULTI_TURN[0]],
    ]

    def render(template, messages):
        return render_jinja_template(conversations=[messages], chat_template=template)[0][0]

    for messages in cases:
        assert render(conditioned, messages) == render(show, condition(messages, "expert", cfg))
    assert condition(cases[0], "expert", cfg)[0]["content"][0]["text"] == "Source: expert. Be brief."
    assert condition(cases[1], "expert", cfg)[0]["content"][0] == {"type": "text", "text": "Source: expert."}
    assert condition(cases[3], "expert", cfg)[0]["content"] is None
    tagged = [{"role": "system", "content": [{"type": "text", "text": "Source: novice. Be brief."}]}]
    assert render(conditioned, tagged) == render(show, tagged)


@pytest.mark.parametrize(
    "template",
    [
        "\n  {% for m in messages %}{{ m['content'] }}|{% endfor %}",
        "  \n  {{ bos_token }}{% for m in messages %}{{ m['content'] }}|{% endfor %}",
        "\n\t{%- for m in messages %}{{ m['content'] }}|{% endfor %}",
        " {%+ for m in messages %}{{ m['content'] }}|{% endfor %}",
        "\n\n{# comment #}\n{% for m in messages %}{{ m['content'] }}|{% endfor %}",
        "x{% for m in messages %}{{ m['content'] }}|{% endfor %}",
    ],
    ids=["newline_block", "variable", "dash", "plus", "comment", "text"],
)
def test_leading_whitespace_renders_as_in_the_original(toks, template):
    cfg, tok = CRLFTConfig(), toks["chatml"]
    conditioned = conditioned_chat_template(template, cfg)
    assert rendered(tok, MULTI_TURN, conditioned) == rendered(tok, condition(MULTI_TURN, "expert", cfg), template)
