"""Load a tokenizer directory for a training stage, making sure it has a usable pad token.

Pad policy (`load_tokenizer`): batches are padded with the pad token and label masks are often built
from its id, so pad must be a token of its own: never eos (that would hide every real eos from the
loss) and not unk. When the tokenizer has no pad token, or its pad token is its eos token:

1. an existing, unused special token becomes pad: first a conventional pad name found in the
   vocabulary (`<pad>`, `[PAD]`, `<|pad|>`, `<|padding|>`, `<|finetune_right_pad_id|>`), else the
   lowest-id special token that is not bos/eos/unk and that the chat template does not write;
2. otherwise, with `allow_new_pad=True`, a new special token `<pad>` is added. The vocabulary then
   grows by one, so the caller must resize the model's embeddings to `len(tokenizer)`
   (`model.resize_token_embeddings(len(tokenizer))`); a from-scratch model built from the tokenizer
   needs nothing;
3. otherwise (`allow_new_pad=False`, the default) `ChatforgeError` says so, and the caller decides.

Each change is logged as a warning on the `chatforge` logger.

A tokenizer exported with a model (`chatforge.export`) has the chat template's end-of-turn token as
its `eos_token`, for tools outside chatforge; `EXPORT_SIDECAR` beside it names the eos that
pretraining appends to documents, and `load_tokenizer` sets `eos_token` back to that, so every stage
reading an export ends documents (and pads, and stops) as the stage that wrote it did.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from chatforge.errors import ChatforgeError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger("chatforge")

PAD_NAMES = ("<pad>", "[PAD]", "<|pad|>", "<|padding|>", "<|finetune_right_pad_id|>")
NEW_PAD = "<pad>"
# Any of these marks a directory as a tokenizer (fast, slow BPE, WordPiece, sentencepiece, tiktoken).
TOKENIZER_MARKERS = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "vocab.txt",
    "tokenizer.model",
    "tekken.json",
)
EXPORT_SIDECAR = "chatforge_tokenizer.json"  # written by chatforge.export


def load_tokenizer(path: str | Path, *, allow_new_pad: bool = False, pad_policy: bool = True) -> PreTrainedTokenizerBase:
    """Load the tokenizer at local directory `path` with `AutoTokenizer` (no remote code).

    Returns the tokenizer with a pad token different from eos (see the module docstring for how one
    is chosen); with `pad_policy=False`, exactly as saved (for tools that must change nothing else,
    such as vocabulary extension). Raises `ChatforgeError` with a one-line message when `path` is missing, is not a
    tokenizer directory, cannot be loaded, or has no pad token and no spare special token while
    `allow_new_pad` is False.
    """
    path = Path(path)
    if not path.exists():
        raise ChatforgeError(f"tokenizer not found: {path}")
    if not path.is_dir():
        raise ChatforgeError(f"tokenizer path {path} is a file; give the tokenizer directory")
    if not any((path / name).is_file() for name in TOKENIZER_MARKERS):
        raise ChatforgeError(
            f"{path} is not a tokenizer directory (none of {', '.join(TOKENIZER_MARKERS)}); "
            "train one with `chatforge tokenizer out=DIR`"
        )

    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
    except Exception as exc:  # transformers raises OSError, ValueError, KeyError, json errors...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ChatforgeError(f"cannot load the tokenizer in {path}: {first}") from None
    restore_document_eos(tok, path)
    if pad_policy:
        ensure_pad_token(tok, where=str(path), allow_new_pad=allow_new_pad)
    return tok


def restore_document_eos(tok: PreTrainedTokenizerBase, path: Path) -> bool:
    """Set `tok.eos_token` back to the document eos an export recorded (see the module docstring)."""
    import json

    sidecar = path / EXPORT_SIDECAR
    if not sidecar.is_file():
        return False
    try:
        eos = json.loads(sidecar.read_text(encoding="utf-8")).get("document_eos_token")
    except ValueError:
        raise ChatforgeError(f"{sidecar} is not valid JSON; delete it to load the tokenizer as saved") from None
    if not eos or eos == tok.eos_token:
        return False
    if eos not in tok.get_vocab():
        raise ChatforgeError(f"{sidecar}: document_eos_token {eos!r} is not a token of the tokenizer in {path}")
    tok.eos_token = eos
    return True


def ensure_pad_token(
    tok: PreTrainedTokenizerBase, *, where: str = "the tokenizer", allow_new_pad: bool = False
) -> bool:
    """Give `tok` a pad token distinct from eos, in place; True when a new token was added."""
    if tok.pad_token is not None and tok.pad_token != tok.eos_token:
        return False
    problem = "no pad token" if tok.pad_token is None else f"pad token {tok.pad_token!r} equal to eos"
    spare = unused_special_token(tok)
    if spare is not None:
        tok.pad_token = spare
        logger.warning(
            "%s has %s; using the unused special token %r (id %d) as pad",
            where,
            problem,
            spare,
            tok.pad_token_id,
        )
        return False
    if not allow_new_pad:
        raise ChatforgeError(
            f"{where} has {problem} and no unused special token to pad with; allow adding {NEW_PAD!r} "
            "(the model's embeddings must then be resized to the new vocabulary size) or add a pad token"
        )
    tok.add_special_tokens({"pad_token": NEW_PAD})
    logger.warning(
        "%s has %s; added %r as pad (id %d): resize the model's embeddings to len(tokenizer)=%d",
        where,
        problem,
        NEW_PAD,
        tok.pad_token_id,
        len(tok),
    )
    return True


def unused_special_token(tok: PreTrainedTokenizerBase) -> str | None:
    """A special token that nothing else uses and can serve as pad, or None."""
    vocab = tok.get_vocab()
    taken = {tok.bos_token, tok.eos_token, tok.unk_token} - {None}
    for name in PAD_NAMES:
        if name in vocab and name not in taken:
            return name
    templates = (
        tok.chat_template if isinstance(tok.chat_template, dict) else {"default": tok.chat_template or ""}
    )
    template_text = "\n".join(t for t in templates.values() if t)
    for _, added in sorted(tok.added_tokens_decoder.items()):
        if added.special and added.content not in taken and added.content not in template_text:
            return added.content
    return None
