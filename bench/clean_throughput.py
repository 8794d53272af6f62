"""Documents per second of `chatforge clean` with 1 and 2 workers, against the same steps run as a
plain datatrove pipeline without chatforge's layer.

Both run the same checks (py3langid, URL rules, trafilatura, datatrove's Gopher and C4 filters,
sensitive rules) on the same pages with datatrove's LocalPipelineExecutor. The plain pipeline is
a reader function -> one LambdaFilter per check -> a writer function. chatforge's layer adds its
reader (malformed-record handling, sharding by record), the Judge wrapper (counts, examples, labels),
the side output of every dropped document, the shard writer and the second phase (ordering, report,
output shards). Dedup is off in both (plain datatrove has no single-pass equivalent).

    python bench/clean_throughput.py --pages runs/clean/world/web/pages.jsonl --copies 3 --repeats 2

Each configuration runs `--repeats` times; the best (least disturbed) wall time counts.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path


def chatforge_run(pages: Path, out: Path, workers: int, blocklist: Path | None) -> tuple[float, int]:
    from chatforge.clean.config import Config
    from chatforge.stages.clean import run

    cfg = Config.model_validate({
        "out": str(out), "workers": workers,
        "inputs": [{"path": str(pages), "text_field": "html"}],
        "url": {"blocklist_files": [str(blocklist)] if blocklist else []},
        "line_filters": {"min_sentences": 1}, "dedup": {"exact": False, "near": False},
    })
    started = time.perf_counter()
    summary = run(cfg)
    return time.perf_counter() - started, summary["records_read"]


def plain_datatrove_run(pages: Path, out: Path, workers: int, blocklist: Path | None) -> tuple[float, int]:
    from datatrove.data import Document
    from datatrove.executor.local import LocalPipelineExecutor
    from datatrove.pipeline.filters import LambdaFilter

    from chatforge.clean.config import (
        DocFilterConfig,
        ExtractConfig,
        LangIdConfig,
        LineFilterConfig,
        UrlConfig,
    )
    from chatforge.clean.steps import (
        doc_filter_checks,
        extract_checks,
        langid_checks,
        line_filter_checks,
        url_checks,
    )

    # datatrove's JsonlReader/JsonlWriter need orjson, which chatforge does not ship; plain function
    # steps (datatrove's own contract) read and write the same lines with the json module.
    def read(data, rank: int = 0, world_size: int = 1):
        with pages.open(encoding="utf-8") as fh:
            for number, line in enumerate(fh):
                if number % world_size == rank:
                    record = json.loads(line)
                    yield Document(text=record["html"], id=str(number),
                                   metadata={"url": record.get("url"), "content": "html"})

    def write(data, rank: int = 0, world_size: int = 1):
        (out / "data").mkdir(parents=True, exist_ok=True)
        with (out / "data" / f"{rank:05d}.jsonl").open("w", encoding="utf-8") as fh:
            for doc in data:
                fh.write(json.dumps({"id": doc.id, "text": doc.text, "metadata": doc.metadata}) + "\n")
        return
        yield

    checks = [
        *langid_checks(LangIdConfig()),
        *url_checks(UrlConfig(blocklist_files=[str(blocklist)] if blocklist else [])),
        *extract_checks(ExtractConfig()),
        *doc_filter_checks(DocFilterConfig()),
        *line_filter_checks(LineFilterConfig(min_sentences=1)),
    ]
    pipeline = [read, *(LambdaFilter(lambda doc, check=check: check(doc) is None) for check in checks), write]
    executor = LocalPipelineExecutor(pipeline=pipeline, tasks=workers, workers=workers, logging_dir=str(out / "logs"),
                                     start_method="fork")
    started = time.perf_counter()
    executor.run()
    elapsed = time.perf_counter() - started
    return elapsed, sum(1 for _ in pages.open())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=Path, default=Path("runs/clean/world/web/pages.jsonl"))
    parser.add_argument("--blocklist", type=Path, default=None, help="default: blocklist.txt beside the pages")
    parser.add_argument("--copies", type=int, default=3, help="the pages repeated this many times (as separate shards' worth)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()
    blocklist = args.blocklist or (args.pages.parent / "blocklist.txt")
    blocklist = blocklist if blocklist.exists() else None
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "pages.jsonl"
        lines = args.pages.read_text().splitlines()
        corpus.write_text("".join(line + "\n" for _ in range(args.copies) for line in lines))
        results = {}
        for name, fn in (("chatforge", chatforge_run), ("datatrove", plain_datatrove_run)):
            for workers in (1, 2):
                best, docs = float("inf"), 0
                for r in range(args.repeats):
                    out = Path(tmp) / f"{name}-{workers}-{r}"
                    seconds, docs = fn(corpus, out, workers, blocklist)
                    best = min(best, seconds)
                    shutil.rmtree(out, ignore_errors=True)
                results[f"{name}_{workers}w"] = {"docs": docs, "seconds": round(best, 2), "docs_per_s": round(docs / best, 1)}
    for workers in (1, 2):
        ours, plain = results[f"chatforge_{workers}w"], results[f"datatrove_{workers}w"]
        results[f"layer_cost_{workers}w"] = round(ours["seconds"] / plain["seconds"] - 1, 4)
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
