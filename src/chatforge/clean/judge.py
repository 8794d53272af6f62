"""chatforge's layer over datatrove's steps: a verdict per document, counted, labelled or dropped.

A check is a plain function `check(doc) -> reason | None` (None keeps the document; it may also
write labels into `doc.metadata["labels"]` or change `doc.text`). `Judge` runs one or more checks
as one datatrove `PipelineStep`:
  - every document is counted as seen by the step;
  - in `drop` mode a failing document leaves the stream and goes, whole, to the ledger's side output
    with the step and the reason;
  - in `label` mode it stays, with `verdicts[step] = reason` ("ok" when it passed), so a later
    selection step can decide by label instead.
`datatrove_check` turns any datatrove `BaseFilter` into a check, so its rules are reused as they are.
"""

from __future__ import annotations

from collections.abc import Callable

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.filters.base_filter import BaseFilter, get_filter_result

from chatforge.clean.ledger import Ledger

Check = Callable[[Document], "str | None"]


def labels(doc: Document) -> dict:
    return doc.metadata.setdefault("labels", {})


def datatrove_check(filter_step: BaseFilter) -> Check:
    """A datatrove filter as a check: its `filter(doc)` verdict, its reason (or its name) when it drops."""

    def check(doc: Document) -> str | None:
        keep, reason = get_filter_result(filter_step.filter(doc))
        return None if keep else (reason or filter_step.name)

    check.__name__ = type(filter_step).__name__
    return check


class Judge(PipelineStep):
    type = "chatforge"

    def __init__(self, step: str, checks: list[Check], ledger: Ledger, mode: str = "drop"):
        super().__init__()
        if mode not in ("drop", "label"):
            raise ValueError(f"mode must be drop or label, not {mode!r}")
        self.name = step
        self.step = step
        self.checks = checks
        self.ledger = ledger
        self.mode = mode

    def verdict(self, doc: Document) -> str | None:
        for check in self.checks:
            reason = check(doc)
            if reason is not None:
                return reason
        return None

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            self.ledger.seen(self.step)
            self.stat_update("seen")
            with self.track_time():
                try:
                    reason = self.verdict(doc)
                except Exception as exc:  # one hostile document must not end the shard
                    reason, detail = "error", f"{type(exc).__name__}: {exc}"
                else:
                    detail = ""
            if reason is None:
                doc.metadata.setdefault("verdicts", {})[self.step] = "ok"
            elif self.mode == "label" and reason != "error":
                doc.metadata.setdefault("verdicts", {})[self.step] = reason
            else:
                self.stat_update(f"dropped_{reason}")
                self.ledger.drop(self.step, reason, doc, detail)
                continue
            self.ledger.kept(self.step)
            yield doc
