"""Serve a model over an OpenAI-compatible HTTP API (/v1/models, /v1/chat/completions, /v1/completions).

    chatforge serve MODEL_DIR [CONFIG.yaml] [key=value | --key value ...] [--print-config]

MODEL_DIR is a Hugging Face directory with safetensors weights and a tokenizer (a stage's `final/`).
Every flag is a config key (`--port 8080`, `--model-name my-model`, `max_tokens=512`); the API key
comes from `--api-key` or the environment variable CHATFORGE_API_KEY. See docs/serving.md.

Examples:
    chatforge serve runs/sft/final
    chatforge serve runs/sft/final --host 0.0.0.0 --port 8080 --model-name tiny-chat --max-batch 32
"""

from __future__ import annotations

from chatforge.serve.config import ServeConfig

Config = ServeConfig
USAGE = "usage: chatforge serve MODEL_DIR [CONFIG.yaml] [key=value | --key value ...] [--print-config]"


def split_model_dir(argv: list[str]) -> tuple[str | None, list[str]]:
    """(MODEL_DIR, the other arguments): MODEL_DIR is a leading positional that is not a YAML file."""
    if argv and not argv[0].startswith("-") and "=" not in argv[0] and not argv[0].endswith((".yaml", ".yml")):
        return argv[0], argv[1:]
    return None, argv


def parse(argv: list[str], config_cls, name: str, usage: str):
    """(config, flags) from `MODEL_DIR [CONFIG.yaml] [overrides]`; the config is None after --help."""
    import sys
    from types import SimpleNamespace

    from chatforge.cli import split_args, stage_help
    from chatforge.config.load import describe_fields, load_config

    model_dir, rest = split_model_dir(argv)
    path, overrides, flags = split_args(rest)
    if flags & {"--help", "-h"}:
        module = SimpleNamespace(Config=config_cls, __doc__=sys.modules[f"chatforge.stages.{name}"].__doc__)
        lines = stage_help(name, module, describe_fields).splitlines()
        print("\n".join([usage, *lines[1:]]))
        return None, flags
    if model_dir is not None:
        overrides = [f"model_dir={model_dir}", *overrides]
    return load_config(config_cls, path, overrides), flags


def main(argv: list[str]) -> int:
    from chatforge.config.load import dump_config

    cfg, flags = parse(argv, ServeConfig, "serve", USAGE)
    if cfg is None:
        return 0
    if "--print-config" in flags:
        print(dump_config(cfg), end="")
        return 0
    from chatforge.serve.server import serve

    serve(cfg)
    return 0
