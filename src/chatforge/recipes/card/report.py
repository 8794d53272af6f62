"""Write the report card of a recipe directory: report.md and report.html beside the stages."""

from __future__ import annotations

from pathlib import Path

from chatforge.recipes.card.collect import collect
from chatforge.recipes.card.render import to_html, to_markdown


def write_report(root: Path, recipe_path: Path, recipe, steps) -> Path:
    data = collect(root, recipe_path, recipe, steps)
    (root / "report.md").write_text(to_markdown(data), encoding="utf-8")
    out = root / "report.html"
    out.write_text(to_html(data), encoding="utf-8")
    return out
