"""Web pages for the cleaning pipeline: every kind present, ground truth consistent with the pages."""

from __future__ import annotations

import difflib
import re
from collections import Counter
from urllib.parse import urlparse

from world_files import read_jsonl


def _main_text(html: str) -> str:
    main = html.split("<main>", 1)[1].split("</main>", 1)[0]
    return re.sub(r"<[^>]+>", " ", main)


def test_every_reason_is_present_and_only_ok_pages_are_kept(tiny_dir):
    pages = read_jsonl(tiny_dir / "web/pages.jsonl")
    reasons = Counter(p["truth"]["reason"] for p in pages)
    assert set(reasons) == {"ok", "near_duplicate", "exact_duplicate", "spam", "keyword_stuffing", "too_short",
                            "non_english", "blocklisted_domain"}
    assert all(p["truth"]["keep"] == (p["truth"]["reason"] == "ok") for p in pages)
    assert len({p["url"] for p in pages}) == len(pages)
    for page in pages:
        assert all(marker in page["html"] for marker in ('class="cookie-banner"', "<nav>", 'class="ad"', "<footer>"))


def test_languages_are_really_other_languages(tiny_dir):
    pages = [p for p in read_jsonl(tiny_dir / "web/pages.jsonl") if p["truth"]["reason"] == "non_english"]
    assert {p["truth"]["lang"] for p in pages} == {"zh", "fr", "de", "ru"}
    for page in pages:
        text = _main_text(page["html"])
        if page["truth"]["lang"] == "zh":
            assert re.search(r"[\u4e00-\u9fff]{10}", text)
        if page["truth"]["lang"] == "ru":
            assert re.search(r"[\u0400-\u04ff]{5}", text)
        assert f'lang="{page["truth"]["lang"]}"' in page["html"]


def test_duplicates_follow_their_kept_original(tiny_dir):
    pages = read_jsonl(tiny_dir / "web/pages.jsonl")
    position = {p["url"]: i for i, p in enumerate(pages)}
    for page in pages:
        original_url = page["truth"]["duplicate_of"]
        if page["truth"]["reason"] not in ("near_duplicate", "exact_duplicate"):
            assert original_url == ""
            continue
        original = pages[position[original_url]]
        assert position[original_url] < position[page["url"]] and original["truth"]["keep"]
        if page["truth"]["reason"] == "exact_duplicate":
            assert page["html"] == original["html"]
        else:
            a, b = _main_text(original["html"]).split(), _main_text(page["html"]).split()
            assert a != b and difflib.SequenceMatcher(None, a, b).ratio() > 0.85


def test_blocklist_covers_exactly_the_blocklisted_pages(tiny_dir):
    blocklist = set((tiny_dir / "web/blocklist.txt").read_text().split())
    assert blocklist
    for page in read_jsonl(tiny_dir / "web/pages.jsonl"):
        on_blocked_domain = urlparse(page["url"]).hostname in blocklist
        assert on_blocked_domain == (page["truth"]["reason"] == "blocklisted_domain"), page["url"]


def test_short_spam_and_stuffed_pages_look_like_their_reason(tiny_dir):
    pages = read_jsonl(tiny_dir / "web/pages.jsonl")
    ok_lengths = [len(_main_text(p["html"]).split()) for p in pages if p["truth"]["reason"] == "ok"]
    for page in pages:
        words = _main_text(page["html"]).split()
        reason = page["truth"]["reason"]
        if reason == "too_short":
            assert len(words) < 30 < min(ok_lengths)
        if reason == "spam":
            assert _main_text(page["html"]).count("!!!") >= 5
        if reason == "keyword_stuffing":
            top_share = Counter(w.lower() for w in words).most_common(1)[0][1] / len(words)
            assert top_share > 0.1
