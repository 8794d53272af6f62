"""recipes/gpu_hf.yaml end to end on CPU: a real (tiny, random) Hugging Face chat model in
CHATFORGE_HF_MODEL and every stage cut to a few steps and samples, the recipe's own chain otherwise
(the world stage at size tiny). What a GPU machine then has to do is run it at size; here, that the
stages plug into each other around a model no stage of the recipe made, and that the card and the
closing lines name the right models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from chatforge.recipes.runner import run_recipe

REPO = Path(__file__).resolve().parents[1]
FEW_STEPS = {"train.max_steps": 2, "train.micro_batch_size": 4, "train.save_every": 1}


def shrunk_gpu_hf(out: Path) -> dict:
    recipe = yaml.safe_load((REPO / "recipes" / "gpu_hf.yaml").read_text())
    recipe["out"] = str(out)
    stages = recipe["stages"]
    stages["world"]["config"]["size"] = "tiny"
    for name in ("sft", "rm", "dpo"):
        stages[name]["overrides"] = dict(FEW_STEPS)
    stages["bon"]["overrides"] = {"data.max_prompts": 3, "n_max": 2, "sampling.max_new_tokens": 16}
    stages["rest"]["overrides"] = {
        "data.max_prompts": 4, "e_step.samples_per_prompt": 2, "e_step.sampling.max_new_tokens": 16, "m_step.epochs": 1,
        "m_step.micro_batch_size": 4, "eval.n": 2, "eval.ks": [1, 2], "eval.sampling.max_new_tokens": 16,
        "eval.max_train_prompts": 3, "eval.max_test_prompts": 3,
    }
    recipe["card"].update(knowledge_questions=4, instructions_max=4, verifiable_max=3, samples=2, ks=[1, 2], pairs_max=4,
                          text_documents=2, kl_prompts=2, max_new_tokens=16)
    return recipe


@pytest.fixture(scope="module")
def local_model(tmp_path_factory, tiny_tokenizer_dir):
    """A saved tiny chat model with 1024 positions (the recipe's seq_len is 512), as a local model directory."""
    from tiny_models import save_tiny_chat_model

    return save_tiny_chat_model(tmp_path_factory.mktemp("local_hf_model"), tiny_tokenizer_dir, max_position_embeddings=1024)


@pytest.mark.slow
def test_gpu_hf_runs_end_to_end_on_cpu_with_a_tiny_local_model(tmp_path, monkeypatch, local_model):
    monkeypatch.setenv("CHATFORGE_HF_MODEL", str(local_model))
    path = tmp_path / "gpu_hf_small.yaml"
    path.write_text(yaml.safe_dump(shrunk_gpu_hf(tmp_path / "out"), sort_keys=False))
    lines: list[str] = []
    result = run_recipe(path, say=lines.append)
    assert [s.name for s in result.steps] == ["world", "sft", "rm", "dpo", "bon", "rest", "eval", "card"]
    for step in result.steps:
        assert json.loads((step.dir / "recipe_stage.json").read_text())["state"] == "done", step.name
    # the machine's model is the card's base column and the eval's baseline; sft's gain is against it
    md = result.report.with_suffix(".md").read_text()  # result.report is report.html
    assert "| measure | base | sft | dpo |" in md and "| sft − base | dpo − sft |" in md
    evaluated = json.loads((tmp_path / "out" / "eval" / "eval.json").read_text())
    assert evaluated["models"]["base"] == str(local_model) and evaluated["baseline"] == "base"
    # the closing lines offer the last model the run made (rest's iter_2 when ReST-EM kept samples,
    # else dpo), never the starting model
    made = [str(tmp_path / "out" / "rest" / "iter_2" / "sft" / "final"), str(tmp_path / "out" / "dpo" / "final")]
    assert result.chat_model in made and (Path(result.chat_model) / "config.json").is_file()
