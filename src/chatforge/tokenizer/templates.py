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

The built-in templates and the special tokens a tokenizer needs for each (`required_special_tokens`
lists the literal ones; bos and eos are the tokenizer's own, written through `{{ bos_token }}` and
`{{ eos_token }}`, so every tokenizer has them). One user turn and its answer:

- `chatml`: `<|im_start|>user\\nQ<|im_end|>\\n<|im_start|>assistant\\nA<|im_end|>\\n`;
  needs `<|im_start|>`, `<|im_end|>`; an answer ends with `<|im_end|>`.
- `llama3`: `{bos}<|start_header_id|>user<|end_header_id|>\\n\\nQ<|eot_id|>` and the same for the
  assistant; needs `<|start_header_id|>`, `<|end_header_id|>`, `<|eot_id|>`; an answer ends with `<|eot_id|>`.
- `user_bot`: `{bos}【USER】：Q\\n【BOT】：A{eos}`; needs only bos and eos; an answer ends with eos.

- `llama3` is Meta Llama 3's layout. It writes the tokenizer's bos (Llama 3's bos is `<|begin_of_text|>`:
  set `special_tokens.bos` to that for byte-identical Llama 3 text) and does not trim the contents
  (Llama 3's own template does; chatforge trains on the text as given).
- `user_bot` is the layout of the team's SFT recipe (`<bos_token>【USER】：…<special_token>【BOT】：…<eos_token>`;
  the recipe's separator before `【BOT】` is a newline here, so it needs no extra special token). The system
  prompt is a `【SYSTEM】：…\\n` line after bos. `【BOT】：` runs straight into the answer, so a tokenizer may merge the
  colon with the answer's first characters; `chatforge.sft.masking` handles that (see docs/sft.md).

Every template places `{{ bos_token }}` at most once, at the start; a tokenizer trained with
`add_bos=True` gets `{{ bos_token }}` prepended only to templates that do not write it themselves.
Any literal `<|...|>` token a template writes must be a special token of the tokenizer;
`train_tokenizer` checks that (`template_special_tokens`), and `missing_special_tokens` lists the ones a
tokenizer config still lacks.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from pathlib import Path

from chatforge.errors import ConfigError

# Function calling (the server's `tools`, serve/tools.py): with `tools`, a system turn listing them comes
# first (TOOLS_INTRO, then one JSON line per tool); an assistant turn's `tool_calls` follow its content,
# each as <tool_call>{"name": ..., "arguments": {...}}</tool_call>; tool results are `tool` turns.
# Without tools or tool calls the text is what it was before tools existed.
TOOLS_INTRO = (
    "You can call these functions. To call one, write <tool_call>, then a JSON object with the keys "
    "name and arguments, then </tool_call>.\n"
)

CHATML = (
    "{% if tools %}{{ '<|im_start|>system\\n' + '" + TOOLS_INTRO.replace("\n", "\\n") + "' }}"
    "{% for tool in tools %}{{ tool | tojson }}{% if not loop.last %}{{ '\\n' }}{% endif %}{% endfor %}"
    "{{ '<|im_end|>\\n' }}{% endif %}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] or '' }}"
    "{% for call in message['tool_calls'] or [] %}"
    "{{ '<tool_call>' + ({'name': call['function']['name'], 'arguments': call['function']['arguments']} | tojson) + '</tool_call>' }}"
    "{% endfor %}{{ '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}"
    "{% else %}"
    "{{ message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Meta Llama 3 layout; bos through the tokenizer (Llama 3's own template does the same).
LLAMA3 = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + '<|eot_id|>' }}{% endgeneration %}"
    "{% else %}"
    "{{ message['content'] + '<|eot_id|>' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)

# The SFT recipe's layout: <bos>【USER】：question\n【BOT】：answer<eos>, turns back to back.
USER_BOT = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}"
    "{{ '【SYSTEM】：' + message['content'] + '\\n' }}"
    "{% elif message['role'] == 'user' %}"
    "{{ '【USER】：' + message['content'] + '\\n' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ '【BOT】：' }}{% generation %}{{ message['content'] + eos_token }}{% endgeneration %}"
    "{% else %}"
    "{{ raise_exception('the user_bot chat template has no role ' + message['role']) }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '【BOT】：' }}{% endif %}"
)

CHAT_TEMPLATES: dict[str, str] = {
    "chatml": CHATML,
    "llama3": LLAMA3,
    "user_bot": USER_BOT,
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


def required_special_tokens(spec: str) -> list[str]:
    """The literal special tokens chat template `spec` (a name, `.jinja` file or raw Jinja) writes.

    A tokenizer using the template must have each of them as a special token; bos and eos written
    through `{{ bos_token }}` / `{{ eos_token }}` are not listed (every tokenizer has its own).
    `required_special_tokens("llama3")` -> `["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]`.
    """
    return template_special_tokens(resolve_chat_template(spec))


def missing_special_tokens(spec: str, have: Iterable[str]) -> list[str]:
    """The tokens of `required_special_tokens(spec)` not in `have`, in the template's order."""
    present = set(have)
    return [token for token in required_special_tokens(spec) if token not in present]
