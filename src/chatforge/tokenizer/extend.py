"""Extend a BPE tokenizer with tokens learned on domain text, leaving old text's tokenization alone.

Mechanism: BPE training *continues* where the old tokenizer stopped. The domain text is encoded with
the old tokenizer; each pre-tokenized word becomes its sequence of old tokens; then the usual BPE
loop runs on those sequences: the adjacent pair that occurs most often (weighted by word frequency,
ties to the lowest ids) becomes a new token, its merge is appended to the *end* of the BPE model's
merge list, and the words are re-merged. Each new merge therefore saves as many tokens on the domain
text as its pair occurs there (overlapping repeats such as `a a a` aside), the greedy choice of
"most tokens saved"; `NewToken.saved` records the exact figure. It stops after
`num_new_tokens` merges or when the best pair occurs fewer than `min_frequency` times. A pair whose
concatenation already is a token (reached by another merge path) is skipped, so every new merge
makes a new token with a new id.

Why this keeps old text: a BPE model applies, inside each pre-tokenized word, the lowest-ranked
merge available until none is. Every new merge ranks after every old one and produces a token no
old merge uses, so encoding first reaches exactly the old segmentation, then the new merges can only
join runs of adjacent old tokens. Guaranteed, for every text:

1. old ids keep their strings; special tokens (pad 0, unk 1, bos 2, eos 3, `<|im_start|>` 4,
   `<|im_end|>` 5, ...), added tokens, normalizer, pre-tokenizer, post-processor, decoder and chat
   template are unchanged; new tokens get the ids `len(old)`, `len(old) + 1`, ...;
2. the new encoding is a *coarsening* of the old one: each new token stands for a run of 2 or more
   adjacent old tokens inside one word, every other token is the old token at the same place, so the
   sequence is never longer and decodes to the same text;
3. a text in which no new token's byte string occurs encodes to exactly the same ids as before.
   More precisely (without `ignore_merges`), ids change only inside words whose old tokens hold a
   new merge's pair side by side; the string occurring across old token boundaries changes nothing.

Not done: `tokenizer.add_tokens([...])`. Added tokens are cut out of the text *before* the model
runs, so an added `"ing"` would split every old word containing "ing" at a new place and change its
old tokens, not only join them. Training a fresh BPE on the domain text and taking its merges is
not done either: its merges combine pieces the old segmentation may never produce, so many new
tokens would be unreachable.

Supported: fast tokenizers with a BPE model (byte-level like GPT-2/Llama-3, or SentencePiece-style
with `▁`), without `continuing_subword_prefix`/`end_of_word_suffix`. With `ignore_merges` (Llama-3),
a word that is itself a new token becomes that one token: still a coarsening.
"""

from __future__ import annotations

import heapq
import itertools
import json
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatforge.errors import ChatforgeError, DataError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

ENCODE_BATCH = 256  # documents per encode_batch call while counting words


@dataclass(frozen=True)
class NewToken:
    """One added token: its id, its string in the BPE vocabulary, the merge that makes it."""

    id: int
    token: str  # as in the vocabulary (byte-level form: a leading space shows as "Ġ")
    text: str  # what it decodes to ("\ufffd" where it holds part of a UTF-8 character)
    left: str
    right: str
    saved: int  # domain-text tokens this merge removed when it was learned


def extend_tokenizer(
    tokenizer: PreTrainedTokenizerBase,
    domain_texts: Iterable[str],
    num_new_tokens: int,
    min_frequency: int = 2,
) -> tuple[PreTrainedTokenizerBase, list[NewToken]]:
    """Learn up to `num_new_tokens` merges on `domain_texts`; return the extended tokenizer and them.

    The input tokenizer is not modified. The result is a new tokenizer of the same class, loaded from
    a saved copy, so `save_pretrained` / `AutoTokenizer.from_pretrained` round-trip it. See the module
    docstring for what is guaranteed about old text.

    Raises `ChatforgeError` for a tokenizer this cannot extend (not fast, not BPE) and `DataError`
    when the texts are empty or no pair occurs `min_frequency` times.
    """
    if num_new_tokens < 1 or min_frequency < 1:
        raise ValueError("num_new_tokens and min_frequency must be at least 1")
    state = bpe_state(tokenizer)
    words = word_counts(tokenizer, domain_texts)
    if not words:
        raise DataError("no domain text to learn new tokens from (every text is empty or only special tokens)")

    vocab = tokenizer.get_vocab()
    strings = {i: s for s, i in vocab.items()}
    first_id = max(strings) + 1
    merges = learn_merges(words, strings, first_id, num_new_tokens, min_frequency)
    if not merges:
        raise DataError(
            f"no pair of adjacent tokens occurs min_frequency={min_frequency} times in the domain text "
            f"({sum(words.values()):,} words); nothing to add: give more text or lower min_frequency"
        )

    model = state["model"]
    string_merges = bool(model["merges"]) and isinstance(model["merges"][0], str)  # tokenizers < 0.20 files
    added = []
    for left, right, new_id, saved in merges:
        token = strings[new_id]
        model["vocab"][token] = new_id
        model["merges"].append(f"{strings[left]} {strings[right]}" if string_merges else [strings[left], strings[right]])
        added.append(NewToken(new_id, token, "", strings[left], strings[right], saved))

    extended = _rebuild(tokenizer, json.dumps(state, ensure_ascii=False))
    for tok in added:
        if extended.convert_tokens_to_ids(tok.token) != tok.id:
            raise RuntimeError(f"new token {tok.token!r} did not get id {tok.id} after reloading")
    added = [NewToken(t.id, t.token, extended.decode([t.id]), t.left, t.right, t.saved) for t in added]
    return extended, added


def bpe_state(tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    """The tokenizer's `tokenizer.json` as a dict, after checking it is a BPE model this can extend."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ChatforgeError(
            f"{type(tokenizer).__name__} is not a fast tokenizer (no tokenizer.json); "
            "vocabulary extension needs a `tokenizers` BPE model"
        )
    state = json.loads(backend.to_str())
    model = state["model"]
    if model.get("type") != "BPE":
        raise ChatforgeError(
            f"the tokenizer's model is {model.get('type')}, not BPE; vocabulary extension appends BPE merges "
            "(retrain a WordPiece tokenizer on old + domain text instead)"
        )
    if model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        raise ChatforgeError(
            "BPE tokenizers with continuing_subword_prefix or end_of_word_suffix are not supported for extension"
        )
    return state


def word_counts(tokenizer: PreTrainedTokenizerBase, texts: Iterable[str]) -> Counter[tuple[int, ...]]:
    """How often each word occurs, a word being the old token ids of one pre-tokenized piece.

    The texts are encoded by the tokenizer itself, so normalisation, pre-tokenisation and added
    tokens (cut out first, never merged) act exactly as in use. One-token words cannot merge and are
    left out.
    """
    backend = tokenizer.backend_tokenizer
    added_ids = set(tokenizer.added_tokens_decoder)
    counts: Counter[tuple[int, ...]] = Counter()
    for batch in _batches(iter(texts), ENCODE_BATCH):
        for enc in backend.encode_batch(batch, add_special_tokens=False):
            for word_id, group in itertools.groupby(zip(enc.word_ids, enc.ids), key=lambda pair: pair[0]):
                ids = tuple(token for _, token in group)
                if word_id is not None and len(ids) > 1 and not added_ids.intersection(ids):
                    counts[ids] += 1
    return counts


def learn_merges(
    words: Counter[tuple[int, ...]],
    strings: dict[int, str],
    next_id: int,
    limit: int,
    min_frequency: int,
) -> list[tuple[int, int, int, int]]:
    """BPE training on top of existing segmentations: `[(left, right, new_id, saved), ...]` in rank order.

    Pairs are ranked by how often they occur; `saved` is how many tokens the merge removed (less
    than the count only for overlapping repeats: `a a a` holds the pair `a a` twice, merges once).

    `strings` (id -> vocabulary string) gains an entry per new token. Pair counts are kept
    incrementally (only the words holding the merged pair are re-counted) with a lazy max-heap, so
    this takes well under a second for a few MB of text.
    """
    segs = [list(w) for w in words]
    freqs = list(words.values())
    counts: Counter[tuple[int, int]] = Counter()
    where: defaultdict[tuple[int, int], set[int]] = defaultdict(set)
    for i, seg in enumerate(segs):
        for pair in zip(seg, seg[1:]):
            counts[pair] += freqs[i]
            where[pair].add(i)
    heap = [(-n, pair) for pair, n in counts.items()]
    heapq.heapify(heap)
    known = set(strings.values())
    merges: list[tuple[int, int, int, int]] = []
    while heap and len(merges) < limit:
        negative, pair = heapq.heappop(heap)
        if -negative != counts[pair]:  # stale entry: the count changed since it was pushed
            continue
        if -negative < min_frequency:
            break
        text = strings[pair[0]] + strings[pair[1]]
        if text in known:  # joining would change old text without giving a new row
            continue
        new_id, next_id = next_id, next_id + 1
        strings[new_id] = text
        known.add(text)
        changed: set[tuple[int, int]] = set()
        saved = 0
        for i in where.pop(pair):
            old = segs[i]
            merged = _merge(old, pair, new_id)
            if len(merged) == len(old):
                continue
            saved += (len(old) - len(merged)) * freqs[i]
            for p in zip(old, old[1:]):
                counts[p] -= freqs[i]
                changed.add(p)
            for p in zip(merged, merged[1:]):
                counts[p] += freqs[i]
                where[p].add(i)
                changed.add(p)
            segs[i] = merged
        merges.append((pair[0], pair[1], new_id, saved))
        for p in changed:
            if counts[p] > 0:
                heapq.heappush(heap, (-counts[p], p))
    return merges


def _merge(seg: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Join every occurrence of `pair`, leftmost first (as the BPE model does for equal ranks)."""
    out: list[int] = []
    i = 0
    while i < len(seg):
        if i + 1 < len(seg) and seg[i] == pair[0] and seg[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(seg[i])
            i += 1
    return out


def _rebuild(tokenizer: PreTrainedTokenizerBase, tokenizer_json: str) -> PreTrainedTokenizerBase:
    """The same tokenizer (class, specials, chat template, config) with a new `tokenizer.json`."""
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        Path(tmp, "tokenizer.json").write_text(tokenizer_json, encoding="utf-8")
        extended = AutoTokenizer.from_pretrained(tmp)
    extended.name_or_path = tokenizer.name_or_path
    return extended


def compare_tokenizers(
    old: PreTrainedTokenizerBase, new: PreTrainedTokenizerBase, texts: Iterable[str]
) -> dict[str, Any]:
    """Tokens per byte of `old` and `new` on `texts`, and how many texts encode to identical ids."""
    documents = identical = n_bytes = before = after = 0
    for batch in _batches(iter(texts), ENCODE_BATCH):
        olds = old.backend_tokenizer.encode_batch(batch, add_special_tokens=False)
        news = new.backend_tokenizer.encode_batch(batch, add_special_tokens=False)
        for text, o, n in zip(batch, olds, news):
            documents += 1
            identical += o.ids == n.ids
            n_bytes += len(text.encode("utf-8"))
            before += len(o.ids)
            after += len(n.ids)
    return {
        "documents": documents,
        "identical_documents": identical,
        "bytes": n_bytes,
        "tokens_before": before,
        "tokens_after": after,
        "tokens_per_byte_before": round(before / n_bytes, 5) if n_bytes else None,
        "tokens_per_byte_after": round(after / n_bytes, 5) if n_bytes else None,
        "token_reduction": round(1 - after / before, 5) if before else None,
    }


def _batches(texts: Iterator[str], size: int) -> Iterator[list[str]]:
    while batch := list(itertools.islice(texts, size)):
        yield batch
