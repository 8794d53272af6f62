"""The reward model: a causal LM directory loaded as `AutoModelForSequenceClassification(num_labels=1)`.

`transformers` keeps the decoder's weights, drops the LM head and creates a fresh `score` head
(hidden -> 1, no bias). Its forward reads the score at the last token that is not `config.pad_token_id`
(rows are right padded), so the pad id is copied from the tokenizer. Packed rows (several responses
per row, position ids restarting at each) are read through the same forward at each response's last
non-pad token (`rewards_of`); `check_packed_rewards` proves on the actual model that they stay apart. The export is a plain
`save_pretrained` directory plus the tokenizer with its chat template: what
`chatforge.scoring.reward_model` (and any `AutoModelForSequenceClassification` user) loads.

Modes: `full` trains everything; `lora` puts adapters on the decoder (`task_type="SEQ_CLS"`) and trains
the new `score` head in full (`modules_to_save=["score"]`: a fresh head cannot be low-rank adapted);
the export merges the adapters and unwraps the head copy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

from chatforge.errors import ConfigError
from chatforge.models.logprobs import attention_kind
from chatforge.sft.modes import LoraSettings, apply_mode, export_model

RMMode = Literal["full", "lora"]


def load_reward_model(path: str, tokenizer) -> torch.nn.Module:
    import transformers
    from transformers import AutoModelForSequenceClassification

    if not Path(path).is_dir():
        raise ConfigError(f"model directory not found: {path}")
    level = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # "score.weight newly initialized" is the point here
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=1, trust_remote_code=False, dtype=torch.float32
        )
    except (OSError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"cannot load {path} as a sequence classifier: {first}") from None
    finally:
        transformers.logging.set_verbosity(level)
    if model.config.num_labels != 1:
        raise ConfigError(f"{path} is a classifier with num_labels={model.config.num_labels}; a reward model has 1")
    vocab = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > vocab:
        raise ConfigError(f"the tokenizer has {len(tokenizer)} tokens but the model's embedding only {vocab}")
    model.config.pad_token_id = tokenizer.pad_token_id  # the head reads the last token that is not pad
    model.config.problem_type = "regression"  # one real-valued output, not a 1-class softmax
    return model


def apply_rm_mode(model: torch.nn.Module, mode: RMMode, lora: LoraSettings) -> torch.nn.Module:
    """The reward model to train: every weight (full) or LoRA adapters plus a fully trained score head."""
    if mode not in ("full", "lora"):
        raise ConfigError(f"mode must be full or lora, not {mode!r}")
    return apply_mode(model, mode, lora, task_type="SEQ_CLS")


def export_reward_model(model: torch.nn.Module, mode: RMMode, out_dir: Path, tokenizer, adapter_dir: Path | None = None) -> None:
    """`out_dir` as a plain `AutoModelForSequenceClassification` (LoRA merged) with the tokenizer."""
    export_model(model, mode, out_dir, tokenizer, adapter_dir)


def rewards_of(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(N,) rewards of the batch's responses: ONE forward over every response of every group, in
    padded rows (`attention_mask`) or packed rows (`position_ids`; see `chatforge.rm.data.collate`)."""
    if "position_ids" not in batch:
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
        return out.logits[:, 0].float()
    # The classifier pools ONE score per row (at its last non-pad token), but a packed row holds several
    # responses: take the head's score at every position and read each response's at `reward_index`.
    # The forward still goes through `model` itself, so DDP/FSDP and peft wrappers do their part.
    scores = []
    handle = score_head(model).register_forward_hook(lambda module, args, output: scores.append(output))
    input_ids, positions, mask = batch["input_ids"], batch["position_ids"], None
    if "segment_ids" in batch:
        mask = shared_prefix_mask(model, batch["segment_ids"], batch["branch_ids"])
    elif attention_kind(model).startswith("flash_attention") and input_ids.shape[0] > 1:
        # FlashAttention separates packed sequences only in a batch of one row (chatforge.data.packing);
        # every row starts at position 0, so the rows laid end to end stay apart.
        input_ids, positions = input_ids.reshape(1, -1), positions.reshape(1, -1)
    try:
        # Without a mask, transformers builds the block-diagonal causal mask from the restarting
        # position ids (use_cache=False, else it skips that).
        model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=False)
    finally:
        handle.remove()
    return scores[-1].reshape(-1)[batch["reward_index"]].float()


def shared_prefix_mask(model: torch.nn.Module, segment_ids: torch.Tensor, branch_ids: torch.Tensor) -> torch.Tensor:
    """(R, 1, W, W) attention mask of `rm.data.pack_groups(share_prefix=True)` rows: a token sees the
    earlier tokens of its unit that are in the shared prefix (branch 0) or in its own response.
    Boolean (True = attend) for SDPA, additive (0 / dtype min) for eager attention."""
    kind = attention_kind(model)
    if kind not in ("sdpa", "eager"):
        raise ConfigError(f"data.packing=shared_prefix needs sdpa or eager attention, not {kind!r}; use data.packing=pack")
    width = segment_ids.shape[1]
    causal = torch.ones(width, width, dtype=torch.bool, device=segment_ids.device).tril()
    same_unit = segment_ids[:, :, None] == segment_ids[:, None, :]
    visible = (branch_ids[:, None, :] == 0) | (branch_ids[:, :, None] == branch_ids[:, None, :])
    mask = (causal & same_unit & visible)[:, None]
    if kind == "sdpa":
        return mask
    dtype = model.get_input_embeddings().weight.dtype
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)


def score_head(model: torch.nn.Module) -> torch.nn.Module:
    """The `score` head (hidden -> 1) under DDP, torch.compile and peft wrappers."""
    from chatforge.engine.distributed import unwrap

    base = unwrap(model)
    if hasattr(base, "get_base_model"):  # peft: the head is its `modules_to_save` wrapper
        base = base.get_base_model()
    head = getattr(base, "score", None)
    if not isinstance(head, torch.nn.Module):
        raise ConfigError(f"{type(base).__name__} has no `score` head to read packed rewards from; use data.packing=pad")
    return head


@torch.no_grad()
def check_packed_rewards(model: torch.nn.Module, pad_id: int, share_prefix: bool, tolerance: float = 1e-3) -> float:
    """Raise ConfigError unless responses packed into rows (`rm.data.pack_groups`) get the rewards they
    get alone, each in its own unpadded forward.

    Models whose attention ignores restarted position ids (ALiBi ones such as Falcon build their bias
    from the attention mask) would let packed responses see each other. Returns the largest absolute
    reward difference (a few 1e-7 when isolation holds).
    """
    from chatforge.rm.data import pack_groups

    device = next(model.parameters()).device
    vocab = model.get_input_embeddings().weight.shape[0]
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, vocab, (40,), generator=generator)
    tokens[tokens == pad_id] = (pad_id + 1) % vocab
    ids = tokens.tolist()
    # a pair sharing 4 tokens (7 and 9 tokens), then single responses of 5, 4 and 2 tokens: rows of 9
    # (pack: 9 | 7+2 | 5+4) or 12 (shared_prefix: the pair's 4+3+5 | 5+4+2) put units side by side
    groups = [[ids[:7], ids[:4] + ids[7:12]], [ids[12:17]], [ids[17:21]], [ids[21:23]]]
    packed = {k: v.to(device) for k, v in pack_groups(groups, pad_id, share_prefix).items()}
    was_training = model.training
    model.eval()
    try:
        together = rewards_of(model, packed)
        alone = torch.cat([
            rewards_of(model, {"input_ids": torch.tensor([seq], device=device),
                               "attention_mask": torch.ones(1, len(seq), dtype=torch.long, device=device)})
            for group in groups for seq in group
        ])
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"data.packing: {type(model).__name__} failed on packed rows ({exc}); use data.packing=pad") from None
    finally:
        model.train(was_training)
    gap = (together - alone).abs().max().item()
    if not gap <= tolerance * max(1.0, alone.abs().max().item()):
        raise ConfigError(
            f"data.packing: {type(model).__name__} lets packed responses attend to each other (a packed "
            f"response's reward differs from its reward alone by {gap:.3g}); use data.packing=pad"
        )
    return gap
