"""`chatforge chat`: the terminal REPL fed from stdin with a tiny model (history, commands, streaming)."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from chatforge.cli import main
from chatforge.sampling import Sampler, SamplingConfig, chat_prompt
from tiny_models import make_tiny_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_tokenizer):
    out = tmp_path_factory.mktemp("chat")
    make_tiny_model(vocab_size=384, seed=3, tie_word_embeddings=False).save_pretrained(out)
    tiny_tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def greedy(model_dir, tiny_tokenizer):
    from chatforge.serve.server import load_model

    model, tokenizer = load_model(model_dir)
    sampler = Sampler(model, tokenizer)

    def answer(messages: list[dict], max_new: int) -> str:
        ids = chat_prompt(tokenizer, messages)
        return sampler.generate([ids], SamplingConfig(temperature=0, max_new_tokens=max_new))[0][0].text

    return answer


def run_chat(monkeypatch, capsys, argv: list[str], typed: str) -> str:
    monkeypatch.setattr(sys, "stdin", io.StringIO(typed))
    assert main(["chat", *argv]) == 0
    return capsys.readouterr().out


def test_history_and_system_prompt(model_dir, greedy, monkeypatch, capsys):
    out = run_chat(monkeypatch, capsys, [str(model_dir), "--temperature", "0", "--max-new-tokens", "12",
                                         "--system", "Be brief."],
                   "hello there\nand then?\n/exit\nnever read\n")
    first = greedy([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there"}], 12)
    second = greedy([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there"},
                     {"role": "assistant", "content": first}, {"role": "user", "content": "and then?"}], 12)
    assert first and second
    # Each answer follows its prompt; the second one was conditioned on the first exchange.
    assert f"you> {first}\nyou> {second}\nyou> " in out


def test_commands(model_dir, greedy, monkeypatch, capsys):
    typed = "\n".join([
        "/set temperature 0", "/set max_new_tokens 8", "/set top_p 7", "/set colour blue",
        "hi", "/reset", "hi", "/system You are a pirate.", "hi", "/system", "/show", "/help", "/nope", "",
    ])
    out = run_chat(monkeypatch, capsys, [str(model_dir)], typed + "\n")  # ends with EOF, no /exit
    assert "[temperature = 0.0]" in out and "[max_new_tokens = 8]" in out
    assert "cannot set top_p to '7'" in out
    assert "usage: /set KEY VALUE" in out
    plain = greedy([{"role": "user", "content": "hi"}], 8)
    pirate = greedy([{"role": "system", "content": "You are a pirate."}, {"role": "user", "content": "hi"}], 8)
    assert out.count(f"you> {plain}\n") == 2  # /reset: the second "hi" starts a new conversation
    assert f"[system prompt set; new conversation]\nyou> {pirate}\n" in out
    assert "[system prompt cleared; new conversation]" in out
    assert "temperature=0.0" in out and "system=None; 0 messages" in out
    assert "/set KEY VALUE" in out and "unknown command /nope" in out


def test_cli_over_a_pipe(model_dir):
    env = dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(__file__), "..", "src"))
    result = subprocess.run(
        [sys.executable, "-m", "chatforge", "chat", str(model_dir), "temperature=0", "max_new_tokens=6"],
        input="hello\n/exit\n", capture_output=True, text=True, timeout=120, env=env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"[chatting with {model_dir}") and result.stdout.count("you> ") == 2


def test_missing_model_dir_is_one_line(tmp_path, capsys):
    assert main(["chat", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.strip() == f"error: model directory not found: {tmp_path / 'nope'}"
