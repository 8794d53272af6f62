"""Chat with a model in the terminal: history, a system prompt, sampling settings, streamed answers.

    chatforge chat MODEL_DIR [CONFIG.yaml] [key=value | --key value ...]

Type a message and press Enter; the answer streams as it is decoded. Commands:
    /system TEXT        set the system prompt (and start a new conversation); /system alone clears it
    /reset              forget the conversation (the system prompt stays)
    /set KEY VALUE      change a sampling setting: temperature, top_p, top_k, max_new_tokens, seed
    /show               print the settings and the conversation length
    /help               this list
    /exit, /quit        leave (Ctrl-D too)

Examples:
    chatforge chat runs/sft/final
    chatforge chat runs/sft/final --system "You are terse." --temperature 0.7 --max-new-tokens 128
"""

from __future__ import annotations

import sys

from pydantic import Field, ValidationError

from chatforge.config.base import StrictModel
from chatforge.errors import ChatforgeError

USAGE = "usage: chatforge chat MODEL_DIR [CONFIG.yaml] [key=value | --key value ...]"
SETTINGS = ("temperature", "top_p", "top_k", "max_new_tokens", "seed")
COMMANDS = __doc__[__doc__.index("Commands:") : __doc__.index("Examples:")].rstrip()


class Config(StrictModel):
    model_dir: str = Field(..., min_length=1, description="Hugging Face model directory with a chat template")
    system: str | None = Field(None, description="system prompt at the start of every conversation")
    temperature: float = Field(0.7, ge=0.0, description="0 = greedy")
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="nucleus sampling; 1 = off")
    top_k: int = Field(0, ge=0, description="keep the k most likely tokens; 0 = off")
    max_new_tokens: int = Field(256, ge=1, description="tokens per answer at most")
    seed: int | None = Field(None, description="seed of each answer's draws; null = random")
    device: str = Field("auto", description="auto = cuda when available, else cpu")
    prompt: str = Field("you> ", description="input prompt shown before each message")


class ChatSession:
    """The conversation and the settings; `reply` streams one answer to `out`."""

    def __init__(self, model, tokenizer, cfg: Config, out=None):
        from chatforge.sampling import max_positions
        from chatforge.serve.stream import IncrementalDecoder

        if not getattr(tokenizer, "chat_template", None):
            raise ChatforgeError(f"{cfg.model_dir}: the tokenizer has no chat template; chat needs one")
        self.tokenizer = tokenizer
        self.decoder = IncrementalDecoder(model, tokenizer)
        self.limit = max_positions(model)
        self.cfg = cfg
        self.out = out or sys.stdout
        self.history: list[dict[str, str]] = []

    def messages(self) -> list[dict[str, str]]:
        system = [{"role": "system", "content": self.cfg.system}] if self.cfg.system else []
        return system + self.history

    def reply(self, text: str) -> str:
        from chatforge.sampling import SamplingConfig, chat_prompt

        self.history.append({"role": "user", "content": text})
        ids = chat_prompt(self.tokenizer, self.messages())
        # Drop the oldest turns while the conversation does not fit the model's context.
        while self.limit is not None and len(ids) + 1 > self.limit and len(self.history) > 1:
            self.history = self.history[2:] if len(self.history) > 2 else self.history[-1:]
            ids = chat_prompt(self.tokenizer, self.messages())
        if self.limit is not None and len(ids) >= self.limit:
            self.history.pop()
            raise ChatforgeError(f"the message has {len(ids)} tokens; the model's context is {self.limit}")
        c = self.cfg
        sampling = SamplingConfig(temperature=c.temperature, top_p=c.top_p, top_k=c.top_k,
                                  max_new_tokens=c.max_new_tokens, seed=c.seed)

        def on_delta(_: int, piece: str, finish: str | None) -> None:
            self.out.write(piece)
            self.out.flush()

        try:
            (completion,) = self.decoder.generate(ids, sampling, on_delta)
        except BaseException:
            self.history.pop()  # Ctrl-C or a failure: the unanswered message leaves the history
            raise
        self.out.write("\n")
        self.history.append({"role": "assistant", "content": completion.text})
        return completion.text

    def command(self, line: str) -> bool:
        """Run a /command; False when the session should end."""
        name, _, arg = line[1:].partition(" ")
        arg = arg.strip()
        if name in ("exit", "quit"):
            return False
        if name == "system":
            self.cfg = self.cfg.model_copy(update={"system": arg or None})
            self.history = []
            self.say(f"system prompt {'set' if arg else 'cleared'}; new conversation")
        elif name == "reset":
            self.history = []
            self.say("new conversation")
        elif name == "set":
            self.set(arg)
        elif name == "show":
            settings = ", ".join(f"{k}={getattr(self.cfg, k)}" for k in SETTINGS)
            self.say(f"{settings}; system={self.cfg.system!r}; {len(self.history)} messages")
        elif name == "help":
            self.say(COMMANDS)
        else:
            self.say(f"unknown command /{name}; /help lists them")
        return True

    def set(self, arg: str) -> None:
        import yaml

        key, _, raw = arg.partition(" ")
        key = key.replace("-", "_")
        if key not in SETTINGS or not raw.strip():
            self.say(f"usage: /set KEY VALUE with KEY one of {', '.join(SETTINGS)}")
            return
        try:
            value = yaml.safe_load(raw)
            self.cfg = Config.model_validate(self.cfg.model_dump() | {key: value})
        except (ValidationError, yaml.YAMLError) as exc:
            first = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
            self.say(f"cannot set {key} to {raw.strip()!r}: {first}")
            return
        self.say(f"{key} = {getattr(self.cfg, key)}")

    def say(self, text: str) -> None:
        self.out.write(f"[{text}]\n")
        self.out.flush()


def repl(session: ChatSession, prompt: str, stdin=None) -> None:
    """Read messages until /exit or end of input."""
    stdin = stdin or sys.stdin
    if stdin.isatty():
        try:
            import readline  # noqa: F401  (line editing and ↑ history for input())
        except ImportError:
            pass
    while True:
        try:
            line = input(prompt) if stdin is sys.stdin else _read(stdin, prompt, session.out)
        except EOFError:
            session.out.write("\n")
            return
        except KeyboardInterrupt:
            session.out.write("\n")
            continue
        line = line.strip()
        if not line:
            continue
        if line.startswith("/"):
            if not session.command(line):
                return
            continue
        try:
            session.reply(line)
        except KeyboardInterrupt:
            session.out.write("\n[interrupted]\n")
        except ChatforgeError as exc:
            session.say(f"error: {exc}")


def _read(stdin, prompt: str, out) -> str:
    out.write(prompt)
    out.flush()
    line = stdin.readline()
    if not line:
        raise EOFError
    return line


def main(argv: list[str]) -> int:
    from chatforge.serve.server import load_model
    from chatforge.stages.serve import parse

    cfg, flags = parse(argv, Config, "chat", USAGE)
    if cfg is None:
        return 0
    if "--print-config" in flags:
        from chatforge.config.load import dump_config

        print(dump_config(cfg), end="")
        return 0
    model, tokenizer = load_model(cfg.model_dir, cfg.device)
    session = ChatSession(model, tokenizer, cfg)
    print(f"[chatting with {cfg.model_dir}; /help for commands, /exit to leave]")
    repl(session, cfg.prompt)
    return 0
