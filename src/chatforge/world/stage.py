"""Write the built-in task world: two disjoint fact worlds with pretraining text, a C-Eval-style
knowledge test, instruction tasks (messages, Alpaca, ShareGPT), preference pairs and K-wise rankings
ordered by the gold reward (with a safety slice), expert/novice sources, verifiable prompts,
learning-dynamics probes, and web-like HTML pages with cleaning ground truth.

Same seed and same versions give byte-identical files; manifest.json lists every file with its
record count and sha256. `--size tiny` writes in about a second (tests); `--size default` is sized for
the ~2M-parameter world chain on 2 CPU cores; `--size large` is the first format's default (300 people).
Every file is described in docs/world.md.

example: chatforge world write --out data/world --size tiny
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from chatforge.config import StrictModel
from chatforge.world.people import DEFAULT_SEED
from chatforge.world.write import write_world


class Config(StrictModel):
    out: Path = Field(description="directory to write the world into (created if missing)")
    size: Literal["tiny", "small", "default", "large"] = Field(
        "default",
        description="how much to write: tiny (tests), small, default (100 people, the CPU chain), large (300 people)",
    )
    seed: int = Field(DEFAULT_SEED, description="seed of every random choice; same seed, same files")
    people: int | None = Field(
        None, ge=20, description="people per world (default: the size's count: 24, 80, 100 or 300)"
    )
    fact_repeats: int | None = Field(
        None, ge=1, description="documents stating each fact (default: the size's count: 2, 4, 6 or 10)"
    )
    novice_error_rate: float = Field(
        0.5, ge=0.0, le=1.0, description="share of prompts the novice source answers wrongly (C-RLFT data)"
    )
    string_form: Literal["spelled", "word"] | None = Field(
        None,
        description="string tasks letter by letter, 's a v e' (one token per letter; every size's default), "
        "or as whole words (formats 1-2, for models whose tokens spell their letters)",
    )


def run(cfg: Config) -> dict:
    manifest = write_world(
        cfg.out, seed=cfg.seed, size=cfg.size, people=cfg.people, fact_repeats=cfg.fact_repeats,
        novice_error_rate=cfg.novice_error_rate, string_form=cfg.string_form,
    )
    files = manifest["files"]
    total_bytes = sum(entry["bytes"] for entry in files.values())
    print(f"wrote {len(files)} files ({total_bytes / 1e6:.1f} MB) to {cfg.out} (seed {cfg.seed}, size {cfg.size}, "
          f"string form {manifest['string_form']})")
    for path, entry in files.items():
        print(f"  {path:<40} {entry['records']:>7} records  {entry['bytes'] / 1e3:>9.1f} kB")
    return manifest
