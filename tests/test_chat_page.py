"""The chat page `chatforge serve` answers at `/`: self-contained, and working in a real headless
Chromium: type a message, press Enter, see the reply stream in, ask again with the history.

    CHATFORGE_SCREENSHOTS=docs/img pytest tests/test_chat_page.py   # also writes docs/img/chat_page.png

CHATFORGE_CHAT_MODEL=DIR serves that model directory instead of the random tiny one (for a screenshot
with real answers), CHATFORGE_CHAT_SYSTEM sets the page's system prompt and CHATFORGE_CHAT_PROMPTS
("first|second") the two messages typed; the assertions hold for any model and messages.
"""

from __future__ import annotations

import json
import os
import re
import urllib.request
from pathlib import Path

import pytest

from chatforge.serve import ServeConfig
from chatforge.serve.chat_page import render_page
from chatforge.serve.server import BackgroundServer, build
from headless_chromium import Chromium, chromium_path
from tiny_models import make_tiny_model


def test_the_page_is_self_contained_and_names_the_model():
    page = render_page('tiny</script><b>"x"')
    assert "const MODEL = \"tiny<\\/script><b>\\\"x\\\"\";" in page  # a JS string; cannot close the script
    # no external asset of any kind: the page works offline
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "@import" not in page and "<link" not in page


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_tokenizer):
    out = os.environ.get("CHATFORGE_CHAT_MODEL")
    if not out:
        out = tmp_path_factory.mktemp("chat_model")
        make_tiny_model(vocab_size=384, seed=3, tie_word_embeddings=False).save_pretrained(out)
        tiny_tokenizer.save_pretrained(out)
    app = build(ServeConfig(model_dir=str(out), model_name="tiny-chat", max_tokens=64, log_level="warning"))
    with BackgroundServer(app) as url:
        yield url


def greedy_reply(url: str, messages: list[dict], max_tokens: int) -> str:
    body = json.dumps({"model": "tiny-chat", "messages": messages, "temperature": 0, "max_tokens": max_tokens}).encode()
    request = urllib.request.Request(url + "/v1/chat/completions", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())["choices"][0]["message"]["content"]


def test_get_slash_serves_the_page(served):
    with urllib.request.urlopen(served + "/", timeout=30) as response:
        assert response.headers["content-type"].startswith("text/html")
        assert 'const MODEL = "tiny-chat";' in response.read().decode()


# Records every text the newest assistant bubble shows, to see the reply arrive in pieces.
WATCH = """
window.__seen = [];
new MutationObserver(() => {
  const bubbles = document.querySelectorAll('.msg.assistant .text');
  if (bubbles.length) window.__seen.push(bubbles[bubbles.length - 1].textContent);
}).observe(document.getElementById('messages'), {subtree: true, childList: true, characterData: true});
true
"""


@pytest.mark.skipif(chromium_path() is None, reason="chromium is not installed (apt-get install chromium)")
def test_typing_a_message_streams_the_reply_in_chromium(served, tmp_path):
    first_prompt, second_prompt = os.environ.get("CHATFORGE_CHAT_PROMPTS", "What is the capital of Ruritania?|And of Freedonia?").split("|")
    system = os.environ.get("CHATFORGE_CHAT_SYSTEM", "")
    with Chromium(width=1100, height=700) as browser:
        browser.open(served + "/")
        assert browser.evaluate("document.getElementById('model-name').textContent") == "tiny-chat"
        # greedy and short, so the page's answer can be compared with the API's
        browser.evaluate("document.getElementById('temperature').value = '0'; document.getElementById('max-tokens').value = '24'; true")
        browser.evaluate(f"document.getElementById('system').value = {json.dumps(system)}; true")
        browser.evaluate(WATCH)
        browser.evaluate("document.getElementById('prompt').focus(); true")
        browser.type_text(first_prompt)
        browser.press_enter()
        browser.wait_for("document.querySelector('.msg.assistant[data-done]') !== null")
        first = browser.evaluate("document.querySelector('.msg.assistant .text').textContent")
        seen = browser.evaluate("window.__seen")
        user = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": first_prompt}]
        assert first == greedy_reply(served, user, 24)
        assert first, "the reply is empty"
        partial = {s for s in seen if s and s != first}
        assert partial, f"the reply did not arrive in pieces: {seen}"
        assert all(first.startswith(s) for s in partial)  # each piece a prefix of the final answer

        # multi-turn: the second request carries the first exchange
        browser.type_text(second_prompt)
        browser.press_enter()
        browser.wait_for("document.querySelectorAll('.msg.assistant[data-done]').length === 2")
        second = browser.evaluate("[...document.querySelectorAll('.msg.assistant .text')][1].textContent")
        history = [*user, {"role": "assistant", "content": first}, {"role": "user", "content": second_prompt}]
        assert second == greedy_reply(served, history, 24)
        assert browser.evaluate("document.body.dataset.state") == "idle"
        shots = os.environ.get("CHATFORGE_SCREENSHOTS")
        png = browser.screenshot(Path(shots) / "chat_page.png" if shots else tmp_path / "chat_page.png", full_page=False)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
