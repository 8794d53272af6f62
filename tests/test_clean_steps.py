"""The checks of `chatforge clean`, one crafted document per drop reason, and the judge layer."""

from __future__ import annotations

import json

import pytest
from datatrove.data import Document

from chatforge.clean.config import (
    DedupConfig,
    DocFilterConfig,
    ExtractConfig,
    LangIdConfig,
    LineFilterConfig,
    RebalanceConfig,
    RuleConfig,
    SensitiveConfig,
    UrlConfig,
)
from chatforge.clean.dedup import deduplicate, normalise
from chatforge.clean.judge import Judge
from chatforge.clean.labels import Expression, length_bucket, rebalance, select
from chatforge.clean.ledger import Ledger
from chatforge.clean.steps import (
    doc_filter_checks,
    extract_checks,
    langid_checks,
    line_filter_checks,
    sensitive_checks,
    url_checks,
    url_score,
)
from chatforge.clean.truth import score_drops
from chatforge.errors import ConfigError

PROSE = (
    "The river runs through the old town and past the mill. It is wide and slow in the summer, "
    "and the children of the town swim in it when the water is warm. In the winter it freezes at "
    "the edges, and the ice is thick enough to walk on for a few weeks. The mill has stood on its "
    "bank for two hundred years, and the wheel still turns on the days when the museum is open. "
    "People come from the villages around to see it and to buy the flour that is ground there."
)


def doc(text: str, url: str | None = None, content: str = "text") -> Document:
    return Document(text=text, id="d", metadata={"url": url, "content": content, "labels": {}})


def first_reason(checks, document: Document):
    for check in checks:
        reason = check(document)
        if reason is not None:
            return reason
    return None


def test_language_id_keeps_english_and_drops_french_with_labels():
    checks = langid_checks(LangIdConfig())
    english = doc(PROSE)
    assert first_reason(checks, english) is None
    assert english.metadata["labels"]["lang"] == "en" and english.metadata["labels"]["lang_score"] > 0.9
    french = doc("Le chat est assis sur le tapis et il regarde la pluie tomber dans le jardin depuis ce matin.")
    assert first_reason(checks, french) == "wrong_language"
    assert french.metadata["labels"]["lang"] == "fr"


def test_language_id_reads_html_without_its_tags():
    page = doc(f"<html><head><style>p {{color: red}}</style></head><body><p>{PROSE}</p></body></html>", content="html")
    assert first_reason(langid_checks(LangIdConfig()), page) is None


def test_url_rules_domain_subdomain_keyword_regex_and_score():
    checks = url_checks(UrlConfig(domains=["bad.biz"], keywords=["casino"], regexes=[r"/\d{6,}$"], soft_keywords=["cheap", "buy"]))
    assert first_reason(checks, doc(PROSE, "https://bad.biz/a")) == "blocked_domain"
    assert first_reason(checks, doc(PROSE, "https://www.shop.bad.biz/a")) == "blocked_domain"
    assert first_reason(checks, doc(PROSE, "https://notbad.biz/a")) is None  # a suffix of the name is not the domain
    assert first_reason(checks, doc(PROSE, "https://x.com/online-casino")) == "blocked_keyword"
    assert first_reason(checks, doc(PROSE, "https://x.com/p/1234567")) == "blocked_regex"
    assert first_reason(checks, doc(PROSE, "https://x.com/cheap-cheap-buy")) == "url_score"  # 1 - 3 x 0.25
    assert first_reason(checks, doc(PROSE)) is None  # no URL: no URL rules


def test_url_score_by_hand():
    soft = {"cheap", "buy"}
    assert url_score("https://x.com/guides/rivers", soft, 0.25) == 1.0
    assert url_score("https://x.com/buy-cheap", soft, 0.25) == 0.5
    assert url_score("https://x.com/buy?id=3", soft, 0.25) == 0.65  # one keyword and a query string
    assert url_score("https://x.com/buy-cheap-buy-cheap-buy", soft, 0.25) == 0.0  # clipped at 0


def test_bad_regex_is_a_config_error():
    with pytest.raises(ConfigError, match="url.regexes"):
        url_checks(UrlConfig(regexes=["(unclosed"]))


def test_extraction_drops_menus_banners_and_footers():
    html = (
        '<html><body><div class="cookie-banner">We use cookies to improve your experience.</div>'
        '<nav><ul><li><a href="/">Home</a></li><li><a href="/shop">Shop</a></li></ul></nav>'
        f"<main><article><h1>The river</h1><p>{PROSE}</p></article></main>"
        "<footer>&copy; 2024 example.org. All rights reserved.</footer></body></html>"
    )
    page = doc(html, content="html")
    assert first_reason(extract_checks(ExtractConfig()), page) is None
    assert "The mill has stood on its bank" in page.text
    assert "cookies" not in page.text and "All rights reserved" not in page.text and "Shop" not in page.text
    assert page.metadata["content"] == "text"


def test_extraction_of_a_page_without_content_is_a_drop():
    assert first_reason(extract_checks(ExtractConfig()), doc("<html><body><div></div></body></html>", content="html")) == "empty_extraction"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("Too short to be a page.", "gopher_short_doc"),
        (" ".join(["supercalifragilistic"] * 60), "gopher_above_avg_threshold"),
        ("# " * 30 + PROSE, "gopher_too_many_hashes"),
        (" ".join(["x1", "y2", "z3", "w4"] * 20), "gopher_below_avg_threshold"),
        ("river mill town water summer winter ice flour " * 10, "gopher_enough_stop_words"),
        ((PROSE + "\n\n") * 4, "dup_para_frac"),
        ((PROSE + "\n") * 4, "dup_line_frac"),
    ],
)
def test_gopher_document_filters(text, reason):
    assert first_reason(doc_filter_checks(DocFilterConfig()), doc(text)) == reason


def test_punctuation_ratio_filter_by_hand():
    text = PROSE + " " + "?!" * 150
    checks = doc_filter_checks(DocFilterConfig(max_punctuation_ratio=0.25))
    d = doc(text)
    assert first_reason(checks, d) == "too_much_punctuation"
    non_space = len(text) - sum(c.isspace() for c in text)
    punctuation = sum(1 for c in text if not c.isalnum() and not c.isspace() and c != "_")
    assert d.metadata["labels"]["punctuation_ratio"] == round(punctuation / non_space, 4)


def test_line_filters_remove_boilerplate_lines_and_keep_the_prose():
    text = "Please enable JavaScript to view this page.\nHome | News | Shop\n" + PROSE + "\nThis site uses cookies."
    d = doc(text)
    assert first_reason(line_filter_checks(LineFilterConfig()), d) is None
    assert d.text == PROSE


def test_line_filters_drop_a_document_left_without_sentences():
    assert first_reason(line_filter_checks(LineFilterConfig(min_sentences=3)), doc("Menu\nHome\nContact us")) == "too_few_sentences"


def test_sensitive_rules_from_a_file(tmp_path):
    rules = tmp_path / "rules.txt"
    rules.write_text("# comment\nvault code\nre:\\b\\d{3}-\\d{2}-\\d{4}\\b\n")
    checks = sensitive_checks(SensitiveConfig(files=[str(rules)]))
    assert first_reason(checks, doc("The Vault Code is 1234.")) == "sensitive_keyword"
    flagged = doc("Her number is 123-45-6789.")
    assert first_reason(checks, flagged) == "sensitive_regex"
    assert flagged.metadata["labels"]["sensitive"] == r"\b\d{3}-\d{2}-\d{4}\b"
    assert first_reason(checks, doc(PROSE)) is None


def test_judge_drops_to_the_side_output_or_labels(tmp_path):
    def short(d: Document):
        return "short" if len(d.text) < 10 else None

    ledger = Ledger(tmp_path, examples_per_reason=1)
    ledger.open("00000")
    docs = [Document(text=t, id=str(i), metadata={}) for i, t in enumerate(["tiny", PROSE, "mini"])]
    kept = list(Judge("len", [short], ledger, "drop").run(iter(docs)))
    assert [d.id for d in kept] == ["1"]
    labelled = list(Judge("len2", [short], ledger, "label").run(iter(docs)))
    assert [d.metadata["verdicts"]["len2"] for d in labelled] == ["short", "ok", "short"]
    ledger.finish()
    dropped = [json.loads(line) for line in (tmp_path / "dropped" / "00000.jsonl").read_text().splitlines()]
    assert [(r["id"], r["text"], r["dropped_at"], r["reason"]) for r in dropped] == [("0", "tiny", "len", "short"), ("2", "mini", "len", "short")]
    counts = json.loads((tmp_path / "counts" / "00000.json").read_text())
    assert counts["counts"]["len"] == {"seen": 3, "kept": 1, "dropped": {"short": 2}}
    assert counts["counts"]["len2"] == {"seen": 3, "kept": 3, "dropped": {}}
    assert len(counts["examples"]["len"]["short"]) == 1


def test_a_check_that_raises_drops_only_that_document(tmp_path):
    def fragile(d: Document):
        if d.id == "bad":
            raise ValueError("boom")
        return None

    ledger = Ledger(tmp_path)
    ledger.open("00000")
    docs = [Document(text="a", id="bad", metadata={}), Document(text="b", id="good", metadata={})]
    assert [d.id for d in Judge("x", [fragile], ledger, "label").run(iter(docs))] == ["good"]
    assert ledger.counts["x"]["dropped"] == {"error": 1}


def _record(i, text):
    return {"id": str(i), "text": text, "labels": {}}


def test_exact_and_near_dedup_keep_the_first_copy():
    other = ("A wholly different text about mountains, snow, goats and the long paths that wind up to the high "
             "pastures where shepherds spend the summer months with their flocks and dogs.")
    near = PROSE.replace("summer", "autumn", 1).replace("museum", "library", 1)
    records = [_record(0, PROSE), _record(1, PROSE.upper().replace(",", "")), _record(2, near), _record(3, other)]
    results = list(deduplicate(records, DedupConfig(threshold=0.6)))
    assert [reason for _, reason in results] == [None, "exact_duplicate", "near_duplicate", None]
    assert [r["labels"]["dup_cluster"] for r, _ in results] == ["0", "0", "0", "3"]
    assert normalise("A,  b!\nC") == "a b c"


def test_label_expressions():
    values = {"lang": "en", "ppl": 40.0, "verdicts": {"doc_filters": "ok"}}
    assert Expression("lang == 'en' and ppl < 80")(values) is True
    assert Expression("verdicts.doc_filters != 'ok'")(values) is False
    assert Expression("missing < 3")(values) is False  # a missing label fails a comparison
    assert Expression("lang in ['en', 'de']")(values) is True
    with pytest.raises(ConfigError, match="Call is not allowed"):
        Expression("__import__('os')")


def test_select_keeps_drops_and_weights():
    records = [{"id": str(i), "text": "", "labels": {"lang": lang, "ppl": ppl}} for i, (lang, ppl) in
               enumerate([("en", 20.0), ("en", 200.0), ("fr", 20.0), ("en", 60.0)])]
    rules = [RuleConfig(when="lang == 'en'", action="keep"), RuleConfig(when="ppl > 100", action="drop"),
             RuleConfig(when="ppl < 50", action="weight", weight=2.0)]
    kept, dropped = select(records, rules)
    assert [(r["id"], r["labels"]["weight"]) for r in kept] == [("0", 2.0), ("3", 1.0)]
    assert [(r["id"], why) for r, why in dropped] == [("1", "drop: ppl > 100"), ("2", "keep: lang == 'en'")]


def test_rebalance_hits_the_target_shares():
    records = [{"id": str(i), "labels": {"b": "short" if i < 30 else "long"}} for i in range(40)]
    kept, dropped = rebalance(records, RebalanceConfig(label="b", target={"short": 0.5, "long": 0.5}))
    # 10 long documents cap the total at 20: 10 short and 10 long
    assert sum(r["labels"]["b"] == "short" for r in kept) == 10 and sum(r["labels"]["b"] == "long" for r in kept) == 10
    assert len(dropped) == 20


def test_length_buckets():
    assert [length_bucket(n) for n in (0, 99, 100, 499, 500, 1999, 2000)] == [
        "short", "short", "medium", "medium", "long", "long", "very_long"]


def test_truth_scoring_by_hand():
    def rec(keep, reason, step=None):
        r = {"labels": {"truth": {"keep": keep, "reason": reason}}}
        if step:
            r["dropped_at"] = step
        return r

    kept = [rec(True, "ok"), rec(True, "ok"), rec(False, "spam")]
    dropped = [rec(False, "spam", "doc_filters"), rec(False, "spam", "doc_filters"), rec(True, "ok", "doc_filters"),
               rec(False, "near_duplicate", "near_dedup"), {"labels": {}, "dropped_at": "read"}]
    scored = score_drops(kept, dropped, "truth", ("read", "doc_filters", "near_dedup"))
    assert scored["overall"] == {"precision": 0.75, "recall": 0.75, "true_drops": 3, "false_drops": 1, "missed": 1, "true_keeps": 2}
    assert scored["by_step"]["doc_filters"] == {"dropped": 3, "precision": round(2 / 3, 4)}
    assert scored["by_true_reason"]["spam"]["dropped_share"] == round(2 / 3, 4)
    assert scored["reached"]["near_dedup"]["ok"] == {"reached": 2, "dropped": 0, "dropped_share": 0.0}
    assert scored["without_truth"] == 1


def test_quality_classifier_learns_the_labels_and_scores_as_a_step(tmp_path):
    from chatforge.clean.quality import load, quality_checks, save, train

    good = [PROSE, PROSE.replace("river", "canal"), PROSE.replace("mill", "bakery"), PROSE.replace("town", "village")]
    bad = ["BUY cheap watches NOW!!! best price click here", "cheap cheap cheap free casino bonus click now",
           "click here for free pills best deals online", "WINNER claim your free prize now click"]
    model = train(good, bad, epochs=40)
    assert all(s > 0.5 for s in model.score(good)) and all(s < 0.5 for s in model.score(bad))
    save(model, tmp_path / "q.pt")
    assert load(tmp_path / "q.pt").score(["free casino bonus click here now"]) == model.score(["free casino bonus click here now"])
    checks = quality_checks(str(tmp_path / "q.pt"), min_score=0.5)
    spam = doc("Click here: cheap pills, free bonus, best price, buy now!")
    assert first_reason(checks, spam) == "low_quality" and spam.metadata["labels"]["quality"] < 0.5
    assert first_reason(checks, doc(PROSE.replace("children", "families"))) is None


def test_quality_classifier_needs_both_classes():
    from chatforge.clean.quality import train

    with pytest.raises(ValueError, match="both classes"):
        train([PROSE], [])
