"""transformers draws a "Loading weights" bar per model load; chatforge's loader and commands hide
transformers' bars (models/quiet.py) and nothing else."""

from __future__ import annotations

import tqdm
from transformers.utils import logging as hf_logging

from chatforge.models.build import load_pretrained
from chatforge.models.quiet import quiet_transformers_bars
from tiny_models import make_tiny_model


def test_loading_through_chatforge_prints_no_weights_bar(tmp_path, capfd):
    make_tiny_model().save_pretrained(tmp_path)
    capfd.readouterr()
    hf_logging.tqdm(range(3), desc="Loading weights").close()  # outside chatforge: the bar is drawn
    assert "Loading weights" in capfd.readouterr().err
    model = load_pretrained(tmp_path)
    assert model.config.hidden_size == 32
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "it/s" not in err, err
    hf_logging.tqdm(range(3), desc="Loading weights").close()  # the hook was put back: drawn again
    assert "Loading weights" in capfd.readouterr().err


def test_only_transformers_bars_are_hidden_and_the_previous_hook_comes_back(capfd):
    calls = []

    def user_hook(factory, args, kwargs):
        calls.append(kwargs.get("desc"))
        return factory(*args, **kwargs)

    previous = hf_logging.set_tqdm_hook(user_hook)
    try:
        with quiet_transformers_bars():
            for _ in hf_logging.tqdm(range(3), desc="Writing model shards"):
                pass
            for _ in tqdm.tqdm(range(3), desc="pretrain"):  # a chatforge stage's own bar
                pass
        err = capfd.readouterr().err
        assert "Writing model shards" not in err and "pretrain: 100%" in err
        hf_logging.tqdm(range(2), desc="after").close()
        assert calls == ["after"]  # the user's hook is back, and was not called inside the block
    finally:
        hf_logging.set_tqdm_hook(previous)
