"""The browser chat page `chatforge serve` answers at `/`: one self-contained HTML file
(resources/chat_page.html: inline CSS and JavaScript, no external assets, works offline) that talks
to this server's own /v1/chat/completions with streaming. The model id is written into the page."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

from starlette.requests import Request
from starlette.responses import HTMLResponse

PLACEHOLDER = "/*MODEL_NAME*/ null"


@lru_cache(maxsize=1)
def page_template() -> str:
    return resources.files("chatforge").joinpath("resources/chat_page.html").read_text(encoding="utf-8")


def render_page(model_name: str) -> str:
    # json.dumps gives a JS string literal; "</" is escaped so a model id cannot close the <script>.
    literal = json.dumps(model_name).replace("</", "<\\/")
    return page_template().replace(PLACEHOLDER, literal, 1)


async def chat_page(request: Request) -> HTMLResponse:
    return HTMLResponse(render_page(request.app.state.server.model_name))
