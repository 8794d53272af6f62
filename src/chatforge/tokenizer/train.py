"""Train a byte-level BPE or WordPiece tokenizer from documents and save it as a Hugging Face dir.

Kinds:
- `bpe`: byte-level BPE as in GPT-2. The text is split into words by the GPT-2 regex, each word is
  turned into bytes (shown as printable characters, a space as `Ġ`) and frequent byte pairs are
  merged. All 256 bytes are in the vocabulary whatever the corpus, so every string, Chinese and emoji
  included, encodes without `<unk>` and decodes back exactly.
- `wordpiece`: as in BERT. A normalizer cleans control characters and puts spaces around CJK
  characters (each Chinese character is its own word), optionally lowercases and strips accents;
  words are split on whitespace and punctuation; pieces inside a word carry the `##` prefix. Decoding
  joins words with single spaces and re-attaches punctuation, so text comes back *up to that
  normalisation*: runs of whitespace (newlines too) become one space, the spacing around punctuation
  and CJK characters can change (`"3.5"` -> `"3. 5"`, `"中文"` -> `"中 文"`), and characters not in the
  vocabulary become `<unk>`. Use `bpe` for a generative model.

Special tokens get the lowest ids, in this fixed order:

    0 pad `<pad>`   1 unk `<unk>`   2 bos `<s>`   3 eos `</s>`
    4 `<|im_start|>`   5 `<|im_end|>`   6.. `special_tokens.extra` in the order given

pad is a token of its own (never eos), so masking labels by pad id never hides a real eos.

Post-processing: the tokenizer never appends eos: pretraining appends one per document itself and
chat text ends turns with `<|im_end|>`. With `add_bos=True` it prepends bos to every encoded text
(`add_special_tokens=True`, the default of `tokenizer(text)`), and the saved chat template starts with
`{{ bos_token }}`, so render chat text and tokenize it with `add_special_tokens=False` (as
`apply_chat_template(tokenize=True)` does). In transformers 5 this behaviour lives in the
post-processor inside `tokenizer.json`; `tokenizer_config.json` carries no `add_bos_token`.

Note: special tokens are matched in raw text too, so a literal `</s>` in a document encodes as eos
(the usual Hugging Face behaviour).
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from chatforge.config.base import StrictModel
from chatforge.data.corpus import SourceConfig, read_documents
from chatforge.errors import ConfigError, DataError
from chatforge.run_dir import RejectLog
from chatforge.tokenizer.templates import (
    CHAT_TEMPLATES,
    DEFAULT_CHAT_TEMPLATE,
    missing_special_tokens,
    resolve_chat_template,
    template_special_tokens,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

BYTE_ALPHABET_SIZE = 256
# Files a previous tokenizer save may have left in the output dir; removed before saving so an old
# vocab.txt or special_tokens_map.json cannot shadow the new tokenizer.json.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "tokenizer_report.json",
)


class SpecialTokens(StrictModel):
    """The special tokens, in id order: pad, unk, bos, eos, im_start, im_end, then `extra`."""

    pad: str = Field("<pad>", description="padding token (id 0); never the same as eos")
    unk: str = Field("<unk>", description="unknown token (id 1); byte-level BPE never produces it")
    bos: str = Field("<s>", description="beginning-of-sequence token (id 2); prepended only with add_bos")
    eos: str = Field("</s>", description="end-of-sequence token (id 3); appended per document by pretraining")
    im_start: str = Field(
        "<|im_start|>", description="chat turn start token (id 4), used by the ChatML template"
    )
    im_end: str = Field("<|im_end|>", description="chat turn end token (id 5), used by the ChatML template")
    extra: list[str] = Field(
        default_factory=list, description="more special tokens, ids 6.. in the order given"
    )

    def ordered(self) -> list[str]:
        return [self.pad, self.unk, self.bos, self.eos, self.im_start, self.im_end, *self.extra]

    @model_validator(mode="after")
    def _distinct(self) -> SpecialTokens:
        tokens = self.ordered()
        if any(not t or t != t.strip() for t in tokens):
            raise ValueError("special tokens must be non-empty and have no surrounding whitespace")
        dupes = sorted({t for t in tokens if tokens.count(t) > 1})
        if dupes:
            raise ValueError(f"special tokens must be distinct (pad must differ from eos); repeated: {dupes}")
        return self


class TokenizerConfig(StrictModel):
    kind: Literal["bpe", "wordpiece"] = Field(
        "bpe", description="bpe: byte-level BPE (GPT-2 style, lossless); wordpiece: BERT-style WordPiece"
    )
    vocab_size: int = Field(
        4096, gt=0, description="target vocabulary size including special tokens (bpe needs > specials + 256)"
    )
    min_frequency: int = Field(2, ge=1, description="a merge must occur at least this often in the corpus")
    special_tokens: SpecialTokens = Field(
        default_factory=SpecialTokens, description="special tokens (ids 0..)"
    )
    add_bos: bool = Field(
        False, description="prepend bos to encoded text and chat renders; eos is never appended automatically"
    )
    chat_template: str = Field(
        DEFAULT_CHAT_TEMPLATE,
        description="chat template: a built-in name (chatml), a .jinja file, or raw Jinja",
    )
    max_length: int = Field(2048, gt=0, description="model_max_length written to the tokenizer config")
    split_digits: bool = Field(
        False,
        description="bpe only: every digit is its own token (no merges across digits), so 936 is 9 3 6 "
        "wherever it occurs; on in the task world's configs (docs/world.md)",
    )
    digit_space: bool = Field(
        False,
        description="with split_digits: a digit keeps the one space before it, so a spaced digit is one token "
        "(' 4', as a spelled letter ' w' is) instead of a space token then a digit (docs/world_learnability.md)",
    )
    lowercase: bool = Field(False, description="wordpiece only: lowercase and strip accents when normalising")
    limit_alphabet: int | None = Field(
        None, gt=0, description="wordpiece only: keep at most this many distinct characters (the rest -> unk)"
    )
    sources: list[SourceConfig] = Field(
        default_factory=lambda: [SourceConfig(path="builtin:pydoc")], description="training text"
    )
    max_documents: int | None = Field(
        None, gt=0, description="read at most this many documents (all when unset)"
    )
    out: str = Field(
        "runs/tokenizer", description="output directory; existing tokenizer files in it are replaced"
    )

    @model_validator(mode="after")
    def _builtin_template_tokens(self) -> TokenizerConfig:
        # A built-in template's own tokens (llama3's header and end-of-turn tokens) are added as
        # special tokens after `extra`. Not for chatml, whose tokens have their own fields (renaming
        # im_start must match the template), nor for a custom template, which lists its tokens
        # itself so that a typo in it is an error rather than a new token.
        if self.chat_template in CHAT_TEMPLATES and self.chat_template != "chatml":
            missing = missing_special_tokens(self.chat_template, self.special_tokens.ordered())
            if missing:
                self.special_tokens.extra = [*self.special_tokens.extra, *missing]
        return self

    @field_validator("sources")
    @classmethod
    def _some_sources(cls, value: list[SourceConfig]) -> list[SourceConfig]:
        if not value:
            raise ValueError("give at least one source")
        return value


def special_token_ids(cfg: TokenizerConfig) -> dict[str, int]:
    """The documented id of each special token: {"pad": 0, "unk": 1, "bos": 2, ...}."""
    st = cfg.special_tokens
    named = {
        "pad": st.pad,
        "unk": st.unk,
        "bos": st.bos,
        "eos": st.eos,
        "im_start": st.im_start,
        "im_end": st.im_end,
    }
    ids = {name: i for i, name in enumerate(named)}
    ids |= {tok: len(named) + i for i, tok in enumerate(st.extra)}
    return ids


def describe_sources(sources: list[SourceConfig]) -> str:
    return ", ".join(s.path for s in sources)


def iter_texts(cfg: TokenizerConfig, rejects: RejectLog) -> Iterator[str]:
    """The training texts: every usable document of `cfg.sources`, capped at `cfg.max_documents`."""
    docs = read_documents(cfg.sources, rejects)
    if cfg.max_documents is not None:
        docs = itertools.islice(docs, cfg.max_documents)
    # Chat records: the turns' text (the template's own markup is made of special tokens).
    return (doc.text if doc.messages is None else "\n".join(m["content"] for m in doc.messages) for doc in docs)


def chat_template_for(cfg: TokenizerConfig) -> str:
    """The Jinja template to save: `cfg.chat_template` resolved, with a bos prefix when `add_bos`."""
    template = resolve_chat_template(cfg.chat_template)
    missing = [t for t in template_special_tokens(template) if t not in cfg.special_tokens.ordered()]
    if missing:
        raise ConfigError(
            f"chat_template writes {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not a "
            "special token; add to special_tokens.extra or set special_tokens.im_start/im_end"
        )
    if cfg.add_bos and "bos_token" not in template:
        template = "{{ bos_token }}" + template
    return template


def check_config(cfg: TokenizerConfig) -> None:
    """The checks that need more than one field: the chat template's tokens and the minimum vocab size.

    Raises `ConfigError`; `train_tokenizer` runs them too, the stage runs them before touching `out`.
    """
    chat_template_for(cfg)
    _check_vocab_size_before(cfg, len(cfg.special_tokens.ordered()))


def train_tokenizer(cfg: TokenizerConfig, rejects: RejectLog) -> PreTrainedTokenizerFast:
    """Train on `cfg.sources` and return a `transformers.PreTrainedTokenizerFast`, ready to save.

    Raises `DataError` when the sources hold no usable document and `ConfigError` when `vocab_size`
    cannot hold the special tokens and the alphabet.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    st = cfg.special_tokens
    specials = st.ordered()
    check_config(cfg)
    template = chat_template_for(cfg)

    texts = iter_texts(cfg, rejects)
    first = next(texts, None)
    if first is None:
        raise DataError(
            f"no usable documents in {describe_sources(cfg.sources)} (skipped: {rejects.summary_line()})"
        )

    show_progress = sys.stderr.isatty()
    if cfg.kind == "bpe":
        backend = Tokenizer(models.BPE())  # no unk: every byte is in the vocabulary
        backend.pre_tokenizer = _bpe_pre_tokenizer(cfg.split_digits, cfg.digit_space)
        backend.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=cfg.vocab_size,
            min_frequency=cfg.min_frequency,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=show_progress,
        )
    else:
        backend = Tokenizer(models.WordPiece(unk_token=st.unk, continuing_subword_prefix="##"))
        backend.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=cfg.lowercase, lowercase=cfg.lowercase
        )
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        backend.decoder = decoders.WordPiece(prefix="##", cleanup=True)
        limit = {} if cfg.limit_alphabet is None else {"limit_alphabet": cfg.limit_alphabet}
        trainer = trainers.WordPieceTrainer(
            vocab_size=cfg.vocab_size,
            min_frequency=cfg.min_frequency,
            special_tokens=specials,
            continuing_subword_prefix="##",
            show_progress=show_progress,
            **limit,
        )

    backend.train_from_iterator(_batches(itertools.chain([first], texts)), trainer=trainer)
    _check_vocab_size_after(cfg, backend.get_vocab_size(), len(specials))
    for i, token in enumerate(specials):  # the trainer puts them first; the documented ids depend on it
        if backend.token_to_id(token) != i:
            raise RuntimeError(f"special token {token!r} got id {backend.token_to_id(token)}, expected {i}")

    if cfg.add_bos:
        single, pair, bos_ids = (
            f"{st.bos} $A",
            f"{st.bos} $A {st.bos}:1 $B:1",
            [(st.bos, specials.index(st.bos))],
        )
    else:
        single, pair, bos_ids = "$A", "$A $B:1", []
    template_proc = processors.TemplateProcessing(single=single, pair=pair, special_tokens=bos_ids)
    if cfg.kind == "bpe":
        # trim_offsets=False keeps every character mapped to a token (assistant masks use offsets).
        backend.post_processor = processors.Sequence(
            [processors.ByteLevel(add_prefix_space=False, trim_offsets=False), template_proc]
        )
    else:
        backend.post_processor = template_proc

    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=st.pad,
        unk_token=st.unk,
        bos_token=st.bos,
        eos_token=st.eos,
        extra_special_tokens=[st.im_start, st.im_end, *st.extra],
        model_max_length=cfg.max_length,
        chat_template=template,
        clean_up_tokenization_spaces=False,
    )


def _bpe_pre_tokenizer(split_digits: bool, digit_space: bool = False):
    """GPT-2's byte-level split, preceded by isolating each digit when `split_digits`.

    Why: BPE merges the frequent digit strings of its corpus, so the same number splits differently
    in different places (` 9`+`36`, ` 198`+`7`) and a small model must learn arithmetic and years over
    an arbitrary set of multi-digit tokens. Digits first, then ByteLevel: the space before a number
    becomes its own token and each digit maps to one of ten tokens (Llama's choice).

    With `digit_space` a digit keeps the single space before it (` 4` one piece, which BPE merges into
    one token): spaced digits ("4 0 8") then tokenise like spelled letters ("w o r"), one token per
    symbol, instead of alternating a space token with the digits, which the world's tiny models
    could not learn to copy (docs/world_learnability.md, "Digits as spelled letters").
    """
    from tokenizers import Regex, pre_tokenizers

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if not split_digits:
        return byte_level
    if digit_space:
        digits = pre_tokenizers.Split(Regex(r" ?\p{N}"), behavior="isolated")
    else:
        digits = pre_tokenizers.Digits(individual_digits=True)
    return pre_tokenizers.Sequence([digits, byte_level])


def _batches(texts: Iterator[str], size: int = 1000) -> Iterator[list[str]]:
    while batch := list(itertools.islice(texts, size)):
        yield batch


def _check_vocab_size_before(cfg: TokenizerConfig, n_special: int) -> None:
    if cfg.kind == "bpe" and cfg.vocab_size <= n_special + BYTE_ALPHABET_SIZE:
        raise ConfigError(
            f"vocab_size={cfg.vocab_size} is too small for byte-level BPE: the {n_special} special tokens and "
            f"the {BYTE_ALPHABET_SIZE}-byte alphabet already take {n_special + BYTE_ALPHABET_SIZE} ids; "
            f"use vocab_size > {n_special + BYTE_ALPHABET_SIZE}"
        )
    if cfg.kind == "wordpiece" and cfg.split_digits:
        raise ConfigError("split_digits is a bpe option; wordpiece already splits on its own rules")
    if cfg.digit_space and not cfg.split_digits:
        raise ConfigError("digit_space=true needs split_digits=true (it says how a split digit treats the space before it)")
    if cfg.kind == "wordpiece" and cfg.vocab_size <= n_special:
        raise ConfigError(f"vocab_size={cfg.vocab_size} does not even hold the {n_special} special tokens")


def _check_vocab_size_after(cfg: TokenizerConfig, size: int, n_special: int) -> None:
    # WordPiece's alphabet is the corpus's characters (plus their ## forms); it is only known now.
    if size > cfg.vocab_size:
        raise ConfigError(
            f"vocab_size={cfg.vocab_size} is too small for {cfg.kind} on this corpus: the {n_special} special "
            f"tokens and the alphabet (with ## continuation forms) already take {size} ids; raise vocab_size "
            "above that or set limit_alphabet"
        )


def save_tokenizer(tok: PreTrainedTokenizerFast, out: str | Path) -> Path:
    """Write `tok` as a Hugging Face tokenizer dir (tokenizer.json, tokenizer_config.json, chat_template.jinja).

    An existing directory is reused: the tokenizer files in `TOKENIZER_FILES` are replaced, other files
    are left alone. A path that is a file is refused with `ConfigError`.
    """
    out = Path(out)
    check_out_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        (out / name).unlink(missing_ok=True)
    tok.save_pretrained(str(out))
    return out


def check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out={out} is a file, not a directory; give a directory path for the tokenizer")


def corpus_stats(
    tok: PreTrainedTokenizerFast, cfg: TokenizerConfig, max_chars: int = 5_000_000
) -> dict[str, Any]:
    """Compression of `tok` on the training text: characters and UTF-8 bytes per token.

    Reads the sources again (rejects are not logged twice) up to `max_chars` characters; special
    tokens are not counted.
    """
    texts: list[str] = []
    chars = documents = 0
    for text in iter_texts(cfg, RejectLog(None)):
        texts.append(text)
        chars += len(text)
        documents += 1
        if chars >= max_chars:
            break
    # The backend directly: no "longer than model_max_length" warnings for long documents.
    encoded = tok.backend_tokenizer.encode_batch(texts, add_special_tokens=False) if texts else []
    tokens = sum(len(enc.ids) for enc in encoded)
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    return {
        "documents": documents,
        "characters": chars,
        "bytes": n_bytes,
        "tokens": tokens,
        "chars_per_token": round(chars / tokens, 4) if tokens else None,
        "bytes_per_token": round(n_bytes / tokens, 4) if tokens else None,
        "sampled": chars >= max_chars,
    }
