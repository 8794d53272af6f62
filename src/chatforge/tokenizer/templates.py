"""Chat templates (Jinja) for `tokenizer.apply_chat_template`, by name.

`chatml` (the default) renders each message as

    <|im_start|>{role}\\n{content}<|im_end|>\\n

and, with `add_generation_prompt=True`, ends with `<|im_start|>assistant\\n` so the model writes the
next answer. It places no bos token; a tokenizer trained with `add_bos=True` gets `{{ bos_token }}`
prepended to its template when it is saved (see `chatforge.tokenizer.train`).

Each assistant turn's `content + <|im_end|>` sits inside `{% generation %}...{% endgeneration %}`, so
`apply_chat_template(..., return_dict=True, return_assistant_tokens_mask=True)` returns an
`assistant_masks` list marking exactly the tokens an SFT answer-only loss trains on (tested with
transformers 5.23: the mask covers the answer and its `<|im_end|>`, not the newline after it, nor the
role header). The markers are a transformers extension to Jinja; they render as nothing.

A later issue adds more templates (Llama-3 style and others): add them to `CHAT_TEMPLATES`. Any
literal `<|...|>` token a template writes must be a special token of the tokenizer; `train_tokenizer`
checks that (`template_special_tokens`).
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

from chatforge.errors import ConfigError

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}"
    "{% else %}"
    "{{ message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

CHAT_TEMPLATES: dict[str, str] = {
    "chatml": CHATML,
}

DEFAULT_CHAT_TEMPLATE = "chatml"

_LITERAL_TOKEN = re.compile(r"<\|[^|<>'\"\s]+\|>")


def resolve_chat_template(spec: str) -> str:
    """The Jinja text for `spec`: a name in `CHAT_TEMPLATES`, a path to a `.jinja` file, or raw Jinja."""
    if spec in CHAT_TEMPLATES:
        return CHAT_TEMPLATES[spec]
    if "{{" in spec or "{%" in spec:
        return spec
    if spec.endswith((".jinja", ".j2")):
        path = Path(spec)
        if not path.is_file():
            raise ConfigError(f"chat_template: file not found: {path}")
        return path.read_text(encoding="utf-8")
    guess = difflib.get_close_matches(spec, list(CHAT_TEMPLATES), n=1)
    hint = f"; did you mean {guess[0]!r}?" if guess else ""
    raise ConfigError(
        f"chat_template: unknown template {spec!r}{hint} (known: {', '.join(CHAT_TEMPLATES)}; "
        "or give a .jinja file or raw Jinja text)"
    )


def template_special_tokens(template: str) -> list[str]:
    """The literal `<|...|>` tokens a template writes, in first-seen order."""
    return list(dict.fromkeys(_LITERAL_TOKEN.findall(template)))
