"""`chatforge synth`: the seed's list template, parsing of the numbered list, the filters (length,
blocked words, ROUGE-L), Alpaca and `messages` output that SFT reads, and a run against `chatforge serve`."""

from __future__ import annotations

import json

import pytest

from chatforge.clean.self_instruct import (
    CjkWordTokenizer,
    InstructionFilter,
    Task,
    parse_tasks,
    render_prompt,
)
from chatforge.stages.synth import Config, run

SEEDS = [
    Task("Rank these countries by population.", "Brazil, China, Japan", "China, Brazil, Japan"),
    Task("What is 47 plus 85?", "", "132"),
]

REPLY = (
    " Give three tips for staying healthy.\n3. Input: <noinput>\n3. Output: Sleep, eat vegetables, walk.\n"
    "###\n4. Instruction: Describe the picture below.\n4. Input: a photo of a cat\n4. Output: A cat.\n"
    "###\n5. Instruction: Give three tips for staying happy.\n5. Input: <noinput>\n5. Output: Friends.\n"
    "###\n6. Instruction: this block has no output line\n6. Input: x\n"
    "###\n7. Instruction: Translate the sentence into French.\n7. Input: The cat sleeps.\n7. Output: Le chat dort.\n###"
)


def test_prompt_lists_the_examples_and_opens_the_next_task():
    prompt = render_prompt(SEEDS, "en", 20)
    assert "List of 20 tasks:" in prompt
    assert "###\n1. Instruction: Rank these countries by population.\n1. Input: Brazil, China, Japan\n1. Output: China, Brazil, Japan\n" in prompt
    assert "2. Input: <noinput>\n" in prompt
    assert prompt.endswith("###\n3. Instruction:")
    zh = render_prompt([Task("按人口对这些国家进行排名。", "巴西，中国", "中国，巴西")], "zh", 10)
    assert "你被要求提供10个多样化的任务指令" in zh and zh.endswith("###\n2. 指令:")


def test_parse_the_numbered_list():
    tasks, broken = parse_tasks(REPLY, 3, "en")
    assert broken == 1
    assert tasks[0] == Task("Give three tips for staying healthy.", "", "Sleep, eat vegetables, walk.")
    assert [t.instruction for t in tasks] == ["Give three tips for staying healthy.", "Describe the picture below.",
                                              "Give three tips for staying happy.", "Translate the sentence into French."]
    zh, broken = parse_tasks(" 写一首关于春天的诗。\n2. 输入: <无输入>\n2. 输出：春风吹绿了柳树。\n###", 2, "zh")
    assert zh == [Task("写一首关于春天的诗。", "", "春风吹绿了柳树。")] and broken == 0


def test_filters_by_hand():
    keep = InstructionFilter([t.instruction for t in SEEDS], min_units=3, max_units=20, max_rouge=0.7)
    tasks, _ = parse_tasks(REPLY, 3, "en")
    assert keep.reason(tasks[0]) is None
    keep.add(tasks[0])
    assert keep.reason(tasks[1]) == "blocked_word"
    # "give three tips for staying happy" vs "... healthy": LCS 5 of 6 words, F1 = 5/6 > 0.7
    assert keep.reason(tasks[2]) == "similar_instruction"
    assert keep.reason(Task("Hi there", "", "x")) == "too_short"
    assert keep.reason(Task("What is 47 plus 85?", "", "132")) == "duplicate"
    assert keep.reason(Task("- list three rivers in Europe", "", "x")) == "starts_with_symbol"
    assert keep.reason(Task("List three rivers in Europe.", "", "")) == "empty_output"


def test_rouge_tokenizer_splits_chinese_into_characters():
    assert CjkWordTokenizer().tokenize("写一首诗 about Spring") == ["写", "一", "首", "诗", "about", "spring"]
    keep = InstructionFilter(["写一首关于春天的诗。"], min_units=3, max_units=50, max_rouge=0.7)
    assert keep.reason(Task("写一首关于夏天的诗。", "", "夏日炎炎。")) == "similar_instruction"  # 7 of 8 characters
    assert keep.reason(Task("解释光合作用的过程。", "", "植物利用阳光。")) is None


def _write_seeds(path, tasks):
    path.write_text("".join(json.dumps(t.alpaca(), ensure_ascii=False) + "\n" for t in tasks))


def test_run_with_a_generator_writes_alpaca_and_messages_that_sft_reads(tmp_path):
    from chatforge.run_dir import RejectLog
    from chatforge.sft.formats import read_conversation_file

    _write_seeds(tmp_path / "seeds.jsonl", SEEDS)
    prompts = []

    def generate(prompt, seed):
        prompts.append(prompt)
        return REPLY

    report = run(Config(seeds=str(tmp_path / "seeds.jsonl"), out=str(tmp_path / "out"), num_instructions=10,
                        max_requests=2, prompt_examples=2), generate=generate)
    # request 1 keeps "healthy" and "French"; request 2 finds them (and the rest) again
    assert report == {"requests": 2, "tasks_parsed": 8, "kept": 2, "seeds": 2,
                      "dropped": {"duplicate": 2, "blocked_word": 2, "similar_instruction": 2, "unparseable_block": 2}}
    assert prompts[0].endswith("###\n3. Instruction:")
    alpaca = [json.loads(line) for line in (tmp_path / "out" / "alpaca.jsonl").read_text().splitlines()]
    assert alpaca[1] == {"instruction": "Translate the sentence into French.", "input": "The cat sleeps.", "output": "Le chat dort."}
    for name in ("alpaca.jsonl", "messages.jsonl"):
        conversations = list(read_conversation_file(tmp_path / "out" / name, RejectLog(None)))
        assert len(conversations) == 2
    messages = json.loads((tmp_path / "out" / "messages.jsonl").read_text().splitlines()[1])["messages"]
    assert messages == [{"role": "user", "content": "Translate the sentence into French.\n\nThe cat sleeps."},
                        {"role": "assistant", "content": "Le chat dort."}]


@pytest.mark.parametrize("chat", [False, True])
def test_run_against_chatforge_serve(tmp_path, tiny_tokenizer, chat):
    from chatforge.serve import ServeConfig
    from chatforge.serve.server import BackgroundServer, build
    from tiny_models import make_tiny_model

    model_dir = tmp_path / "model"
    make_tiny_model(vocab_size=384, seed=3, tie_word_embeddings=False, max_position_embeddings=2048).save_pretrained(model_dir)
    tiny_tokenizer.save_pretrained(model_dir)
    _write_seeds(tmp_path / "seeds.jsonl", SEEDS)
    app = build(ServeConfig(model_dir=str(model_dir), model_name="tiny", max_tokens=32, log_level="warning"))
    with BackgroundServer(app) as url:
        cfg = Config.model_validate({"seeds": str(tmp_path / "seeds.jsonl"), "out": str(tmp_path / "out"),
                                     "max_requests": 2, "num_instructions": 5, "prompt_examples": 1,
                                     "generator": {"base_url": url + "/v1", "model": "tiny", "chat": chat, "max_tokens": 16}})
        report = run(cfg)
    # a random tiny model writes no task list: every reply is kept aside as unparseable, nothing crashes
    assert report["requests"] == 2 and report["kept"] == 0
    rejected = [json.loads(line) for line in (tmp_path / "out" / "rejected.jsonl").read_text().splitlines()]
    assert [r["reason"] for r in rejected] == ["unparseable", "unparseable"] and all(isinstance(r["reply"], str) for r in rejected)
