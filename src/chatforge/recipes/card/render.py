"""The report card as Markdown (report.md) and as one self-contained HTML page (report.html: inline
CSS, plots embedded as base64 PNG, no external assets)."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any


def fmt_figure(cell: dict | None, signed: bool = False) -> str:
    """`0.312 ± 0.041` (value ± standard error); `-` for a measure the column does not have."""
    if not cell:
        return "-"
    value, sem = cell.get("value"), cell.get("sem")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    text = f"{value:+.3f}" if signed else f"{value:.3f}"
    if sem is not None and not (isinstance(sem, float) and math.isnan(sem)):
        text += f" ± {sem:.3f}"
    return text


def _mib(value: Any) -> str:
    return f"{value / 2**20:,.0f} MiB" if isinstance(value, (int, float)) and value else "-"


def _seconds(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    return f"{value:.1f} s" if value < 60 else f"{int(value // 60)} min {int(value % 60):02d} s"


def _rate(value: Any) -> str:
    return f"{value:,.0f}" if isinstance(value, (int, float)) else "-"


def card_rows(card: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the main table: measure, one column per model, then each gain column."""
    header = ["measure", *card["columns"], *(g["label"] for g in card["gains"])]
    rows = []
    for measure in card["rows"]:
        row = [measure] + [fmt_figure(card["cells"][c].get(measure)) for c in card["columns"]]
        row += [fmt_figure(g["cells"].get(measure), signed=True) for g in card["gains"]]
        rows.append(row)
    return header, rows


def stage_rows(data: dict) -> tuple[list[str], list[list[str]]]:
    header = ["stage", "kind", "state", "time", "tokens/s", "peak RSS", "peak GPU", "steps", "result"]
    rows = []
    stages = data["stages"] + ([data["card_step"]] if data.get("card_step") else [])
    for s in stages:
        result = "; ".join(f"{k} {v}" for k, v in s["headline"][:4])
        attempts = f" ({s['attempts']} attempts)" if (s.get("attempts") or 1) > 1 else ""
        rows.append([s["name"], s["kind"], s["state"] + attempts, _seconds(s["seconds"]), _rate(s["tokens_per_s"]),
                     _mib(s["peak_rss_bytes"]), _mib(s["peak_cuda_bytes"]), str(s["steps"] or "-"), result or "-"])
    return header, rows


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    esc = lambda c: str(c).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def to_markdown(data: dict) -> str:
    out = [f"# Report card: {data['name']}", ""]
    if data["description"]:
        out += [data["description"], ""]
    out += [f"Recipe directory: `{data['root']}`", ""]
    if data["card"]:
        out += ["## Models side by side", "", _card_note(data["card"]), "", _md_table(*card_rows(data["card"])), ""]
    out += ["## Stages", "", _md_table(*stage_rows(data)), ""]
    for s in data["stages"]:
        if s["table"]:
            out += [f"### {s['name']}: {s['table']['caption']}", "", _md_table(s["table"]["header"], s["table"]["rows"]), ""]
        if s["plots"]:
            out += [f"Plots of {s['name']}: " + ", ".join(f"`{Path(p).relative_to(data['root']) if Path(p).is_relative_to(data['root']) else p}`" for p in s["plots"]), ""]
    out += ["## Decontamination", "", _decontam_md(data["decontamination"]), ""]
    out += ["## Provenance", "", _provenance_md(data["provenance"]), ""]
    out += ["## The recipe", "", "```yaml", data["recipe_text"].rstrip(), "```", ""]
    return "\n".join(out)


def _card_note(card: dict) -> str:
    ref = f" KL is measured against `{card['reference']}`." if card.get("reference") else ""
    for label, why in (card.get("missing") or {}).items():
        ref += f" Not measured: `{label}` ({why})."
    return ("Each cell is the mean over held-out items ± its standard error; a gain column is a model minus the model "
            "its stage started from, ± the two standard errors combined as if independent (conservative: the items are "
            "the same). In report.html a gain is green (better) or red (worse) only when it exceeds two standard errors; "
            f"lower bits-per-byte is better.{ref}")


def _decontam_md(dec: dict | None) -> str:
    if not dec:
        return "No training data or eval sets to compare."
    head = ("Provisional: " if dec.get("provisional") else "") + f"{dec.get('method', '')}; training files: " + \
        ", ".join(f"`{f}`" for f in dec.get("train_files", []))
    return head + "\n\n" + _md_table(_decontam_header(dec), _decontam_rows(dec))


def _decontam_header(dec: dict) -> list[str]:
    """The provisional check counts eval items; `chatforge clean` counts training documents. The
    provisional check also counts the items mostly made of training text (decontam.py says why)."""
    unit = dec.get("unit", "eval items")
    header = ["eval set", f"{unit} checked", f"{unit} overlapping", "share"]
    if "mostly" in dec:
        header += [f"items ≥ {dec['mostly']:.0%} in shared n-grams", "words in shared n-grams"]
    return header


def _decontam_rows(dec: dict) -> list[list[str]]:
    rows = []
    for name, s in dec.get("sets", {}).items():
        row = [name, str(s["items"]), str(s["overlapping"]), f"{s['share']:.1%}"]
        if "mostly" in dec:
            row += [str(s.get("mostly_overlapping", "-")), f"{s['words_covered']:.1%}" if "words_covered" in s else "-"]
        rows.append(row)
    return rows


def _provenance_md(p: dict) -> str:
    git, pk, hw = p["git"], p["packages"], p["hardware"]
    lines = [
        f"- code: commit `{git.get('commit')}`, " + ("**uncommitted changes**" if git.get("dirty") else "clean working tree"),
        f"- packages: {_packages_line(pk)}",
        f"- hardware: {hw['cpu']} ({hw['cpu_cores']} cores, {hw['usable_cores']} usable, torch threads {hw['torch_threads']}), "
        f"{hw['memory_gib']} GiB RAM, GPUs: {', '.join(hw['gpus']) or 'none'}; {hw['platform']}, Python {hw['python']}, torch {hw['torch']}",
        "",
        _md_table(["input file", "sha256", "used by"], [[r["file"], r["sha256"][:16] + "…", r["used_by"]] for r in p["inputs"]]),
    ]
    return "\n".join(lines)


def _packages_line(pk: dict) -> str:
    key = ", ".join(f"{k} {v}" for k, v in pk["key"].items() if v)
    if not pk.get("lock"):
        return f"{key} (no requirements.lock found to compare with)"
    differ = "; ".join(f"{d['package']} {d['installed']} (lock {d['locked']})" for d in pk["differ"]) or "none"
    return f"{key}; {pk['matching']} of {pk['locked']} locked packages match, differing: {differ}, missing: {len(pk['missing'])}"


# ------------------------------------------------------------------------------------------------ HTML

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1500px;padding:0 1rem;color:#1d2330}
.scroll{overflow-x:auto}
h1{margin-bottom:.2rem} h2{margin-top:2.2rem;border-bottom:1px solid #dde;padding-bottom:.2rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.85rem} th,td{border:1px solid #ccd;padding:.25rem .45rem;text-align:right}
th{background:#f0f2f8} td:first-child,th:first-child{text-align:left} tr:nth-child(even) td{background:#fafbfd}
td{white-space:nowrap} td.gain-pos{color:#0a6b2e;font-weight:600} td.gain-neg{color:#a4161a;font-weight:600} td.gain-noise{color:#8a90a0}
#stages td:last-child,#stages th:last-child{text-align:left;white-space:normal} #stages td:nth-child(2),#stages th:nth-child(2){text-align:left} .note{color:#556;font-size:.88rem;max-width:60rem}
.plots{display:flex;flex-wrap:wrap;gap:.6rem} .plots img{max-width:380px;border:1px solid #dde}
pre{background:#f6f7fb;padding:.8rem;overflow-x:auto;font-size:.8rem} code{font-size:.85rem}
.badge{display:inline-block;padding:.05rem .4rem;border-radius:.3rem;background:#eef;font-size:.8rem}
.warn{background:#fde8d8}
"""


def _cell_class(text: str, measure: str) -> str:
    """A gain cell's colour: green when the change is an improvement by more than two standard errors,
    red when it is a loss by more than two, grey otherwise. Lower is better for bits-per-byte; KL has
    no better direction, so it stays uncoloured."""
    parts = text.replace("±", " ").split()
    if text == "-" or measure.startswith("KL"):
        return ""
    value = float(parts[0])
    sem = float(parts[1]) if len(parts) > 1 else float("nan")
    if not sem > 0 or abs(value) <= 2 * sem:
        return ' class="gain-noise"'
    better = value < 0 if measure.startswith("bits-per-byte") else value > 0
    return ' class="gain-pos"' if better else ' class="gain-neg"'


def _html_table(header: list[str], rows: list[list[str]], table_id: str | None = None, gains_from: int | None = None) -> str:
    ident = f' id="{table_id}"' if table_id else ""
    out = [f"<div class=scroll><table{ident}><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr></thead><tbody>"]
    for row in rows:
        cells = "".join(
            f"<td{_cell_class(c, row[0]) if gains_from is not None and i >= gains_from else ''}>{html.escape(str(c))}</td>"
            for i, c in enumerate(row)
        )
        out.append(f"<tr>{cells}</tr>")
    out.append("</tbody></table></div>")
    return "\n".join(out)


def _img(path: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<figure><img alt="{html.escape(Path(path).name)}" src="data:image/png;base64,{data}"><figcaption>{html.escape(Path(path).name)}</figcaption></figure>'


def to_html(data: dict) -> str:
    e = html.escape
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>Report card: {e(data['name'])}</title>",
             f"<style>{CSS}</style></head><body>", f"<h1>Report card: {e(data['name'])}</h1>"]
    if data["description"]:
        parts.append(f"<p>{e(data['description'])}</p>")
    parts.append(f"<p class=note>Recipe directory <code>{e(data['root'])}</code></p>")
    if data["card"]:
        card = data["card"]
        header, rows = card_rows(card)
        parts += ["<h2>Models side by side</h2>", f"<p class=note>{e(_card_note(card))}</p>",
                  _html_table(header, rows, "card", gains_from=1 + len(card["columns"]))]
    else:
        parts.append("<p class='note warn'>The recipe has no card section (or it has not run): no side-by-side table.</p>")
    header, rows = stage_rows(data)
    parts += ["<h2>Stages</h2>", _html_table(header, rows, "stages")]
    for s in data["stages"] + ([data["card_step"]] if data.get("card_step") else []):
        if not s["table"] and not s["plots"]:
            continue
        parts.append(f"<h3>{e(s['name'])} <span class=badge>{e(s['kind'])}</span></h3>")
        if s["table"]:
            parts += [f"<p class=note>{e(s['table']['caption'])}</p>", _html_table(s["table"]["header"], s["table"]["rows"])]
        if s["plots"]:
            parts.append("<div class=plots>" + "".join(_img(p) for p in s["plots"]) + "</div>")
    dec = data["decontamination"]
    parts.append("<h2>Decontamination</h2>")
    if dec:
        kind = "<span class='badge warn'>provisional</span> " if dec.get("provisional") else ""
        parts.append(f"<p class=note>{kind}{e(dec.get('method', ''))}; training files: "
                     + ", ".join(f"<code>{e(f)}</code>" for f in dec.get("train_files", [])) + "</p>")
        parts.append(_html_table(_decontam_header(dec), _decontam_rows(dec), "decontamination"))
    else:
        parts.append("<p class=note>No training data or eval sets to compare.</p>")
    p = data["provenance"]
    git, hw = p["git"], p["hardware"]
    dirty = "<span class='badge warn'>uncommitted changes</span>" if git.get("dirty") else "<span class=badge>clean</span>"
    parts += ["<h2>Provenance</h2>", "<ul>",
              f"<li>code: commit <code>{e(str(git.get('commit')))}</code> {dirty}</li>",
              f"<li>packages: {e(_packages_line(p['packages']))}</li>",
              f"<li>hardware: {e(hw['cpu'])} ({hw['cpu_cores']} cores, {hw['usable_cores']} usable, torch threads {hw['torch_threads']}), "
              f"{hw['memory_gib']} GiB RAM, GPUs: {e(', '.join(hw['gpus']) or 'none')}; {e(hw['platform'])}, Python {e(hw['python'])}, torch {e(hw['torch'])}</li>",
              "</ul>",
              _html_table(["input file", "sha256", "used by"], [[r["file"], r["sha256"], r["used_by"]] for r in p["inputs"]], "inputs"),
              "<h2>The recipe</h2>", f"<pre>{e(data['recipe_text'])}</pre>", "</body></html>"]
    return "\n".join(parts)
