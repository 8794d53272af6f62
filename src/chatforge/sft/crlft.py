"""C-RLFT (OpenChat, arXiv 2309.11235): class-conditioned SFT on data of mixed quality.

Every conversation carries a source class (e.g. `expert` / `novice`) with a coarse reward. Training
conditions the prompt on the class, so the model learns what each class's answers look like, and
weights the answer tokens by the class: OpenChat's released code uses the reward itself as the
token weight (1.0 expert, 0.1 novice; `weighting: reward`, the default); the paper derives
exp(r / beta) weights (`weighting: exp`). At inference the prompt is conditioned on the best class.

The condition goes into the system message (`condition_text`, before any system text the
conversation has): OpenChat writes it in front of every role prefix (`GPT4 User: ...`), which a chat
template with fixed role names cannot express; a system-message condition is the template-safe
equivalent the paper also discusses ("class-specific system prompt").

Serving: `conditioned_chat_template(template, cfg)` returns a chat template that conditions plain
messages on the best class itself, so a tokenizer saved with it needs no hand-written "Source: expert.".
It is the original template behind a Jinja prelude that rebinds `messages` to
`condition(messages, cls, cfg)`, so it renders exactly what the original renders for the conditioned
messages, for every render argument (`add_generation_prompt`, `bos_token`, ...), and its
`{% generation %}` blocks still give `return_assistant_tokens_mask`. Rules of the prelude:

- Idempotent on the messages: a first system message whose text already starts with the tag of the
  class, or with the tag of any class in `cfg.rewards` (the user asks for that class explicitly), is
  left as it is (`condition` itself always adds the tag; it is the training-side function).
- Idempotent on the template: the prelude sits between two Jinja comments
  (`chatforge:crlft-condition begin/end`); conditioning a conditioned template replaces its prelude
  (the new class and tag win) instead of stacking a second one.
- Content that is a list of parts (`[{"type": "text", "text": ...}, ...]`): the tag goes in front of
  the first part's text when that part is a text part, else as a text part of its own before the
  others. Content of any other kind (None, ...) is left untouched. `condition` does the same.
- The tag is written into the template as an escaped Jinja string literal (quotes, backslashes,
  braces, newlines and non-ASCII as escapes), so any `condition_text` is safe.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Literal

from pydantic import Field, model_validator

from chatforge.config.base import StrictModel


class CRLFTConfig(StrictModel):
    class_field: str = Field("source", description="record field holding the source class")
    rewards: dict[str, float] = Field(
        default_factory=lambda: {"expert": 1.0, "novice": 0.1}, description="coarse reward per class"
    )
    weighting: Literal["reward", "exp"] = Field(
        "reward", description="token weight: reward (OpenChat's code) or exp(reward / beta) (the paper)"
    )
    beta: float = Field(1.0, gt=0, description="temperature of the exp weighting")
    condition_text: str = Field("Source: {cls}.", description="class condition written into the system message")
    best_class: str | None = Field(None, description="class used at inference (default: the highest reward)")

    @model_validator(mode="after")
    def _check(self) -> CRLFTConfig:
        if not self.rewards:
            raise ValueError("rewards must name at least one class")
        if self.best_class is not None and self.best_class not in self.rewards:
            raise ValueError(f"best_class {self.best_class!r} is not one of the classes {sorted(self.rewards)}")
        if "{cls}" not in self.condition_text:
            raise ValueError("condition_text must contain {cls}")
        return self

    @property
    def inference_class(self) -> str:
        return self.best_class or max(self.rewards, key=self.rewards.__getitem__)

    def weight(self, cls: str) -> float:
        reward = self.rewards[cls]
        return reward if self.weighting == "reward" else math.exp(reward / self.beta)


def _tagged_content(content, tag: str):
    """`content` with `tag` in front: text gets `tag + " "`; a list of parts gets it in its first text part."""
    if isinstance(content, str):
        return f"{tag} {content}"
    if isinstance(content, (list, tuple)):
        if content and isinstance(content[0], dict) and content[0].get("type") == "text":
            return [{**content[0], "text": f"{tag} {content[0]['text']}"}, *content[1:]]
        return [{"type": "text", "text": tag}, *content]
    return content


def condition(messages: list[dict], cls: str, cfg: CRLFTConfig) -> list[dict]:
    """`messages` with the class condition at the start of the system message (added if none).

    String content gets `"<tag> "` in front; list-of-parts content gets it in its first text part (or a
    text part of its own first); other content is left untouched."""
    tag = cfg.condition_text.format(cls=cls)
    if messages and messages[0]["role"] == "system":
        first = {**messages[0], "content": _tagged_content(messages[0]["content"], tag)}
        return [first, *messages[1:]]
    return [{"role": "system", "content": tag}, *messages]


_PRELUDE_BEGIN = "chatforge:crlft-condition begin"
_PRELUDE_END = "chatforge:crlft-condition end"
_PRELUDE_RE = re.compile(
    r"\{#[-+]? " + re.escape(_PRELUDE_BEGIN) + r" #\}.*?\{# " + re.escape(_PRELUDE_END) + r" #\}", re.S
)
_LITERAL_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,:;!?()[]@/_-=*+<>|")


def _jinja_literal(text: str) -> str:
    """`text` as a single-quoted Jinja string literal: every character outside a plain ASCII set escaped.

    Jinja decodes a literal with Python's `unicode-escape`, so `\\xNN`, `\\uNNNN` and `\\UNNNNNNNN`
    escapes give the characters back; quotes, backslashes, braces, `%`, `#` and newlines never appear raw."""
    out = []
    for ch in text:
        code = ord(ch)
        if ch in _LITERAL_SAFE:
            out.append(ch)
        elif code < 0x100:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return "'" + "".join(out) + "'"


def conditioned_chat_template(template: str, cfg: CRLFTConfig, cls: str | None = None) -> str:
    """A chat template that renders plain messages as `template` renders `condition(messages, cls, cfg)`.

    `cls` defaults to `cfg.inference_class` (the class to serve with). A Jinja prelude rebinds
    `messages` before `template` runs, so every render argument and `{% generation %}` marker behaves
    as in `template`. A first system message that already starts with the tag of `cls` or of any class
    in `cfg.rewards` is left as it is; a template conditioned before has its prelude replaced, not
    doubled. See the module docstring for list-of-parts content."""
    cls = cls or cfg.inference_class
    original = _PRELUDE_RE.sub("", template, count=1)
    tag = cfg.condition_text.format(cls=cls)
    known = [tag, *(t for t in (cfg.condition_text.format(cls=c) for c in cfg.rewards) if t != tag)]
    body = (
        "{% set chatforge_crlft_tag = " + _jinja_literal(tag) + " %}"
        "{% set chatforge_crlft_known = [" + ", ".join(_jinja_literal(t) for t in known) + "] %}"
        + "{% if messages and messages[0]['role'] == 'system' %}"
        "{% set chatforge_crlft_content = messages[0]['content'] %}"
        "{% set chatforge_crlft = namespace(text=none, tagged=false) %}"
        "{% if chatforge_crlft_content is string %}"
        "{% set chatforge_crlft.text = chatforge_crlft_content %}"
        "{% elif chatforge_crlft_content is iterable and chatforge_crlft_content is not mapping"
        " and chatforge_crlft_content and chatforge_crlft_content[0] is mapping"
        " and chatforge_crlft_content[0]['type'] == 'text' %}"
        "{% set chatforge_crlft.text = chatforge_crlft_content[0]['text'] %}"
        "{% endif %}"
        "{% if chatforge_crlft.text is string %}"
        "{% for known_tag in chatforge_crlft_known %}"
        "{% if chatforge_crlft.text[:known_tag | length] == known_tag %}{% set chatforge_crlft.tagged = true %}{% endif %}"
        "{% endfor %}"
        "{% endif %}"
        "{% if not chatforge_crlft.tagged %}"
        "{% if chatforge_crlft_content is string %}"
        "{% set messages = [dict(messages[0], content=chatforge_crlft_tag ~ ' ' ~ chatforge_crlft_content)]"
        " + messages[1:] %}"
        "{% elif chatforge_crlft.text is string %}"
        "{% set messages = [dict(messages[0], content=[dict(chatforge_crlft_content[0],"
        " text=chatforge_crlft_tag ~ ' ' ~ chatforge_crlft.text)] + chatforge_crlft_content[1:])] + messages[1:] %}"
        "{% elif chatforge_crlft_content is iterable and chatforge_crlft_content is not mapping %}"
        "{% set messages = [dict(messages[0], content=[{'type': 'text', 'text': chatforge_crlft_tag}]"
        " + chatforge_crlft_content | list)] + messages[1:] %}"
        "{% endif %}"
        "{% endif %}"
        "{% else %}"
        "{% set messages = [{'role': 'system', 'content': chatforge_crlft_tag}] + messages %}"
        "{% endif %}"
    )
    # Leading whitespace of `template` stays first, and the prelude's first tag strips it exactly as
    # `template`'s first tag did (lstrip_blocks strips before `{%`/`{#`, never before `{{` or text).
    rest = original.lstrip()
    lead = original[: len(original) - len(rest)]
    if rest.startswith(("{%-", "{#-", "{{-")):
        mod = "-"
    elif rest.startswith(("{%+", "{#+")) or not rest.startswith(("{%", "{#")):
        mod = "+"
    else:
        mod = ""
    if not lead:
        mod = ""
    return f"{lead}{{#{mod} {_PRELUDE_BEGIN} #}}{body}{{# {_PRELUDE_END} #}}{rest}"


def condition_conversation(conversation, cfg: CRLFTConfig):
    """(conditioned conversation, None), or (None, reason detail) when its class is unknown.

    The conversation keeps its class field, from which its token weight is `cfg.weight(class)`."""
    cls = conversation.extra.get(cfg.class_field)
    if cls not in cfg.rewards:
        return None, f"field {cfg.class_field!r} is {cls!r}, not one of the classes {sorted(cfg.rewards)}"
    return dataclasses.replace(conversation, messages=condition(conversation.messages, cls, cfg)), None
