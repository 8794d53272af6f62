"""Step 6: perplexity under a chatforge-trained model.

Each shard scores its documents (the label `ppl`, and `bpb`); the band is cut in the final phase,
where every document's score is known, so the percentiles are those of the whole corpus, not of
one shard. Very low perplexity flags repeated or templated text, very high flags garbage.
"""

from __future__ import annotations

from datatrove.data import Document

from chatforge.clean.config import PerplexityConfig
from chatforge.clean.judge import Check, labels


class PerplexityScorer:
    """Loads the model on first use (inside the worker process, not in the parent)."""

    def __init__(self, cfg: PerplexityConfig):
        self.cfg = cfg
        self._model = None
        self._tokenizer = None

    def __getstate__(self) -> dict:
        return {"cfg": self.cfg, "_model": None, "_tokenizer": None}

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        from chatforge.tokenizer.load import load_tokenizer

        torch.set_num_threads(1)
        self._tokenizer = load_tokenizer(self.cfg.model)
        self._model = AutoModelForCausalLM.from_pretrained(self.cfg.model).eval()

    def __call__(self, doc: Document) -> None:
        from chatforge.models.logprobs import score_texts

        if self._model is None:
            self._load()
        scored = score_texts(self._model, self._tokenizer, [doc.text[: self.cfg.max_chars]], self.cfg.max_len,
                             self.cfg.max_len // 2)
        labels(doc).update(ppl=round(scored["ppl"], 4), bpb=round(scored["bpb"], 5))
        return None


def perplexity_checks(cfg: PerplexityConfig) -> list[Check]:
    return [PerplexityScorer(cfg)] if cfg.enabled else []
