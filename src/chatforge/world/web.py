"""Web-like HTML pages with ground truth, for measuring the cleaning pipeline's precision and recall.

Every page wraps its main text in boilerplate (cookie banner, menu, an ad, a footer). What makes a
page worth dropping is in the main text or the URL, and is recorded in `truth`:
  ok                  real English prose (pydoc_data.topics), unique            keep
  near_duplicate      a kept page with a few words changed, at another URL      drop
  exact_duplicate     a kept page's exact HTML at another URL                   drop
  spam                sales spam: shouting, links, exclamation marks            drop
  keyword_stuffing    real prose with a keyword phrase repeated many times      drop
  too_short           a title and one short sentence                           drop
  non_english         Chinese, French, German or Russian text (faker locales)   drop
  blocklisted_domain  otherwise good prose on a domain in web/blocklist.txt     drop
A duplicate always comes after its original, so "keep the first copy" is the right policy.
"""

from __future__ import annotations

import html
import random
import re

from faker import Faker

from chatforge.world.prose import english_words, web_chunks
from chatforge.world.records import PageTruth, WebPage
from chatforge.world.seeding import derived_int, rng_for

# Share of pages per reason; "ok" takes what is left.
REASON_SHARES: dict[str, float] = {
    "near_duplicate": 0.08, "exact_duplicate": 0.06, "spam": 0.08, "keyword_stuffing": 0.06,
    "too_short": 0.06, "non_english": 0.16, "blocklisted_domain": 0.10,
}
LANGUAGES: dict[str, str] = {"zh": "zh_CN", "fr": "fr_FR", "de": "de_DE", "ru": "ru_RU"}
SITES = 24
BLOCKLISTED_SITES = 8
NEAR_DUPLICATE_EDIT_SHARE = 0.04  # share of words replaced in a near-duplicate

_SECTIONS = ("news", "guides", "reference", "blog", "articles", "docs", "notes", "library")
_MENU = ("Home", "News", "Guides", "Reference", "Blog", "About", "Contact", "Shop", "Help")
_COOKIE_BANNERS = (
    "We use cookies to improve your experience. By continuing you accept our use of cookies.",
    "This site uses cookies for analytics and personalised content. Accept all cookies?",
    "Cookies help us deliver our services. Manage your cookie preferences at any time.",
)
_ADS = (
    "Sponsored: Upgrade your laptop today with 20% off selected models.",
    "Advertisement: Learn a new language in just ten minutes a day.",
    "Sponsored: Find cheap flights to hundreds of destinations.",
    "Advertisement: The best running shoes of the year, reviewed.",
)
_SPAM_PRODUCTS = ("watches", "pills", "crypto coins", "casino bonuses", "diet tea", "phone chargers", "sunglasses")
_SPAM_LINES = (
    "BUY {product} NOW!!! LOWEST PRICES GUARANTEED!!!",
    "Click here for FREE {product} >>> limited offer, act fast!!!",
    "Best {product} deals online - 90% OFF - order today!!!",
    "{product} {product} {product} cheap cheap cheap best price!!!",
    "Winner! You have been selected for free {product}. Claim now!!!",
)
_STUFFING_KEYWORDS = ("cheap flights", "best laptop deals", "online degree", "weight loss tips", "free movies")


def _sites(seed: int) -> tuple[list[str], list[str]]:
    """(ordinary domains, blocklisted domains), all distinct."""
    fake = Faker("en_US")
    fake.seed_instance(derived_int(seed, "web-sites"))
    ordinary: list[str] = []
    while len(ordinary) < SITES:
        domain = f"{fake.domain_word()}.{fake.random_element(('com', 'org', 'net', 'info'))}"
        if domain not in ordinary:
            ordinary.append(domain)
    blocked: list[str] = []
    while len(blocked) < BLOCKLISTED_SITES:
        domain = f"{fake.domain_word()}-{fake.random_element(('deals', 'bargains', 'clicks', 'promo'))}.biz"
        if domain not in blocked:
            blocked.append(domain)
    return ordinary, blocked


def _page(domain: str, title: str, paragraphs: list[str], rng: random.Random, lang: str = "en",
          keywords: str = "") -> str:
    menu = "".join(f'<li><a href="/{item.lower()}">{item}</a></li>' for item in rng.sample(_MENU, 5))
    body = "\n".join(f"<p>{html.escape(p)}</p>" for p in paragraphs)
    meta = f'\n<meta name="keywords" content="{html.escape(keywords)}">' if keywords else ""
    return (
        f'<!DOCTYPE html>\n<html lang="{lang}">\n<head>\n<meta charset="utf-8">{meta}\n'
        f"<title>{html.escape(title)} | {domain}</title>\n</head>\n<body>\n"
        f'<div class="cookie-banner">{rng.choice(_COOKIE_BANNERS)} <button>Accept all</button></div>\n'
        f'<nav><ul>{menu}</ul></nav>\n<aside class="ad">{rng.choice(_ADS)}</aside>\n'
        f"<main><article>\n<h1>{html.escape(title)}</h1>\n{body}\n</article></main>\n"
        f'<footer>&copy; {rng.randint(2015, 2025)} {domain}. All rights reserved. '
        f'<a href="/privacy">Privacy</a> &middot; <a href="/terms">Terms</a></footer>\n</body>\n</html>\n'
    )


def _title(text: str) -> str:
    words = text.lstrip("*- ").split()[:7]
    return " ".join(words).rstrip(".,;:") or "Untitled"


def _truth(keep: bool, reason: str, lang: str = "en", duplicate_of: str = "") -> PageTruth:
    return {"keep": keep, "reason": reason, "lang": lang, "duplicate_of": duplicate_of}


def _counts(total: int) -> dict[str, int]:
    counts = {reason: int(share * total) for reason, share in REASON_SHARES.items()}
    counts["ok"] = total - sum(counts.values())
    return counts


def web_pages(seed: int, total: int) -> tuple[list[WebPage], list[str]]:
    """The pages in crawl order and the blocklisted domains."""
    rng = rng_for(seed, "web")
    ordinary, blocked = _sites(seed)
    counts = _counts(total)
    chunks = list(web_chunks())
    rng.shuffle(chunks)
    needed = counts["ok"] + counts["keyword_stuffing"] + counts["blocklisted_domain"] + counts["too_short"]
    if needed > len(chunks):
        raise ValueError(f"{total} web pages need {needed} prose chunks; only {len(chunks)} exist")
    next_chunk = iter(chunks)
    used_urls: set[str] = set()

    def url_for(domain: str, title: str) -> str:
        slug = "-".join(re.findall(r"[a-z0-9]+", title.lower())[:5]) or "page"
        url = f"https://{domain}/{rng.choice(_SECTIONS)}/{slug}"
        while url in used_urls:
            url = f"https://{domain}/{rng.choice(_SECTIONS)}/{slug}-{rng.randrange(10**6)}"
        used_urls.add(url)
        return url

    pages: list[WebPage] = []
    for _ in range(counts["ok"]):
        paragraphs = list(next(next_chunk))
        domain = rng.choice(ordinary)
        title = _title(paragraphs[0])
        pages.append({"url": url_for(domain, title), "html": _page(domain, title, paragraphs, rng), "truth": _truth(True, "ok")})
    for _ in range(counts["blocklisted_domain"]):
        paragraphs = list(next(next_chunk))
        domain = rng.choice(blocked)
        title = _title(paragraphs[0])
        pages.append({"url": url_for(domain, title), "html": _page(domain, title, paragraphs, rng),
                      "truth": _truth(False, "blocklisted_domain")})
    for _ in range(counts["keyword_stuffing"]):
        pages.append(_stuffed_page(list(next(next_chunk)), rng.choice(ordinary), rng, url_for))
    for _ in range(counts["too_short"]):
        first_sentence = " ".join(next(next_chunk)[0].split(". ")[0].split()[:12]).rstrip(".") + "."
        domain = rng.choice(ordinary)
        title = _title(first_sentence)
        pages.append({"url": url_for(domain, title), "html": _page(domain, title, [first_sentence], rng),
                      "truth": _truth(False, "too_short")})
    for _ in range(counts["spam"]):
        pages.append(_spam_page(rng.choice(ordinary), rng, url_for))
    pages += _foreign_pages(seed, counts["non_english"], ordinary, rng, url_for)
    rng.shuffle(pages)
    originals = [p for p in pages if p["truth"]["reason"] == "ok"]
    duplicates = [_near_duplicate(rng.choice(originals), ordinary, rng, url_for) for _ in range(counts["near_duplicate"])]
    duplicates += [_exact_duplicate(rng.choice(originals), ordinary, rng, url_for) for _ in range(counts["exact_duplicate"])]
    for duplicate in duplicates:
        # Insert after the original so the first copy is always the one to keep.
        after = next(i for i, p in enumerate(pages) if p["url"] == duplicate["truth"]["duplicate_of"])
        pages.insert(rng.randint(after + 1, len(pages)), duplicate)
    return pages, sorted(blocked)


def _stuffed_page(paragraphs: list[str], domain: str, rng: random.Random, url_for) -> WebPage:
    keyword = rng.choice(_STUFFING_KEYWORDS)
    stuffed = []
    for paragraph in paragraphs:
        stuffed.append(paragraph)
        stuffed.append(" ".join([keyword] * rng.randint(12, 25)))
    title = f"{keyword.title()} - {keyword} - best {keyword}"
    html_text = _page(domain, title, stuffed, rng, keywords=", ".join([keyword] * 10))
    return {"url": url_for(domain, title), "html": html_text, "truth": _truth(False, "keyword_stuffing")}


def _spam_page(domain: str, rng: random.Random, url_for) -> WebPage:
    product = rng.choice(_SPAM_PRODUCTS)
    lines = [rng.choice(_SPAM_LINES).format(product=product) for _ in range(rng.randint(6, 12))]
    title = f"CHEAP {product.upper()}!!! BUY NOW"
    return {"url": url_for(domain, title), "html": _page(domain, title, lines, rng), "truth": _truth(False, "spam")}


def _foreign_pages(seed: int, count: int, ordinary: list[str], rng: random.Random, url_for) -> list[WebPage]:
    pages: list[WebPage] = []
    fakers = {}
    for lang, locale in LANGUAGES.items():
        fake = Faker(locale)
        fake.seed_instance(derived_int(seed, "web-language", lang))
        fakers[lang] = fake
    languages = list(LANGUAGES)
    for i in range(count):
        lang = languages[i % len(languages)]
        fake = fakers[lang]
        paragraphs = [fake.paragraph(nb_sentences=rng.randint(4, 7)) for _ in range(rng.randint(3, 5))]
        title = fake.sentence(nb_words=5).rstrip(".。")
        domain = rng.choice(ordinary)
        pages.append({"url": url_for(domain, f"{lang} page {i}"), "html": _page(domain, title, paragraphs, rng, lang=lang),
                      "truth": _truth(False, "non_english", lang=lang)})
    return pages


def _near_duplicate(original: WebPage, ordinary: list[str], rng: random.Random, url_for) -> WebPage:
    """The original's HTML with a few words of the main text replaced by other English words."""
    head, _, rest = original["html"].partition("<main>")
    main, _, tail = rest.partition("</main>")
    tokens = main.split(" ")
    editable = [i for i, t in enumerate(tokens) if t.isalpha() and t.islower()]
    vocabulary = english_words()
    for i in rng.sample(editable, max(1, int(NEAR_DUPLICATE_EDIT_SHARE * len(tokens)))):
        tokens[i] = rng.choice(vocabulary)
    edited = f"{head}<main>{' '.join(tokens)}</main>{tail}"
    domain = rng.choice(ordinary)
    url = url_for(domain, "copy of " + original["url"].rsplit("/", 1)[-1].replace("-", " "))
    return {"url": url, "html": edited, "truth": _truth(False, "near_duplicate", duplicate_of=original["url"])}


def _exact_duplicate(original: WebPage, ordinary: list[str], rng: random.Random, url_for) -> WebPage:
    domain = rng.choice(ordinary)
    url = url_for(domain, "mirror " + original["url"].rsplit("/", 1)[-1].replace("-", " "))
    return {"url": url, "html": original["html"], "truth": _truth(False, "exact_duplicate", duplicate_of=original["url"])}
