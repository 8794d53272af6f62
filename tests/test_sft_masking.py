"""Answer-only labels, token by token, for each built-in chat template; boundary merges; truncation.

Most tests use byte-level BPE tokenizers built by hand (`bpe_tokenizer`), so every token is known:
a listed word is one token, any other character is one token (or one per UTF-8 byte when the
character is not listed). In the expected lists a supervised token is written `[token]`.
"""

from __future__ import annotations

import json

import pytest

from chatforge.errors import ConfigError
from chatforge.losses.lm import IGNORE_INDEX
from chatforge.run_dir import RejectLog
from chatforge.sft.formats import Conversation, read_conversation_file
from chatforge.sft.masking import (
    EncodedConversation,
    Rejection,
    encode_conversation,
    encode_conversations,
    end_of_turn_ids,
)
from chatforge.tokenizer.templates import (
    CHAT_TEMPLATES,
    missing_special_tokens,
    required_special_tokens,
    template_special_tokens,
)

BASE_SPECIALS = ["<pad>", "<unk>", "<s>", "</s>"]
WORDS = ["system", "user", "assistant", "Be", "brief", "Hi", "Hello", "Bye",
         "【", "】", "：", "SYSTEM", "USER", "BOT", "好", "的"]


def byte_symbols() -> dict[int, str]:
    """GPT-2's printable stand-in character for each byte (what byte-level BPE vocabularies hold)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = keep[:], 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(keep, chars)}


def bpe_tokenizer(template: str, words=WORDS, specials=None):
    """A byte-level BPE whose merges build exactly `words` (characters first, then each word left to right).

    The pre-tokenizer does not split on the GPT-2 regex, so a merge may cross any boundary in the text
    (only special tokens split it): that is what lets a test force a header/answer merge.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = specials if specials is not None else BASE_SPECIALS + required_special_tokens(template)
    sym = byte_symbols()
    vocab = {t: i for i, t in enumerate(specials)}
    for ch in sym.values():
        vocab[ch] = len(vocab)
    merges: list[tuple[str, str]] = []

    def build(parts: list[str]) -> None:
        current = parts[0]
        for part in parts[1:]:
            if current + part not in vocab:
                merges.append((current, part))
                vocab[current + part] = len(vocab)
            current += part

    def encoded(ch: str) -> str:
        return "".join(sym[b] for b in ch.encode())

    for word in words:
        for ch in word:
            build([sym[b] for b in ch.encode()])
    for word in words:
        build([encoded(ch) for ch in word])
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>",
        extra_special_tokens=specials[4:], chat_template=CHAT_TEMPLATES.get(template, template),
    )


def show(tok, enc: EncodedConversation) -> list[str]:
    """The conversation's tokens as text, supervised ones in brackets."""
    return [f"[{tok.decode([i])}]" if label != IGNORE_INDEX else tok.decode([i]) for i, label in zip(enc.input_ids, enc.labels)]


def encode(tok, messages, **kwargs) -> EncodedConversation:
    out = encode_conversation(tok, messages, **kwargs)
    assert isinstance(out, EncodedConversation), out
    return out


SYS = {"role": "system", "content": "Be brief."}
U1 = {"role": "user", "content": "Hi"}
A1 = {"role": "assistant", "content": "Hello"}
U2 = {"role": "user", "content": "Bye"}
A2 = {"role": "assistant", "content": "Bye!"}


@pytest.fixture(scope="module", params=["chatml", "llama3", "user_bot"])
def template(request):
    return request.param


@pytest.fixture(scope="module")
def toks():
    return {name: bpe_tokenizer(name) for name in CHAT_TEMPLATES}


def test_required_special_tokens_per_template():
    assert required_special_tokens("chatml") == ["<|im_start|>", "<|im_end|>"]
    assert required_special_tokens("llama3") == ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    assert required_special_tokens("user_bot") == []  # bos and eos are the tokenizer's own
    have = ["<pad>", "<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    assert missing_special_tokens("llama3", have) == required_special_tokens("llama3")
    assert missing_special_tokens("chatml", have) == []
    assert template_special_tokens(CHAT_TEMPLATES["chatml"]) == required_special_tokens("chatml")


RENDERS = {
    "chatml": (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n",
        "<|im_start|>assistant\n",
    ),
    "llama3": (
        "<s><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>",
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
    ),
    "user_bot": ("<s>【SYSTEM】：Be brief.\n【USER】：Hi\n【BOT】：Hello</s>【USER】：Bye\n", "【BOT】："),
}


def test_templates_render_exactly(toks, template):
    tok = toks[template]
    prompt, generation_prompt = RENDERS[template]
    messages = [SYS, U1, A1, U2]
    assert tok.apply_chat_template(messages, tokenize=False) == prompt
    assert tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == prompt + generation_prompt


# Expected tokens of [U1, A1] and of [SYS, U1, A1, U2, A2]; "\n" is one token, "!" and "." too.
EXPECTED = {
    ("chatml", "single"): [
        "<|im_start|>", "user", "\n", "Hi", "<|im_end|>", "\n",
        "<|im_start|>", "assistant", "\n", "[Hello]", "[<|im_end|>]", "\n",
    ],
    ("chatml", "multi_system"): [
        "<|im_start|>", "system", "\n", "Be", " ", "brief", ".", "<|im_end|>", "\n",
        "<|im_start|>", "user", "\n", "Hi", "<|im_end|>", "\n",
        "<|im_start|>", "assistant", "\n", "[Hello]", "[<|im_end|>]", "\n",
        "<|im_start|>", "user", "\n", "Bye", "<|im_end|>", "\n",
        "<|im_start|>", "assistant", "\n", "[Bye]", "[!]", "[<|im_end|>]", "\n",
    ],
    ("llama3", "single"): [
        "<s>", "<|start_header_id|>", "user", "<|end_header_id|>", "\n", "\n", "Hi", "<|eot_id|>",
        "<|start_header_id|>", "assistant", "<|end_header_id|>", "\n", "\n", "[Hello]", "[<|eot_id|>]",
    ],
    ("llama3", "multi_system"): [
        "<s>", "<|start_header_id|>", "system", "<|end_header_id|>", "\n", "\n", "Be", " ", "brief", ".", "<|eot_id|>",
        "<|start_header_id|>", "user", "<|end_header_id|>", "\n", "\n", "Hi", "<|eot_id|>",
        "<|start_header_id|>", "assistant", "<|end_header_id|>", "\n", "\n", "[Hello]", "[<|eot_id|>]",
        "<|start_header_id|>", "user", "<|end_header_id|>", "\n", "\n", "Bye", "<|eot_id|>",
        "<|start_header_id|>", "assistant", "<|end_header_id|>", "\n", "\n", "[Bye]", "[!]", "[<|eot_id|>]",
    ],
    ("user_bot", "single"): [
        "<s>", "【", "USER", "】", "：", "Hi", "\n", "【", "BOT", "】", "：", "[Hello]", "[</s>]",
    ],
    ("user_bot", "multi_system"): [
        "<s>", "【", "SYSTEM", "】", "：", "Be", " ", "brief", ".", "\n",
        "【", "USER", "】", "：", "Hi", "\n", "【", "BOT", "】", "：", "[Hello]", "[</s>]",
        "【", "USER", "】", "：", "Bye", "\n", "【", "BOT", "】", "：", "[Bye]", "[!]", "[</s>]",
    ],
}


@pytest.mark.parametrize("case", ["single", "multi_system"])
def test_labels_token_by_token(toks, template, case):
    tok = toks[template]
    messages = [U1, A1] if case == "single" else [SYS, U1, A1, U2, A2]
    enc = encode(tok, messages)
    assert show(tok, enc) == EXPECTED[template, case]
    assert (enc.truncated, enc.straddling) == (0, 0)
    # The ids are exactly the rendered text's tokens, and both ways of finding answers agree.
    assert enc.input_ids == tok(tok.apply_chat_template(messages, tokenize=False), add_special_tokens=False).input_ids
    assert encode(tok, messages, mask_source="markers") == encode(tok, messages, mask_source="prefixes") == enc


@pytest.mark.parametrize("system", [False, True])
def test_every_answer_is_supervised_with_its_end_of_turn(toks, template, system):
    """Multi-turn, with and without a system prompt: the supervised tokens are the answers + end tokens."""
    tok = toks[template]
    closing = {"chatml": "<|im_end|>", "llama3": "<|eot_id|>", "user_bot": "</s>"}[template]
    answers = ["Hello", "Bye!", "好的"]
    messages = [SYS] if system else []
    for user, answer in zip(["Hi", "Bye", "Hi Bye"], answers):
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    enc = encode(tok, messages)
    # Split the supervised tokens into runs: one run per answer, each ending with the closing token.
    runs, current = [], []
    for i, label in zip(enc.input_ids, enc.labels):
        if label != IGNORE_INDEX:
            assert label == i
            current.append(i)
        elif current:
            runs.append(tok.decode(current))
            current = []
    if current:
        runs.append(tok.decode(current))
    assert runs == [a + closing for a in answers]
    assert end_of_turn_ids(tok) == [tok.convert_tokens_to_ids(closing)]


def test_header_answer_merge_supervises_the_straddling_token():
    """`【BOT】：` runs into the answer; a vocabulary with the token `：好` merges across the boundary."""
    tok = bpe_tokenizer("user_bot", words=[*WORDS, "：好"])
    messages = [U1, {"role": "assistant", "content": "好的"}]
    enc = encode(tok, messages)
    assert show(tok, enc) == ["<s>", "【", "USER", "】", "：", "Hi", "\n", "【", "BOT", "】", "[：好]", "[的]", "[</s>]"]
    assert enc.straddling == 1
    # transformers' {% generation %} mask makes the same choice (it maps the answer's first character).
    out = tok.apply_chat_template(messages, return_dict=True, return_assistant_tokens_mask=True)
    assert [i for i, m in zip(out["input_ids"], out["assistant_masks"]) if m] == [i for i in enc.labels if i != IGNORE_INDEX]
    # The cost of the merge, which no mask fixes: at inference the prompt ends with `：` as its own token.
    prompt = tok.apply_chat_template(messages[:1], add_generation_prompt=True)["input_ids"]
    assert tok.decode(prompt[-1:]) == "："
    # An answer that does not start with 好 keeps the boundary clean.
    assert encode(tok, [U1, A1]).straddling == 0


def test_template_without_markers_uses_prefix_renders(toks):
    plain = CHAT_TEMPLATES["user_bot"].replace("{% generation %}", "").replace("{% endgeneration %}", "")
    tok = bpe_tokenizer(plain, specials=BASE_SPECIALS)
    messages = [SYS, U1, A1, U2, A2]
    assert encode(tok, messages) == encode(toks["user_bot"], messages)
    with pytest.raises(ConfigError, match="needs a chat template with"):
        encode_conversation(tok, messages, mask_source="markers")


def test_wrong_markers_are_caught(toks):
    # A template whose {% generation %} block also covers the role header.
    wrong = CHAT_TEMPLATES["chatml"].replace(
        "{{ '<|im_start|>' + message['role'] + '\\n' }}{% if message['role'] == 'assistant' %}{% generation %}",
        "{% if message['role'] == 'assistant' %}{% generation %}{{ '<|im_start|>' + message['role'] + '\\n' }}",
    ).replace("{% else %}", "{% else %}{{ '<|im_start|>' + message['role'] + '\\n' }}")
    tok = bpe_tokenizer(wrong, specials=BASE_SPECIALS + ["<|im_start|>", "<|im_end|>"])
    assert tok.apply_chat_template([U1, A1], tokenize=False) == toks["chatml"].apply_chat_template([U1, A1], tokenize=False)
    with pytest.raises(ConfigError, match=r"disagree at token 6 \('<\|im_start\|>'\)"):
        encode_conversation(tok, [U1, A1])
    assert show(tok, encode(tok, [U1, A1], mask_source="prefixes")) == EXPECTED["chatml", "single"]
    assert show(tok, encode(tok, [U1, A1], mask_source="markers"))[6:9] == ["[<|im_start|>]", "[assistant]", "[\n]"]


def test_template_that_is_not_prefix_stable_uses_its_markers(toks):
    # Writes the number of messages first, so no shorter render is a prefix of a longer one.
    counting = "{{ messages | length }}" + CHAT_TEMPLATES["chatml"]
    tok = bpe_tokenizer(counting)
    enc = encode(tok, [SYS, U1, A1, U2, A2])
    assert show(tok, enc)[1:] == EXPECTED["chatml", "multi_system"]  # the first token is the count "5"
    with pytest.raises(ConfigError, match="not prefix-stable"):
        encode_conversation(tok, [U1, A1], mask_source="prefixes")
    no_markers = counting.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    with pytest.raises(ConfigError, match="not prefix-stable and has no"):
        encode_conversation(bpe_tokenizer(no_markers), [U1, A1])


def test_template_errors(toks):
    no_end = "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endfor %}"
    with pytest.raises(ConfigError, match="writes nothing for add_generation_prompt"):
        encode_conversation(bpe_tokenizer(no_end, specials=BASE_SPECIALS), [U1, A1])
    no_eot = no_end + "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
    with pytest.raises(ConfigError, match="never learn to stop"):
        encode_conversation(bpe_tokenizer(no_eot, specials=BASE_SPECIALS), [U1, A1])
    tok = bpe_tokenizer("chatml")
    tok.pad_token = "</s>"
    with pytest.raises(ConfigError, match="pad token is its eos"):
        encode_conversation(tok, [U1, A1])
    with pytest.raises(ConfigError, match="truncation must be"):
        encode_conversation(toks["chatml"], [U1, A1], truncation="middle")


def test_record_rejections(toks):
    tok = toks["chatml"]
    leak = encode_conversation(tok, [U1, {"role": "assistant", "content": "Hi<|im_end|>\n<|im_start|>user"}])
    assert leak == Rejection("special_token_in_content", "turn 1 (assistant) contains the special token '<|im_end|>'")
    assert encode_conversation(tok, [U1, {"role": "assistant", "content": "a <pad> b"}]).reason == "special_token_in_content"
    assert encode_conversation(tok, [SYS, U1]).reason == "no_assistant_turn"
    assert encode_conversation(tok, [A1, U1, A1]).reason == "out_of_order"


def test_truncation(toks):
    tok = toks["chatml"]
    messages = [SYS, U1, A1, U2, A2]
    full = encode(tok, messages)
    n = len(full.input_ids)
    assert n == 34 and full.n_supervised == 5
    assert encode(tok, messages, max_length=n) == full

    # right: keep the first 31 tokens; the second answer loses "!" and its <|im_end|>, "Bye" stays trained.
    right = encode(tok, messages, max_length=31)
    assert show(tok, right) == EXPECTED["chatml", "multi_system"][:31]
    assert show(tok, right)[-2:] == ["\n", "[Bye]"] and right.truncated == 3

    # left: keep the last 10 tokens; the beginning (system, first turns) goes first.
    left = encode(tok, messages, max_length=10, truncation="left")
    assert show(tok, left) == EXPECTED["chatml", "multi_system"][-10:]
    assert left.truncated == n - 10

    # drop: reject anything over the limit.
    assert encode_conversation(tok, messages, max_length=33, truncation="drop") == Rejection(
        "too_long", "34 tokens > max_length=33 (truncation=drop)"
    )
    # Nothing supervised left: rejected with the reason, never an all-ignored example.
    cut = encode_conversation(tok, messages, max_length=18)
    assert cut == Rejection(
        "no_supervised_tokens",
        "truncation=right to max_length=18 kept tokens 0..17 of 34; the answers are at tokens 18..32",
    )
    assert encode_conversation(tok, messages, max_length=1, truncation="left").reason == "no_supervised_tokens"


def test_encode_conversations_logs_rejects(toks, tmp_path):
    tok = toks["chatml"]
    convs = [
        Conversation([U1, A1], "f.jsonl", "line 1", {"id": "a"}),
        Conversation([SYS, U1, A1, U2, A2], "f.jsonl", "line 2", {"id": "b"}),
        Conversation([U1, {"role": "assistant", "content": "</s>"}], "f.jsonl", "line 3", {"id": "c"}),
    ]
    with RejectLog(tmp_path / "rejected.jsonl") as rejects:
        kept = list(encode_conversations(tok, convs, rejects, max_length=18))
    assert [c.extra["id"] for c, _ in kept] == ["a"]
    logged = [json.loads(line) for line in (tmp_path / "rejected.jsonl").read_text().splitlines()]
    assert [(r["where"], r["reason"]) for r in logged] == [("line 2", "no_supervised_tokens"), ("line 3", "special_token_in_content")]
    assert logged[0]["preview"].startswith('{"id": "b", "messages"')


def test_labels_are_the_tokens_or_ignored_never_pad(toks, template):
    tok = toks[template]
    enc = encode(tok, [SYS, U1, A1, U2, A2])
    assert len(enc.labels) == len(enc.input_ids)
    assert all(label in (i, IGNORE_INDEX) for i, label in zip(enc.input_ids, enc.labels))
    assert tok.pad_token_id not in enc.input_ids and tok.pad_token_id != tok.eos_token_id


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory):
    from chatforge.world import write_world

    out = tmp_path_factory.mktemp("world")
    write_world(out, seed=1234, size="tiny")
    return out


def test_trained_tokenizers_on_the_world(world_dir, toks, tmp_path):
    """chatforge-trained BPE tokenizers, each template: every answer of every world record is supervised.

    The tokenizers learn from the rendered conversations themselves, so the user_bot header can merge
    with answers that start with punctuation (`】："those"...`).
    """
    from chatforge.data.corpus import SourceConfig
    from chatforge.tokenizer.train import SpecialTokens, TokenizerConfig, train_tokenizer

    rejects = RejectLog(None)
    convs = list(read_conversation_file(world_dir / "instructions/train_sharegpt.jsonl", rejects))
    straddling = {}
    for name in CHAT_TEMPLATES:
        texts = tmp_path / f"{name}.jsonl"
        texts.write_text("".join(json.dumps({"text": toks[name].apply_chat_template(c.messages, tokenize=False)}) + "\n" for c in convs))
        cfg = TokenizerConfig(
            vocab_size=800, chat_template=name, sources=[SourceConfig(path=str(texts))],
            special_tokens={"extra": missing_special_tokens(name, SpecialTokens().ordered())},
        )
        tok = train_tokenizer(cfg, rejects)
        closing = tok.decode(end_of_turn_ids(tok))
        straddling[name] = 0
        for conv, enc in encode_conversations(tok, convs, rejects):
            answers = [m["content"] + closing for m in conv.messages if m["role"] == "assistant"]
            supervised = tok.decode([i for i in enc.labels if i != IGNORE_INDEX])
            if enc.straddling:  # a straddling token brings header text along: "：" before the answer
                supervised = supervised.replace("】：", "").replace("：", "")
            assert supervised == "".join(answers), (name, conv.where)
            straddling[name] += enc.straddling
    assert rejects.total == 0
    assert straddling["chatml"] == straddling["llama3"] == 0
