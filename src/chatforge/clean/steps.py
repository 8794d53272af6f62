"""The checks of the seed's basic cleaning, in its order (STEP 1 §3.2.1):
1 language identification (py3langid, model inside the package), 2 URL rules, 3 main-content
extraction (trafilatura), 4 document filters (datatrove's Gopher rules + punctuation ratio),
5 line filters (datatrove's C4 rules), 6 perplexity (perplexity.py), 7 sensitive content.
Each builder takes its own config section and returns the checks of one `Judge` step.
"""

from __future__ import annotations

import html as html_lib
import re
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from datatrove.data import Document
from datatrove.pipeline.filters import C4QualityFilter, GopherQualityFilter, GopherRepetitionFilter

from chatforge.clean.config import (
    DocFilterConfig,
    ExtractConfig,
    LangIdConfig,
    LineFilterConfig,
    SensitiveConfig,
    UrlConfig,
)
from chatforge.clean.judge import Check, datatrove_check, labels
from chatforge.clean.words import WORDS
from chatforge.errors import ConfigError

_TAG = re.compile(r"<(script|style)\b.*?</\1\s*>|<[^>]*>", re.S | re.I)
_PUNCTUATION = re.compile(r"[^\w\s]")


@lru_cache(1)
def _identifier():
    # The model file ships inside py3langid; nothing is downloaded.
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def visible_text(doc: Document) -> str:
    """The document's text; for HTML, its text without tags, scripts or styles (cheap, for language ID)."""
    if doc.metadata.get("content") != "html":
        return doc.text
    return html_lib.unescape(_TAG.sub(" ", doc.text))


def langid_checks(cfg: LangIdConfig) -> list[Check]:
    wanted = set(cfg.languages)

    def language(doc: Document) -> str | None:
        text = visible_text(doc)[:20_000]
        if not any(c.isalpha() for c in text):
            return None  # nothing to identify: extraction or the filters decide about an empty page
        lang, score = _identifier().classify(text)
        labels(doc).update(lang=lang, lang_score=round(float(score), 4))
        if lang not in wanted:
            return "wrong_language"
        if score < cfg.min_score:
            return "low_language_score"
        return None

    return [language]


def read_list(path: str) -> list[str]:
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"list file not found: {file}")
    lines = (line.strip() for line in file.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def url_score(url: str, soft_keywords: set[str], cost: float) -> float:
    """1.0 for a plain URL; each soft keyword among the URL's words costs `cost`, so do a query
    string (0.1) and a very long URL (0.1, over 120 characters)."""
    words = re.findall(r"[a-z0-9]+", url.lower())
    score = 1.0 - cost * sum(w in soft_keywords for w in words)
    score -= 0.1 * bool(urlsplit(url).query) + 0.1 * (len(url) > 120)
    return max(0.0, round(score, 4))


def url_checks(cfg: UrlConfig) -> list[Check]:
    domains = {d.lower().lstrip(".") for d in cfg.domains}
    for path in cfg.blocklist_files:
        domains.update(d.lower().lstrip(".") for d in read_list(path))
    keywords = [k.lower() for k in cfg.keywords]
    try:
        regexes = [re.compile(r) for r in cfg.regexes]
    except re.error as exc:
        raise ConfigError(f"url.regexes: {exc.pattern!r}: {exc}") from None
    soft = {k.lower() for k in cfg.soft_keywords}

    def url_rules(doc: Document) -> str | None:
        url = doc.metadata.get("url")
        if not url:
            return None
        host = (urlsplit(url).hostname or "").lower()
        parts = host.split(".")
        if any(".".join(parts[i:]) in domains for i in range(len(parts))):
            return "blocked_domain"
        lowered = url.lower()
        if any(k in lowered for k in keywords):
            return "blocked_keyword"
        if any(r.search(url) for r in regexes):
            return "blocked_regex"
        score = url_score(url, soft, cfg.soft_keyword_cost)
        labels(doc)["url_score"] = score
        return "url_score" if score < cfg.min_score else None

    return [url_rules]


def extract_checks(cfg: ExtractConfig) -> list[Check]:
    import trafilatura

    precision, recall = cfg.favor == "precision", cfg.favor == "recall"

    def main_content(doc: Document) -> str | None:
        if doc.metadata.get("content") != "html":
            return None
        if cfg.method == "tags":
            lines = (" ".join(line.split()) for line in visible_text(doc).splitlines())
            text = "\n".join(line for line in lines if line)
        else:
            text = trafilatura.extract(doc.text, url=doc.metadata.get("url"), include_comments=False,
                                       include_tables=cfg.include_tables, favor_precision=precision,
                                       favor_recall=recall, deduplicate=False)
        if not text or len(text.strip()) < cfg.min_chars:
            return "empty_extraction"
        doc.text = text.strip()
        doc.metadata["content"] = "text"
        return None

    return [main_content]


def punctuation_check(max_ratio: float) -> Check:
    def punctuation(doc: Document) -> str | None:
        chars = len(doc.text) - sum(c.isspace() for c in doc.text)
        ratio = len(_PUNCTUATION.findall(doc.text)) / max(1, chars)
        labels(doc)["punctuation_ratio"] = round(ratio, 4)
        return "too_much_punctuation" if ratio > max_ratio else None

    return punctuation


def doc_filter_checks(cfg: DocFilterConfig) -> list[Check]:
    quality = GopherQualityFilter(
        min_doc_words=cfg.min_words, max_doc_words=cfg.max_words, min_avg_word_length=cfg.min_mean_word_length,
        max_avg_word_length=cfg.max_mean_word_length, max_symbol_word_ratio=cfg.max_symbol_word_ratio,
        max_non_alpha_words_ratio=cfg.min_alpha_words_ratio, min_stop_words=cfg.min_stop_words, language=WORDS,
    )
    repetition = GopherRepetitionFilter(
        dup_line_frac=cfg.dup_line_frac, dup_para_frac=cfg.dup_para_frac, language=WORDS,
    )

    def words_label(doc: Document) -> None:
        labels(doc)["words"] = len(WORDS.word_tokenize(doc.text))
        return None

    return [words_label, datatrove_check(quality), punctuation_check(cfg.max_punctuation_ratio), datatrove_check(repetition)]


def line_filter_checks(cfg: LineFilterConfig) -> list[Check]:
    c4 = C4QualityFilter(
        filter_no_terminal_punct=cfg.terminal_punctuation, min_words_per_line=cfg.min_words_per_line,
        filter_javascript=cfg.javascript, filter_policy=cfg.policy, filter_lorem_ipsum=cfg.lorem_ipsum,
        filter_curly_bracket=cfg.curly_bracket, min_num_sentences=cfg.min_sentences, language=WORDS,
    )
    return [datatrove_check(c4)]


def sensitive_checks(cfg: SensitiveConfig) -> list[Check]:
    phrases = [k.lower() for k in cfg.keywords]
    patterns = list(cfg.regexes)
    for path in cfg.files:
        for rule in read_list(path):
            (patterns.append(rule[3:]) if rule.startswith("re:") else phrases.append(rule.lower()))
    try:
        compiled = [re.compile(p, re.I) for p in patterns]
    except re.error as exc:
        raise ConfigError(f"sensitive rule {exc.pattern!r}: {exc}") from None

    def sensitive(doc: Document) -> str | None:
        lowered = doc.text.lower()
        hit = next((p for p in phrases if p in lowered), None)
        if hit is not None:
            labels(doc)["sensitive"] = hit
            return "sensitive_keyword"
        match = next((r for r in compiled if r.search(doc.text)), None)
        if match is not None:
            labels(doc)["sensitive"] = match.pattern
            return "sensitive_regex"
        return None

    return [sensitive] if phrases or compiled else []
