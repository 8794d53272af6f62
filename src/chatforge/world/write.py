"""`write_world`: every file of the task world, plus `manifest.json` (counts, seed, sha256 per file).

Same seed and same versions (Python, which supplies the prose, and faker) give byte-identical
files: every random choice comes from a seeded stream (seeding.py), nothing iterates over a set,
JSON keys keep insertion order, and lines end in "\\n". The manifest is written last, so a
directory with a manifest is complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
from dataclasses import asdict, replace
from importlib.metadata import version
from pathlib import Path
from typing import Any

from chatforge.errors import ChatforgeError
from chatforge.world.arithmetic_drill import record_problems
from chatforge.world.arithmetic_text import arithmetic_documents
from chatforge.world.documents import fact_documents, mixed_corpus, prose_documents, qa_documents
from chatforge.world.instructions import instruction_records, to_alpaca, to_sharegpt
from chatforge.world.knowledge import question_rows, to_csv
from chatforge.world.letters_text import letter_documents
from chatforge.world.mixed_quality import mixed_quality_records
from chatforge.world.people import DEFAULT_SEED, WORLD_IDS, World, build_world, person_record
from chatforge.world.preferences import preference_records
from chatforge.world.probes import probe_records
from chatforge.world.prompts import STRING_FORMS
from chatforge.world.prose import split_pretrain_chunks, split_words
from chatforge.world.sizes import SIZES, WorldSize
from chatforge.world.tasks import vault_details
from chatforge.world.verifiable import verifiable_records
from chatforge.world.web import web_pages

# 2: short-answer QA files, difficulty ladders, more phrasings; 3: string tasks spelled letter by letter
# by default, manifest field string_form; 4: spelled with spaces ("s a v e") instead of hyphens, and
# solved letter puzzles as pretraining text (pretrain/letters_train.jsonl); 5: vault test prompts only
# in held-out phrasings (tasks.choose_variant), which redraws the instruction, preference, probe and
# arithmetic-text files of format 4 under the same seed.
FORMAT_VERSION = 5
VALID_FACT_ROUNDS = 1  # the held-out fact documents: every fact once more, in fresh wording


def write_world(out: str | Path, seed: int = DEFAULT_SEED, size: str = "default", people: int | None = None,
                fact_repeats: int | None = None, novice_error_rate: float = 0.5,
                string_form: str | None = None) -> dict[str, Any]:
    """Write the whole task world under `out`; return the manifest (also written as manifest.json)."""
    if size not in SIZES:
        raise ChatforgeError(f"unknown world size {size!r}; choose one of {', '.join(SIZES)}")
    if not 0.0 <= novice_error_rate <= 1.0:
        raise ChatforgeError(f"novice_error_rate must be between 0 and 1, got {novice_error_rate}")
    preset = SIZES[size]
    if string_form is not None:
        if string_form not in STRING_FORMS:
            raise ChatforgeError(f"unknown string_form {string_form!r}; choose one of {', '.join(STRING_FORMS)}")
        preset = replace(preset, string_form=string_form)
    repeats = preset.fact_repeats if fact_repeats is None else fact_repeats
    if repeats < 1:
        raise ChatforgeError(f"fact_repeats must be at least 1, got {repeats}")
    world = build_world(seed, people=people, size=size)
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ChatforgeError(f"cannot create output directory {out}: {exc.strerror}") from None

    files: dict[str, tuple[str, int]] = {}  # relative path -> (text, record count)
    files.update(_fact_files(world))
    files.update(_pretrain_files(seed, world, repeats, preset))
    files.update(_knowledge_files(seed, world))
    files.update(_task_files(seed, world, preset, novice_error_rate))
    pages, blocklist = web_pages(seed, preset.web_pages)
    files["web/pages.jsonl"] = (_jsonl(pages), len(pages))
    files["web/blocklist.txt"] = ("".join(f"{domain}\n" for domain in blocklist), len(blocklist))

    entries = {}
    for relative, (text, count) in files.items():
        data = text.encode("utf-8")
        _write_atomic(out / relative, data)
        entries[relative] = {"records": count, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    manifest = {
        "generator": "chatforge.world", "format_version": FORMAT_VERSION, "seed": seed, "size": size,
        "people": len(world.people["a"]), "fact_repeats": repeats, "novice_error_rate": novice_error_rate,
        "string_form": preset.string_form,
        "versions": {"python": platform.python_version(), "faker": version("faker")},
        "files": entries,
    }
    _write_atomic(out / "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode("utf-8"))
    return manifest


def _jsonl(records: list) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _fact_files(world: World) -> dict[str, tuple[str, int]]:
    files = {}
    for world_id in WORLD_IDS:
        people = [person_record(p) for p in world.people[world_id]]
        files[f"facts/world_{world_id}_people.jsonl"] = (_jsonl(people), len(people))
    vaults = [asdict(world.vaults[world_id]) for world_id in WORLD_IDS]
    files["facts/vaults.jsonl"] = (_jsonl(vaults), len(vaults))
    return files


def _pretrain_files(seed: int, world: World, repeats: int, preset: WorldSize) -> dict[str, tuple[str, int]]:
    prose = split_pretrain_chunks(seed)
    files = {}
    for world_id in WORLD_IDS:
        people = world.people[world_id]
        train = fact_documents(seed, world_id, people, repeats, "train")
        train += prose_documents(world_id, prose[world_id][: preset.prose_docs])
        corpus = mixed_corpus(seed, world_id, "train", train)
        valid = mixed_corpus(seed, world_id, "valid", fact_documents(seed, world_id, people, VALID_FACT_ROUNDS, "valid"))
        files[f"pretrain/world_{world_id}_train.jsonl"] = (_jsonl(corpus), len(corpus))
        files[f"pretrain/world_{world_id}_valid.jsonl"] = (_jsonl(valid), len(valid))
        qa = mixed_corpus(seed, world_id, "qa", qa_documents(seed, world_id, people, preset.qa_rounds))
        files[f"pretrain/world_{world_id}_qa.jsonl"] = (_jsonl(qa), len(qa))
    general = mixed_corpus(seed, "general", "valid", prose_documents("general", prose["valid"][: preset.prose_docs]))
    files["pretrain/general_valid.jsonl"] = (_jsonl(general), len(general))
    return files


def _knowledge_files(seed: int, world: World) -> dict[str, tuple[str, int]]:
    files = {}
    for world_id in WORLD_IDS:
        for split, rows in question_rows(seed, world_id, world.people[world_id]).items():
            text = to_csv(rows, with_explanation=split == "dev")
            files[f"ceval/{split}/world_{world_id}_{split}.csv"] = (text, len(rows))
    return files


def _task_files(seed: int, world: World, preset: WorldSize, novice_error_rate: float) -> dict[str, tuple[str, int]]:
    words = split_words(seed)
    vault = vault_details(world, "a")
    files = {}
    instructions = instruction_records(seed, world, preset, words, vault)
    for split, records in instructions.items():
        files[f"instructions/{split}.jsonl"] = (_jsonl(records), len(records))
        files[f"instructions/{split}_alpaca.jsonl"] = (_jsonl([to_alpaca(r) for r in records]), len(records))
        files[f"instructions/{split}_sharegpt.jsonl"] = (_jsonl([to_sharegpt(r) for r in records]), len(records))
    preferences = preference_records(seed, world, words, vault, preset.pairs, preset.rankings, preset.string_form)
    for name, records in preferences.items():
        files[f"preferences/{name}.jsonl"] = (_jsonl(records), len(records))
    mixed = mixed_quality_records(seed, world, words["train"], vault, preset.mixed_quality_prompts, novice_error_rate,
                                  preset.string_form)
    files["mixed_quality/train.jsonl"] = (_jsonl(mixed), len(mixed))
    verifiable = verifiable_records(seed, words, vault, preset.verifiable, preset.string_form)
    for split, records in verifiable.items():
        files[f"verifiable/{split}.jsonl"] = (_jsonl(records), len(records))
    probes = probe_records(seed, world, preferences["pairs_train"], preferences["pairs_test"], preset.probes)
    files["probes/probes.jsonl"] = (_jsonl(probes), len(probes))
    asked = record_problems([*instructions["train"], *instructions["test"], *mixed,
                             *(r for records in preferences.values() for r in records),
                             *(r for split in ("train", "test") for r in verifiable[split])])
    arithmetic = arithmetic_documents(seed, preset.arithmetic_text, asked)
    files["pretrain/arithmetic_train.jsonl"] = (_jsonl(arithmetic), len(arithmetic))
    if preset.string_form == "spelled":
        letters = letter_documents(seed, preset.letters_text, words["train"])
        files["pretrain/letters_train.jsonl"] = (_jsonl(letters), len(letters))
    return files
