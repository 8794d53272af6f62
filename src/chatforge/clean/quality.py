"""A quality classifier trained on the pipeline's own labels (the seed's "quality assessment model").

Positives are the documents a cleaning run kept; negatives the ones its content filters dropped
(document and line filters, sensitive content: text already extracted, so the classifier learns
from text, not from HTML). Features are hashed word unigrams and bigrams (2^18 buckets, counts
log-scaled); the model is logistic regression (a torch `EmbeddingBag` sum plus a bias), trained
with AdamW on the balanced log-loss. As a step (`quality.model`), it labels each document with
`quality` = P(kept) and, in drop mode, drops those under `quality.min_score`.

    python -m chatforge.clean.quality runs/clean/world_pages runs/quality.pt
"""

from __future__ import annotations

import argparse
import json
import re
import zlib
from pathlib import Path

import torch
from datatrove.data import Document

from chatforge.clean.judge import Check, labels

BUCKETS = 1 << 18
CONTENT_STEPS = ("doc_filters", "line_filters", "sensitive")
_WORD = re.compile(r"\w+")


def features(text: str) -> list[int]:
    words = _WORD.findall(text.lower())
    grams = words + [f"{a} {b}" for a, b in zip(words, words[1:])]
    return [zlib.crc32(g.encode("utf-8")) % BUCKETS for g in grams] or [0]


class QualityModel(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weights = torch.nn.EmbeddingBag(BUCKETS, 1, mode="mean")
        torch.nn.init.zeros_(self.weights.weight)
        self.bias = torch.nn.Parameter(torch.zeros(1))

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return self.weights(ids, offsets).squeeze(-1) + self.bias

    def score(self, texts: list[str]) -> list[float]:
        ids, offsets = _batch(texts)
        with torch.no_grad():
            return torch.sigmoid(self(ids, offsets)).tolist()


def _batch(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    feats = [features(t) for t in texts]
    offsets = torch.tensor([0] + [len(f) for f in feats[:-1]]).cumsum(0)
    return torch.tensor([i for f in feats for i in f]), offsets


def train(good: list[str], bad: list[str], epochs: int = 30, lr: float = 0.5, seed: int = 0) -> QualityModel:
    """Full-batch logistic regression; each class weighs half of the loss whatever its size."""
    if not good or not bad:
        raise ValueError(f"need documents of both classes (kept {len(good)}, dropped {len(bad)})")
    torch.manual_seed(seed)
    model = QualityModel()
    ids, offsets = _batch(good + bad)
    target = torch.tensor([1.0] * len(good) + [0.0] * len(bad))
    weight = torch.tensor([0.5 / len(good)] * len(good) + [0.5 / len(bad)] * len(bad))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    for _ in range(epochs):
        optimizer.zero_grad()
        loss = (torch.nn.functional.binary_cross_entropy_with_logits(model(ids, offsets), target, reduction="none") * weight).sum()
        loss.backward()
        optimizer.step()
    return model


def training_texts(run_dir: Path) -> tuple[list[str], list[str]]:
    """(kept texts, texts dropped by a content filter) of a finished `chatforge clean` run."""
    good = [json.loads(line)["text"] for f in sorted((run_dir / "data").rglob("*.jsonl")) for line in f.open(encoding="utf-8")]
    bad = [r["text"] for f in sorted((run_dir / "dropped").glob("*.jsonl")) for r in map(json.loads, f.open(encoding="utf-8"))
           if r.get("dropped_at") in CONTENT_STEPS]
    return good, bad


def save(model: QualityModel, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"buckets": BUCKETS, "state": model.state_dict()}, path)


def load(path: str | Path) -> QualityModel:
    saved = torch.load(path, weights_only=True)
    if saved["buckets"] != BUCKETS:
        raise ValueError(f"{path}: a classifier over {saved['buckets']} buckets, this code uses {BUCKETS}")
    model = QualityModel()
    model.load_state_dict(saved["state"])
    return model.eval()


class QualityScorer:
    """The check: loads the classifier in the worker on first use."""

    def __init__(self, path: str, min_score: float):
        self.path, self.min_score, self._model = path, min_score, None

    def __getstate__(self) -> dict:
        return {"path": self.path, "min_score": self.min_score, "_model": None}

    def __call__(self, doc: Document) -> str | None:
        if self._model is None:
            self._model = load(self.path)
        score = round(self._model.score([doc.text])[0], 4)
        labels(doc)["quality"] = score
        return "low_quality" if score < self.min_score else None


def quality_checks(path: str | None, min_score: float) -> list[Check]:
    return [QualityScorer(path, min_score)] if path else []


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="train the quality classifier on a clean run's labels")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args(argv)
    good, bad = training_texts(args.run_dir)
    model = train(good, bad, epochs=args.epochs)
    save(model, args.out)
    scores_good, scores_bad = model.score(good), model.score(bad)
    accuracy = (sum(s >= 0.5 for s in scores_good) + sum(s < 0.5 for s in scores_bad)) / (len(good) + len(bad))
    print(json.dumps({"kept": len(good), "dropped": len(bad), "train_accuracy": round(accuracy, 4), "out": str(args.out)}))


if __name__ == "__main__":
    main()
