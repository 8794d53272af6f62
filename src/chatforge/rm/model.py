"""The reward model: a causal LM directory loaded as `AutoModelForSequenceClassification(num_labels=1)`.

`transformers` keeps the decoder's weights, drops the LM head and creates a fresh `score` head
(hidden -> 1, no bias). Its forward reads the score at the last token that is not `config.pad_token_id`
(rows are right padded), so the pad id is copied from the tokenizer. The export is a plain
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
from chatforge.sft.modes import LoraSettings

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
    if mode == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    if mode == "lora":
        from peft import LoraConfig, get_peft_model

        present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
        missing = [t for t in lora.target_modules if t not in present]
        if missing:
            raise ConfigError(f"lora.target_modules {missing} are not modules of {type(model).__name__}")
        config = LoraConfig(
            task_type="SEQ_CLS", r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules), modules_to_save=["score"],
        )
        return get_peft_model(model, config)
    raise ConfigError(f"mode must be full or lora, not {mode!r}")


def export_reward_model(model: torch.nn.Module, mode: RMMode, out_dir: Path, tokenizer, adapter_dir: Path | None = None) -> None:
    """`out_dir` as a plain `AutoModelForSequenceClassification` (LoRA merged) with the tokenizer."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if mode == "lora":
        if adapter_dir is not None:
            model.save_pretrained(adapter_dir)
        model = model.merge_and_unload()
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def rewards_of(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(N,) rewards of the batch's rows: ONE forward over every response of every group."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
    return out.logits[:, 0].float()
