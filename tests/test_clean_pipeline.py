"""`chatforge clean` end to end: malformed inputs never crash a run and are kept aside, 2 workers
give the same corpus as 1, shards resume, pretrain reads the output, decontamination, the Slurm
path, and the task world's pages scored against their ground truth."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chatforge.clean.config import Config
from chatforge.stages.clean import run

PROSE = [
    "The river runs through the old town and past the mill. It is wide and slow in the summer, and the children "
    "of the town swim in it when the water is warm. In the winter it freezes at the edges, and the ice is thick "
    "enough to walk on for a few weeks. The mill has stood on its bank for two hundred years.",
    "A lighthouse stands at the end of the long pier, and its lamp has been turned by the same family for four "
    "generations. The keeper climbs the stairs every evening at dusk. Ships that pass the point at night still "
    "look for its light, although they have maps and radios now. The tower was painted white and red last year.",
    "The market opens early on Saturdays, when the farmers bring their vegetables, cheese and bread from the "
    "hills. By nine o'clock the square is full of people, and the baker has usually sold all of his loaves. "
    "In the afternoon the stalls are packed away and the square is quiet again until the next week comes round.",
    "Bees collect nectar from the flowers in the orchard and carry it back to the hive, where it is turned into "
    "honey. A strong colony can hold tens of thousands of workers in the middle of the summer. The beekeeper "
    "checks the frames every week and takes the honey in the autumn, leaving enough for the bees to eat.",
]


def page(title: str, text: str) -> str:
    return (f"<html><head><title>{title}</title></head><body><nav><a href='/'>Home</a> <a href='/shop'>Shop</a></nav>"
            f"<div class='cookie'>We use cookies.</div><main><h1>{title}</h1><p>{text}</p></main>"
            "<footer>All rights reserved.</footer></body></html>")


def write_jsonl(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def base_config(tmp_path: Path, inputs: list[dict], **extra) -> Config:
    return Config.model_validate({"out": str(tmp_path / "run"), "inputs": inputs,
                                  "line_filters": {"min_sentences": 1}, **extra})


def kept_ids(out: Path) -> list[str]:
    return [json.loads(line)["id"] for f in sorted((out / "data").glob("*.jsonl")) for line in f.read_text().splitlines()]


def dropped(out: Path) -> list[dict]:
    return [json.loads(line) for f in sorted((out / "dropped").glob("*.jsonl")) for line in f.read_text().splitlines()]


@pytest.fixture
def mixed_jsonl(tmp_path):
    good = [json.dumps({"id": f"p{i}", "url": f"https://ok.org/{i}", "text": t}).encode() for i, t in enumerate(PROSE)]
    lines = [
        good[0],
        b'{"id": "broken", "text": "unterminated',  # invalid JSON
        b"[1, 2, 3]",  # not an object
        json.dumps({"id": "nofield", "body": "x"}).encode(),  # missing text field
        json.dumps({"id": "number", "text": 42}).encode(),  # text is not text
        b'{"id": "latin1", "text": "caf\xe9"}',  # not UTF-8
        json.dumps({"id": "blank", "text": "   "}).encode(),  # empty page
        good[1],
        json.dumps({"id": "p0-copy", "url": "https://mirror.org/0", "text": PROSE[0]}).encode(),
        good[2],
        good[3],
    ]
    path = tmp_path / "docs.jsonl"
    write_jsonl(path, lines)
    return path


def test_malformed_records_are_counted_and_kept_aside(tmp_path, mixed_jsonl):
    summary = run(base_config(tmp_path, [{"path": str(mixed_jsonl)}]))
    out = tmp_path / "run"
    read = next(r for r in summary["steps"] if r["step"] == "read")
    assert read["seen"] == 11 and read["kept"] == 5
    assert read["reasons"] == {"invalid_json": 1, "not_an_object": 1, "missing_field": 1, "field_not_text": 1,
                               "undecodable": 1, "empty": 1}
    assert kept_ids(out) == ["p0", "p1", "p2", "p3"]
    side = {r["id"].split(":")[-1] if r["dropped_at"] == "read" else r["id"]: (r["dropped_at"], r["reason"]) for r in dropped(out)}
    assert side["p0-copy"] == ("exact_dedup", "exact_duplicate")
    assert len(side) == 7  # every record is either in the output or in the side output
    assert any('"unterminated' in r["text"] for r in dropped(out))  # kept whole, as read
    report = out / "report"
    assert (report / "steps.png").stat().st_size > 1000 and "| read | 11 | 5 | 6 |" in (report / "steps.md").read_text()


def test_html_dir_with_broken_wrongly_encoded_and_empty_pages(tmp_path):
    pages = tmp_path / "pages"
    pages.mkdir()
    (pages / "a.html").write_text(page("The river", PROSE[0]), encoding="utf-8")
    cut = page("The lighthouse", PROSE[1])
    (pages / "b.html").write_text(cut[: cut.index("</p>") + 4], encoding="utf-8")  # cut off: no closing tags
    (pages / "c.html").write_bytes(page("Café", PROSE[2]).encode("utf-16"))  # not UTF-8
    (pages / "d.html").write_bytes(b"")
    (pages / "e.htm").write_text("<html><body><div><span></span></div>", encoding="utf-8")  # no content
    (pages / "notes.md").write_text("not a page")
    summary = run(base_config(tmp_path, [{"path": str(pages)}]))
    out = tmp_path / "run"
    assert kept_ids(out) == ["a.html", "b.html"]
    reasons = {r["id"]: r["reason"] for r in dropped(out)}
    assert reasons["pages:c.html file"] == "undecodable" and reasons["pages:d.html file"] == "empty"
    assert reasons["e.htm"] == "empty_extraction"
    texts = [json.loads(line)["text"] for line in next((out / "data").glob("*.jsonl")).read_text().splitlines()]
    assert all("cookies" not in t and "All rights reserved" not in t for t in texts)
    assert summary["documents_kept"] == 2


def _warc(records: list[tuple[str, str]]) -> bytes:
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    buffer = io.BytesIO()
    writer = WARCWriter(buffer, gzip=True)
    for url, html in records:
        headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.0")
        writer.write_record(writer.create_warc_record(url, "response", payload=io.BytesIO(html.encode()),
                                                      http_headers=headers))
    return buffer.getvalue()


def test_warc_and_a_truncated_warc(tmp_path):
    whole = _warc([(f"https://ok.org/{i}", page(f"Page {i}", t)) for i, t in enumerate(PROSE[:2])])
    (tmp_path / "a.warc.gz").write_bytes(whole)
    cut = _warc([(f"https://ok.org/c{i}", page(f"Cut {i}", t)) for i, t in enumerate(PROSE[2:])])
    (tmp_path / "b.warc.gz").write_bytes(cut[: len(cut) - 200])  # the second record breaks off
    run(base_config(tmp_path, [{"path": str(tmp_path / "a.warc.gz")}, {"path": str(tmp_path / "b.warc.gz")}]))
    out = tmp_path / "run"
    kept = [json.loads(line) for line in next((out / "data").glob("*.jsonl")).read_text().splitlines()]
    assert [r["url"] for r in kept] == ["https://ok.org/0", "https://ok.org/1", "https://ok.org/c0"]
    assert all(r["labels"]["timestamp"].startswith("20") for r in kept)  # WARC-Date
    truncated = [r for r in dropped(out) if r["reason"] == "truncated_warc"]
    assert len(truncated) == 1 and "record 2" in truncated[0]["detail"] and "Bees collect" in truncated[0]["text"]
    assert gzip.decompress(whole)  # the fixture itself is a valid archive


def test_parquet_and_hf_dataset_dir(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": PROSE[:2], "id": ["q0", "q1"]}), tmp_path / "a.parquet")
    datasets.Dataset.from_dict({"content": PROSE[2:], "id": ["h2", "h3"]}).save_to_disk(str(tmp_path / "hf"))
    run(base_config(tmp_path, [{"path": str(tmp_path / "a.parquet")},
                               {"path": str(tmp_path / "hf"), "text_field": "content"}],
                    output={"formats": ["jsonl", "parquet"]}))
    out = tmp_path / "run"
    assert kept_ids(out) == ["q0", "q1", "h2", "h3"]
    table = pq.read_table(next((out / "data").glob("*.parquet")))
    assert table.column("id").to_pylist() == ["q0", "q1", "h2", "h3"]
    assert json.loads(table.column("labels").to_pylist()[0])["source"] == "a"


def test_pretrain_reads_the_output(tmp_path, mixed_jsonl):
    from chatforge.data.corpus import SourceConfig, read_documents
    from chatforge.run_dir import RejectLog

    run(base_config(tmp_path, [{"path": str(mixed_jsonl)}]))
    docs = list(read_documents([SourceConfig(path=str(tmp_path / "run" / "data"))], RejectLog(None)))
    assert [d.text for d in docs] == PROSE


def test_two_workers_give_the_same_corpus_and_shards_resume(tmp_path, mixed_jsonl):
    one = run(base_config(tmp_path, [{"path": str(mixed_jsonl)}], out=str(tmp_path / "one")))
    two = run(base_config(tmp_path, [{"path": str(mixed_jsonl)}], out=str(tmp_path / "two"), workers=2))
    assert kept_ids(tmp_path / "one") == kept_ids(tmp_path / "two")
    assert one["steps"] == two["steps"]
    assert sorted((tmp_path / "two" / "work" / "kept").glob("*.jsonl")) == [
        tmp_path / "two" / "work" / "kept" / "00000.jsonl", tmp_path / "two" / "work" / "kept" / "00001.jsonl"]
    # Shard 1 "died": its marker and output are gone. A rerun redoes only shard 1.
    shard0 = tmp_path / "two" / "work" / "kept" / "00000.jsonl"
    before = shard0.stat().st_mtime_ns
    (tmp_path / "two" / "work" / "logs" / "completions" / "00001").unlink()
    (tmp_path / "two" / "work" / "kept" / "00001.jsonl").unlink()
    again = run(base_config(tmp_path, [{"path": str(mixed_jsonl)}], out=str(tmp_path / "two"), workers=2))
    assert shard0.stat().st_mtime_ns == before
    assert again["steps"] == two["steps"] and kept_ids(tmp_path / "two") == kept_ids(tmp_path / "one")


def test_label_mode_keeps_documents_with_verdicts_and_selection_decides(tmp_path, mixed_jsonl):
    cfg = base_config(tmp_path, [{"path": str(mixed_jsonl)}], dedup={"mode": "label"},
                      select=[{"when": "verdicts.exact_dedup == 'ok'", "action": "keep"},
                              {"when": "lang_score > 0.99", "action": "weight", "weight": 2.0}],
                      output={"split_by": "length_bucket"})
    run(cfg)
    out = tmp_path / "run"
    records = [json.loads(line) for f in sorted((out / "data").rglob("*.jsonl")) for line in f.read_text().splitlines()]
    assert sorted(r["id"] for r in records) == ["p0", "p1", "p2", "p3"]
    assert {r["labels"]["dup_cluster"] for r in records} == {"p0", "p1", "p2", "p3"}
    copy = next(r for r in dropped(out) if r["id"] == "p0-copy")
    assert (copy["dropped_at"], copy["verdicts"]["exact_dedup"], copy["labels"]["dup_cluster"]) == ("select", "exact_duplicate", "p0")
    import yaml

    mixture = yaml.safe_load((out / "mixture.yaml").read_text())
    assert mixture["sources"] == [{"path": str(out / "data" / "short"), "name": "short",
                                   "weight": sum(r["labels"]["weight"] for r in records)}]


def test_decontamination_flags_documents_holding_eval_items(tmp_path):
    evals = tmp_path / "ceval"
    evals.mkdir()
    (evals / "test.csv").write_text("id,question,A,B,C,D,answer\n0,Which company employs Betty Miller in the town?,"
                                    "Lanternlight Books,Redwood Insurance,Brightline Rail,Meadowlark Airlines,B\n")
    contaminated = PROSE[0] + " Which company employs Betty Miller in the town? Redwood Insurance, of course."
    docs = tmp_path / "docs.jsonl"
    write_jsonl(docs, [json.dumps({"id": "clean", "text": PROSE[1]}).encode(),
                       json.dumps({"id": "leak", "text": contaminated}).encode()])
    summary_path = tmp_path / "decontam.json"
    summary = run(base_config(tmp_path, [{"path": str(docs)}],
                              decontam={"enabled": True, "eval_sets": [str(evals)], "summary": str(summary_path)}))
    decontam = json.loads(summary_path.read_text())
    assert decontam["documents_checked"] == 2 and decontam["documents_contaminated"] == 1
    assert decontam["eval_sets"][f"{tmp_path.name}/ceval"]["examples"][0]["id"] == "leak"
    assert decontam["eval_sets"][f"{tmp_path.name}/ceval"]["examples"][0]["ngram"] == "which company employs betty miller in the town"
    assert decontam["by_source"] == {"docs": {f"{tmp_path.name}/ceval": 1}}
    assert summary["documents_kept"] == 2  # label mode: flagged, not dropped


def test_slurm_path_dry_run_then_array_tasks_by_hand(tmp_path, mixed_jsonl):
    cfg = base_config(tmp_path, [{"path": str(mixed_jsonl)}], executor="slurm", tasks=2, slurm_dry_run=True)
    assert run(cfg) == {"submitted": True}
    logs = tmp_path / "run" / "work" / "logs"
    script = (logs / "launch_script.slurm").read_text()
    assert "#SBATCH --array=0-1" in script and "launch_pickled_pipeline" in script
    # What each Slurm array task runs, with the one Slurm tool datatrove calls (scontrol) stood in for.
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "scontrol").write_text("#!/bin/sh\necho localhost\n")
    (fake_bin / "scontrol").chmod(0o755)
    for task in range(2):
        env = {**os.environ, "SLURM_ARRAY_TASK_ID": str(task), "SLURM_NODELIST": "localhost", "OMP_NUM_THREADS": "1",
               "PATH": f"{fake_bin}{os.pathsep}{os.environ['PATH']}"}
        done = subprocess.run([sys.executable, "-m", "datatrove.tools.launch_pickled_pipeline", str(logs / "executor.pik")],
                       env=env, check=False, capture_output=True, text=True, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
    summary = run(cfg)
    assert summary["documents_kept"] == 4 and kept_ids(tmp_path / "run") == ["p0", "p1", "p2", "p3"]


def test_world_pages_against_ground_truth(tmp_path):
    from chatforge.world.write import write_world

    write_world(tmp_path / "world", seed=1234, size="tiny")
    cfg = base_config(tmp_path, [{"path": str(tmp_path / "world" / "web" / "pages.jsonl"), "text_field": "html",
                                  "keep_fields": ["truth"]}],
                      truth_field="truth", url={"blocklist_files": [str(tmp_path / "world" / "web" / "blocklist.txt")]})
    truth = run(cfg)["truth"]
    reasons = truth["by_true_reason"]
    for bad in ("non_english", "blocklisted_domain", "too_short", "exact_duplicate", "spam"):
        if bad in reasons:
            assert reasons[bad]["dropped_share"] == 1.0, bad
    assert reasons["non_english"]["by_step"] == {"langid": reasons["non_english"]["total"]}
    assert truth["overall"]["recall"] >= 0.9 and truth["overall"]["precision"] >= 0.8


def test_perplexity_labels_and_a_percentile_band(tmp_path, base_dir):
    from transformers import AutoModelForCausalLM

    from chatforge.stages.eval_lm import score_texts
    from chatforge.tokenizer.load import load_tokenizer

    docs = tmp_path / "docs.jsonl"
    write_jsonl(docs, [json.dumps({"id": f"p{i}", "text": t}).encode() for i, t in enumerate(PROSE)])
    cfg = base_config(tmp_path, [{"path": str(docs)}],
                      perplexity={"enabled": True, "model": str(base_dir), "max_len": 64,
                                  "low_percentile": 0.0, "high_percentile": 50.0})
    summary = run(cfg)
    out = tmp_path / "run"
    kept = [json.loads(line) for line in next((out / "data").glob("*.jsonl")).read_text().splitlines()]
    band_drops = [r for r in dropped(out) if r["dropped_at"] == "perplexity_band"]
    scores = {r["id"]: r["labels"]["ppl"] for r in kept + band_drops}
    # the same scorer by hand: [bos] + text + [eos] in windows of 64 tokens
    model, tokenizer = AutoModelForCausalLM.from_pretrained(base_dir).eval(), load_tokenizer(base_dir)
    for i, text in enumerate(PROSE):
        assert scores[f"p{i}"] == pytest.approx(score_texts(model, tokenizer, [text], 64, 32)["ppl"], rel=1e-3)
    # numpy's median of 4 scores lies between the 2nd and 3rd: the two above it leave
    assert sorted(r["id"] for r in band_drops) == sorted(scores, key=scores.get)[2:]
    assert all(r["reason"] == "ppl_above_band" for r in band_drops)
    assert summary["perplexity_band"][1] == pytest.approx(sorted(scores.values())[1] / 2 + sorted(scores.values())[2] / 2, rel=1e-3)
