"""C-RLFT: class conditions in the system message, class-reward token weights, the best class at inference."""

from __future__ import annotations

import json
import math

import pytest

from chatforge.sft.crlft import CRLFTConfig, condition

MESSAGES = [{"role": "user", "content": "Compute 2 + 3."}, {"role": "assistant", "content": "5"}]


def test_condition_goes_first_in_the_system_message():
    cfg = CRLFTConfig()
    assert condition(MESSAGES, "expert", cfg)[0] == {"role": "system", "content": "Source: expert."}
    with_system = [{"role": "system", "content": "Be brief."}, *MESSAGES]
    assert condition(with_system, "novice", cfg)[0]["content"] == "Source: novice. Be brief."
    assert condition(with_system, "novice", cfg)[1:] == MESSAGES


def test_weights_follow_the_code_or_the_paper():
    assert CRLFTConfig().weight("novice") == 0.1 and CRLFTConfig().weight("expert") == 1.0
    paper = CRLFTConfig(weighting="exp", beta=0.5)
    assert paper.weight("novice") == pytest.approx(math.exp(0.2)) and paper.weight("expert") == pytest.approx(math.exp(2))
    assert CRLFTConfig().inference_class == "expert"
    with pytest.raises(ValueError, match="best_class 'gpt4'"):
        CRLFTConfig(best_class="gpt4")


def test_stage_conditions_weights_and_rejects_unknown_classes(tmp_path, tiny_tokenizer_dir):
    from chatforge.run_dir import RejectLog
    from chatforge.sft.formats import ChatSourceConfig
    from chatforge.stages.sft import Config, load_examples
    from chatforge.tokenizer.load import load_tokenizer

    path = tmp_path / "mixed.jsonl"
    rows = [
        {"source": "expert", "messages": MESSAGES},
        {"source": "novice", "messages": [MESSAGES[0], {"role": "assistant", "content": "6"}]},
        {"source": "oracle", "messages": MESSAGES},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = Config(model="unused", data={"sources": [{"path": str(path)}]}, crlft={})
    tokenizer = load_tokenizer(tiny_tokenizer_dir)
    log = RejectLog(tmp_path / "rejected.jsonl")
    examples, stats = load_examples(cfg, cfg.data.sources, tokenizer, log)
    log.close()
    assert [e.weight for e in examples] == [1.0, 0.1] and stats["examples"] == 2
    assert "Source: expert." in tokenizer.decode(examples[0].input_ids)
    rejected = json.loads((tmp_path / "rejected.jsonl").read_text())
    assert rejected["reason"] == "unknown_class" and rejected["where"] == "line 3"
    assert isinstance(cfg.data.sources[0], ChatSourceConfig)


def test_weighted_rows_carry_the_class_weight_on_answer_tokens():
    from chatforge.sft.batches import Example, SFTBatches

    ignore = -100
    a = Example([5, 6, 7], [ignore, 6, 7], weight=0.1)
    batch = SFTBatches([a], 1, 8, 0, "pad").next_batch()
    assert batch["loss_weights"][0, :3].tolist() == pytest.approx([0.1, 0.1, 0.1])
    assert batch["labels"][0].tolist() == [6, 7, ignore]
