"""Grow a model's embeddings for an extended tokenizer, initialise the new rows, and train only them.

`resize_for_new_tokens` resizes the input embedding (and an untied LM head) with transformers'
`resize_token_embeddings`, then sets each new row to the mean of the old rows of the old-tokenizer
pieces of that token's string: a new token `" colour"` that the old tokenizer split into
`" co" + "lour"` starts as the average of those two rows (in both the input and the output matrix),
so the model's first guess about it is what it already knew about its pieces.

`freeze_old_rows` keeps the old rows bit-identical while the new ones train. It masks gradients
with a hook on the embedding weight (and on an untied head's weight; a tied head shares the one
tensor, hence one hook) that zeroes rows `< num_old`. With zero gradients, AdamW's moments for those
rows stay exactly 0 and its update there is exactly 0 (`x + -lr * 0 / (0 + eps) == x`), with or
without clipping. Decoupled weight decay is the catch: AdamW multiplies the *whole* tensor by
`1 - lr * weight_decay` whatever the gradient, so old rows would shrink. The masked tensors are
therefore put in a group with `weight_decay=0` (`FrozenRows.param_groups`), and
`FrozenRows.check_optimizer` refuses an optimizer that decays them. Chosen over the alternatives:
restoring old rows after each step needs a second copy of them and a hook on every optimizer, and
a separate new-rows parameter changes the module tree, breaks weight tying and the saved state-dict
names. The cost: the new rows get no weight decay either, as the engine already does for
embeddings (`chatforge.engine.optim.parameter_groups`).

Old rows stay bit-identical only while nothing else writes to them: not an optimizer state loaded
from a run that trained them (their moments would not be 0), not FSDP (the hook sees row shards).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from pydantic import Field

from chatforge.config.base import StrictModel
from chatforge.errors import ChatforgeError, ConfigError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def check_vocab(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, where: str = "the model") -> int:
    """The model's embedding row count; `ChatforgeError` when the tokenizer has ids beyond it.

    More rows than tokens is allowed (vocabularies padded to a multiple of 64 are common).
    """
    rows = model.get_input_embeddings().num_embeddings
    if rows < len(tokenizer):
        raise ChatforgeError(
            f"{where} has {rows} embedding rows but the tokenizer has {len(tokenizer)} tokens: "
            "they do not belong together (give the tokenizer the model was trained with)"
        )
    return rows


def resize_for_new_tokens(
    model: torch.nn.Module, old_tokenizer: PreTrainedTokenizerBase, new_tokenizer: PreTrainedTokenizerBase
) -> dict[int, list[int]]:
    """Resize `model` to hold `new_tokenizer`'s ids and initialise the rows of ids `len(old)..len(new)-1`.

    Each new row (input embedding, and LM head when untied, its bias too if any) is the mean of the
    old rows listed in the returned `{new_id: old_piece_ids}`, computed in float32. Rows that already
    existed (a padded vocabulary) are reused rather than added. Raises `ChatforgeError` when the
    model does not fit `old_tokenizer` or `new_tokenizer` does not extend it (same string per old id).
    """
    num_old, num_new = len(old_tokenizer), len(new_tokenizer)
    rows = check_vocab(model, old_tokenizer)
    old_tokens = old_tokenizer.convert_ids_to_tokens(list(range(num_old)))
    kept = new_tokenizer.convert_ids_to_tokens(list(range(num_old)))
    for i, (a, b) in enumerate(zip(old_tokens, kept)):
        if a != b:
            raise ChatforgeError(
                f"the new tokenizer does not extend the old one: id {i} is {a!r} in the old and {b!r} in the new"
            )
    pieces = {i: old_piece_ids(old_tokenizer, new_tokenizer, i) for i in range(num_old, num_new)}

    tied = _is_tied(model)
    model.resize_token_embeddings(max(rows, num_new), mean_resizing=False)
    if tied and not _is_tied(model):
        raise RuntimeError("resize_token_embeddings untied the input and output embeddings")
    with torch.no_grad():
        for weight in embedding_weights(model):
            everything = weight[:num_old].float().mean(0)
            for i, ids in pieces.items():
                mean = weight[ids].float().mean(0) if ids else everything
                weight[i] = mean.to(weight.dtype)
    return pieces


def old_piece_ids(old: PreTrainedTokenizerBase, new: PreTrainedTokenizerBase, token_id: int) -> list[int]:
    """The old tokenizer's ids for new token `token_id`'s string.

    A token of a BPE model is split by the old BPE model itself (its vocabulary string may be part
    of a UTF-8 character, which decoding would lose); an added token's content is encoded as text.
    """
    token = new.convert_ids_to_tokens(token_id)
    backend = getattr(old, "backend_tokenizer", None)
    is_bpe = backend is not None and type(backend.model).__name__ == "BPE"
    if is_bpe and token_id not in new.added_tokens_decoder:
        return [piece.id for piece in backend.model.tokenize(token)]
    return old(new.decode([token_id]), add_special_tokens=False)["input_ids"]


def _is_tied(model: torch.nn.Module) -> bool:
    head = model.get_output_embeddings()
    return head is not None and head.weight is model.get_input_embeddings().weight


def embedding_weights(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters with a row per token: the input embedding and, when untied, the LM head (and its bias)."""
    weights = [model.get_input_embeddings().weight]
    head = model.get_output_embeddings()
    if head is not None and head.weight is not weights[0]:
        weights.append(head.weight)
        if getattr(head, "bias", None) is not None:
            weights.append(head.bias)
    return weights


def train_only_embeddings(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """Set `requires_grad=False` on every parameter but the embedding weights; return those."""
    keep = {id(p) for p in embedding_weights(model)}
    for param in model.parameters():
        param.requires_grad_(id(param) in keep)
    return embedding_weights(model)


@dataclass
class FrozenRows:
    """The gradient masks `freeze_old_rows` installed; build the optimizer with `param_groups`."""

    num_old: int
    params: list[torch.nn.Parameter]
    handles: list = field(default_factory=list)

    def param_groups(self, model: torch.nn.Module, weight_decay: float) -> list[dict]:
        """The engine's AdamW groups for `model`, with the masked weights moved to `weight_decay=0`."""
        from chatforge.engine.optim import parameter_groups

        masked = {id(p) for p in self.params}
        groups = []
        for group in parameter_groups(model, weight_decay):
            rest = [p for p in group["params"] if id(p) not in masked]
            if rest:
                groups.append({**group, "params": rest})
        frozen = [p for p in self.params if p.requires_grad]
        if frozen:
            groups.append({"params": frozen, "weight_decay": 0.0})
        return groups

    def check_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """`ChatforgeError` when `optimizer` would decay a masked weight (and so change old rows)."""
        masked = {id(p) for p in self.params}
        for group in optimizer.param_groups:
            if group.get("weight_decay", 0.0) and any(id(p) in masked for p in group["params"]):
                raise ChatforgeError(
                    f"the optimizer applies weight_decay={group['weight_decay']} to an embedding whose old "
                    "rows are frozen; decoupled decay would change them: build groups with FrozenRows.param_groups"
                )

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


def freeze_old_rows(model: torch.nn.Module, num_old: int) -> FrozenRows:
    """Zero the gradient of embedding (and untied head) rows `< num_old` from now on."""
    params = embedding_weights(model)
    rows = params[0].shape[0]
    if not 0 < num_old <= rows:
        raise ChatforgeError(f"num_old={num_old} must be between 1 and the {rows} embedding rows")

    def mask(grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        grad[:num_old] = 0
        return grad

    return FrozenRows(num_old, params, [p.register_hook(mask) for p in params])


class NewRowsConfig(StrictModel):
    """Train only the embedding rows an extended tokenizer added (a stage's `new_rows:` section)."""

    old_vocab_size: int | None = Field(
        None, gt=0,
        description="rows below this id stay bit-identical; default: vocab_size_before in the model dir's extend_report.json",
    )
    freeze_rest: bool = Field(True, description="also freeze every non-embedding parameter (train the new rows alone)")


def old_vocab_size_of(model_dir: str | Path | None, configured: int | None) -> int:
    """`configured`, else `vocab_size_before` from `chatforge tokenizer extend`'s report beside the model."""
    if configured is not None:
        return configured
    report = Path(model_dir) / "extend_report.json" if model_dir else None
    if report is None or not report.is_file():
        raise ConfigError(
            f"new_rows.old_vocab_size is not set and {report or 'the model directory'} does not exist: give the size "
            "of the tokenizer before extension, or start from the directory `chatforge tokenizer extend model=...` wrote"
        )
    try:
        return int(json.loads(report.read_text(encoding="utf-8"))["vocab_size_before"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{report}: no usable vocab_size_before ({exc})") from exc


def train_new_rows(model: torch.nn.Module, cfg: NewRowsConfig, model_dir: str | Path | None) -> FrozenRows:
    """Mask the gradients of old rows (and freeze the rest when `cfg.freeze_rest`); build the optimizer
    with the returned `FrozenRows.param_groups` and check it with `check_optimizer`."""
    num_old = old_vocab_size_of(model_dir, cfg.old_vocab_size)
    if cfg.freeze_rest:
        train_only_embeddings(model)
    return freeze_old_rows(model, num_old)
