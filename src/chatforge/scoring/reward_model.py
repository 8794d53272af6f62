"""A reward model as a scorer: a Hugging Face `AutoModelForSequenceClassification` with `num_labels=1`.

Each pair is rendered by the tokenizer's chat template as the whole conversation: the prompt's
messages plus `{"role": "assistant", "content": response}` (the assistant turn closed as the template
closes it). Pairs are right padded with the model's `pad_token_id` and run in batches; the score is
the model's logit, which `transformers` takes at the last token that is not the pad id (so a
conversation that itself ends with the pad id is scored at the token before it, as it was in training).
A pair longer than `max_length` keeps its last `max_length` tokens (the response and its end).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from chatforge.data.padding import pad_sequences
from chatforge.errors import ConfigError
from chatforge.scoring.base import Prompt, check_pairs, prompt_messages
from chatforge.scoring.config import RewardModelScorerConfig

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class RewardModelScorer:
    def __init__(self, cfg: RewardModelScorerConfig):
        from transformers import AutoModelForSequenceClassification

        from chatforge.tokenizer.load import load_tokenizer

        if not Path(cfg.path).is_dir():
            raise ConfigError(f"scorer reward_model: model directory not found: {cfg.path}")
        self.tokenizer = load_tokenizer(cfg.tokenizer or cfg.path)
        if not getattr(self.tokenizer, "chat_template", None):
            raise ConfigError(f"scorer reward_model: the tokenizer of {cfg.tokenizer or cfg.path} has no chat template")
        try:
            model = AutoModelForSequenceClassification.from_pretrained(
                cfg.path, trust_remote_code=False, dtype=DTYPES[cfg.dtype]
            )
        except (OSError, ValueError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ConfigError(f"scorer reward_model: cannot load {cfg.path} as a sequence classifier: {first}") from None
        if model.config.num_labels != 1:
            raise ConfigError(f"scorer reward_model: {cfg.path} has num_labels={model.config.num_labels}; a reward model has 1")
        if model.config.pad_token_id is None:
            model.config.pad_token_id = self.tokenizer.pad_token_id  # needed to find each row's last token
        device = cfg.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.batch_size = cfg.batch_size
        self.max_length = cfg.max_length or getattr(model.config, "max_position_embeddings", None)
        self.truncated = 0  # pairs cut to max_length so far

    def encode(self, prompt: Prompt, response: str) -> list[int]:
        messages = [*prompt_messages(prompt), {"role": "assistant", "content": response}]
        ids = list(self.tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False))
        if self.max_length is not None and len(ids) > self.max_length:
            self.truncated += 1
            ids = ids[-self.max_length :]
        return ids

    @torch.inference_mode()
    def score(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[float]:
        check_pairs(prompts, responses)
        encoded = [self.encode(p, r) for p, r in zip(prompts, responses)]
        pad = self.model.config.pad_token_id
        out: list[float] = []
        for begin in range(0, len(encoded), self.batch_size):
            input_ids, mask = pad_sequences(encoded[begin : begin + self.batch_size], pad, "right")
            logits = self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device)).logits
            out += logits[:, 0].float().tolist()
        return out
