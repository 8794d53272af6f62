"""Exports as tools outside chatforge see them (chatforge.export): every stage's final/ loaded by a
process that imports only transformers (and peft), generating from a chat prompt and stopping at the
end of the turn; bos as in training; LoRA adapters loadable from another directory; transformers 4.x.

The chain (module fixture): pretrain (llama-1m, 3 steps) -> SFT full on one conversation until the
model has learnt it (so it writes `<|im_end|>` by itself) -> DPO (2 steps at a tiny LR, so it still
does) and SFT LoRA and RM LoRA from the SFT model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from chatforge.cli import main

QUESTION = "Is the sky blue?"
ANSWER = "Yes, it is blue."
TRAIN = ["train.progress=false", "train.device=cpu", "train.save_every=0"]

# Runs in a fresh interpreter; reads only what transformers reads. Prints one JSON line: per directory,
# the chat prompt's ids, greedy new tokens, the stop ids, the tokenizer's eos and a plain text's ids.
OUTSIDE = textwrap.dedent(
    """
    import json, sys
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    question, seen = sys.argv[1], {}
    for final in sys.argv[2:]:
        tok = AutoTokenizer.from_pretrained(final)
        model = AutoModelForCausalLM.from_pretrained(final, dtype=torch.float32)
        prompt = tok.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True, tokenize=True)
        prompt = list(prompt["input_ids"] if hasattr(prompt, "keys") else prompt)
        out = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=40)[0].tolist()
        stops = model.generation_config.eos_token_id
        seen[final] = {
            "prompt": prompt, "new": out[len(prompt):], "stops": stops if isinstance(stops, list) else [stops],
            "eos": tok.eos_token, "plain": tok("Tom lives in Paris.")["input_ids"], "bos_id": tok.bos_token_id,
            "inputs": sorted(tok("Tom")), "generate_kwargs": model.generate(**tok.apply_chat_template(
                [{"role": "user", "content": question}], add_generation_prompt=True, return_tensors="pt",
                return_dict=True), max_new_tokens=2).shape[1] - len(prompt),
        }
    seen["chatforge_imported"] = any(m.split(".")[0] == "chatforge" for m in sys.modules)
    print(json.dumps(seen))
    """
)
STAGES = ("pretrain", "sft", "dpo")


def outside(python: str, runs: dict, stages=STAGES) -> dict:
    """What OUTSIDE sees of each stage's final/, run by `python` from `/` without chatforge on the path."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"OMP_NUM_THREADS": "1"}
    finals = [str(runs[stage] / "final") for stage in stages]
    done = subprocess.run(
        [python, "-c", OUTSIDE, QUESTION, *finals], capture_output=True, text=True, cwd="/", env=env, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["chatforge_imported"] is False
    return {stage: seen[final] for stage, final in zip(stages, finals)}


@pytest.fixture(scope="module")
def chain(tmp_path_factory, tiny_tokenizer_dir):
    root = tmp_path_factory.mktemp("chain")
    convo = {"messages": [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": ANSWER}]}
    (root / "sft.jsonl").write_text(json.dumps(convo) + "\n")
    pair = {"prompt": [{"role": "user", "content": QUESTION}], "chosen": ANSWER, "rejected": "No."}
    (root / "pairs.jsonl").write_text("".join(json.dumps(pair | {"id": i}) + "\n" for i in range(4)))
    (root / "corpus.jsonl").write_text("".join(json.dumps({"text": f"Person {i} lives in city {i % 7}."}) + "\n" for i in range(40)))
    runs = {name: root / name for name in ("pretrain", "sft", "dpo", "sft_lora", "rm_lora")}
    assert main(["pretrain", f"out={runs['pretrain']}", f"tokenizer={tiny_tokenizer_dir}", "model.preset=llama-1m",
                 f"data.sources=[{{path: {root / 'corpus.jsonl'}}}]", "data.seq_len=64", f"data.cache_dir={root / 'cache'}", "train.max_steps=3",
                 "train.micro_batch_size=2", "train.eval_every=0", "final_eval_documents=2", "schedule.warmup_steps=1",
                 *TRAIN]) == 0
    sft = ["data.seq_len=64", "train.micro_batch_size=1", f"data.sources=[{{path: {root / 'sft.jsonl'}}}]", *TRAIN]
    assert main(["sft", f"model={runs['pretrain'] / 'final'}", f"out={runs['sft']}", "train.max_steps=40",
                 "optim.lr=3e-3", *sft]) == 0
    assert main(["sft", f"model={runs['pretrain'] / 'final'}", f"out={runs['sft_lora']}", "mode=lora",
                 "train.max_steps=2", "optim.lr=1e-2", *sft]) == 0
    pairs = f"[{{path: {root / 'pairs.jsonl'}}}]"
    assert main(["dpo", f"model={runs['sft'] / 'final'}", f"out={runs['dpo']}", f"data.sources={pairs}",
                 "train.max_steps=2", "train.micro_batch_size=2", "train.eval_every=0", "optim.lr=1e-6",
                 "data.max_length=64", *TRAIN]) == 0
    assert main(["rm", f"model={runs['sft'] / 'final'}", f"out={runs['rm_lora']}", f"data.sources={pairs}",
                 "mode=lora", "train.max_steps=2", "train.micro_batch_size=2", *TRAIN]) == 0
    return runs


@pytest.fixture(scope="module")
def seen(chain):
    return outside(sys.executable, chain)


def test_generation_outside_chatforge_stops_at_the_end_of_the_turn(chain, seen):
    from chatforge.tokenizer.load import load_tokenizer

    tokenizer = load_tokenizer(chain["sft"] / "final")
    im_end, eos = tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("</s>")
    assert (im_end, eos) == (5, 3)  # the tokenizer stage's documented ids
    answer = tokenizer(ANSWER, add_special_tokens=False)["input_ids"]
    for stage in STAGES:
        assert seen[stage]["stops"] == [im_end, eos] and seen[stage]["eos"] == "<|im_end|>", stage
        # generate(**apply_chat_template(..., return_dict=True)) works: no token_type_ids for a causal LM
        assert seen[stage]["inputs"] == ["attention_mask", "input_ids"] and seen[stage]["generate_kwargs"] <= 2
    # The SFT model learnt the answer and closes it; generate stops right there (max_new_tokens is 40).
    # DPO (2 steps at lr 1e-6) kept that. The pretrained model never saw a chat: it only gets the stops.
    assert seen["sft"]["new"] == answer + [im_end]
    assert seen["dpo"]["new"] == answer + [im_end]


def test_bos_outside_chatforge_agrees_with_training(chain, seen):
    """Plain text: [bos] + tokens, as pretraining stores each document; chat: the SFT encoding."""
    from chatforge.data.token_cache import with_bos_eos
    from chatforge.sft.masking import encode_conversation
    from chatforge.tokenizer.load import load_tokenizer

    for stage in STAGES:
        tokenizer = load_tokenizer(chain[stage] / "final")
        ids = tokenizer("Tom lives in Paris.", add_special_tokens=False)["input_ids"]
        document = with_bos_eos(ids, [tokenizer.bos_token_id], [tokenizer.eos_token_id])  # how pretraining stores it
        plain, prompt = seen[stage]["plain"], seen[stage]["prompt"]
        assert plain == document[:-1] and plain[0] == seen[stage]["bos_id"] == 2
        trained = encode_conversation(tokenizer, [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": "x"}])
        assert prompt == trained.input_ids[: len(prompt)]
        assert prompt[0] != 2  # chatml writes no bos, and SFT trained without one


def test_reports_label_the_loss_by_unit_and_plot_the_logged_metrics(chain):
    from chatforge.engine.log import read_metrics
    from chatforge.engine.plots import loss_unit

    units = {stage: loss_unit(read_metrics(chain[stage] / "metrics.jsonl")) for stage in ("pretrain", "sft", "dpo", "rm_lora")}
    assert units == {"pretrain": "nats/token", "sft": "nats/token", "dpo": "mean per pair", "rm_lora": "mean per pair or ranking"}
    assert (chain["dpo"] / "report" / "metrics.png").is_file()  # reward margin and accuracy, not only loss and lr


def test_chatforge_reads_its_export_back_with_the_document_eos(chain):
    from transformers import AutoTokenizer

    from chatforge.tokenizer.load import load_tokenizer

    final = chain["sft"] / "final"
    assert AutoTokenizer.from_pretrained(final).eos_token == "<|im_end|>"  # outside tools
    assert load_tokenizer(final).eos_token == "</s>"  # chatforge: documents end as in pretraining
    sidecar = json.loads((final / "chatforge_tokenizer.json").read_text())
    assert sidecar["document_eos_token"] == "</s>" and sidecar["stop_tokens"] == ["<|im_end|>", "</s>"]


# AutoPeftModel from `/`: the largest logit difference between the adapter on its base and final/.
ADAPTER_CHECK = textwrap.dedent(
    """
    import sys, torch
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM
    ids = torch.tensor([[4, 70, 80, 90, 5, 3]])
    a = AutoPeftModelForCausalLM.from_pretrained(sys.argv[1]).eval()(ids).logits
    b = AutoModelForCausalLM.from_pretrained(sys.argv[2]).eval()(ids).logits
    print(float((a - b).abs().max()))
    """
)


def adapter_gap(python: str, run) -> float:
    done = subprocess.run([python, "-c", ADAPTER_CHECK, str(run / "adapter"), str(run / "final")],
                          capture_output=True, text=True, cwd="/", timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return float(done.stdout.strip().splitlines()[-1])


def test_lora_adapter_is_saved_by_default_and_loads_from_elsewhere(chain):
    """AutoPeftModel from another working directory gives the merged final/'s logits."""
    config = json.loads((chain["sft_lora"] / "adapter" / "adapter_config.json").read_text())
    assert os.path.isabs(config["base_model_name_or_path"])
    assert config["base_model_name_or_path"] == str((chain["pretrain"] / "final").resolve())
    assert adapter_gap(sys.executable, chain["sft_lora"]) < 1e-4


def test_reward_model_adapter_carries_its_own_base(chain):
    """The RM's base directory is a causal LM, so the classifier base is written beside the adapter."""
    from peft import AutoPeftModelForSequenceClassification
    from transformers import AutoModelForSequenceClassification

    adapter = chain["rm_lora"] / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str((adapter / "base").resolve())
    ids = torch.tensor([[4, 70, 80, 90, 5]])
    with torch.no_grad():
        a = AutoPeftModelForSequenceClassification.from_pretrained(adapter).eval()(ids).logits
        b = AutoModelForSequenceClassification.from_pretrained(chain["rm_lora"] / "final").eval()(ids).logits
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_rope_theta_is_written_for_transformers_4(tmp_path, tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    from chatforge.export import export_final
    from tiny_models import make_tiny_model

    model = make_tiny_model(vocab_size=len(tiny_tokenizer), rope_theta=500000.0)
    export_final(model, tmp_path, tiny_tokenizer)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["rope_theta"] == 500000.0 and config["rope_parameters"]["rope_theta"] == 500000.0
    ids = torch.tensor([[4, 70, 80, 90]])
    with torch.no_grad():
        torch.testing.assert_close(AutoModelForCausalLM.from_pretrained(tmp_path)(ids).logits, model(ids).logits)
    tok = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert tok["tokenizer_class"] == "PreTrainedTokenizerFast" and "extra_special_tokens" not in tok
    assert tok["additional_special_tokens"] == ["<|im_start|>", "<|im_end|>"]


@pytest.mark.skipif(not os.environ.get("CHATFORGE_TF4_PYTHON"), reason="set CHATFORGE_TF4_PYTHON (bench/transformers4_env.sh)")
def test_transformers_4_reads_the_export(chain, seen):
    """Under transformers 4.x (and its peft) the exports behave exactly as under 5.x."""
    python = os.environ["CHATFORGE_TF4_PYTHON"]
    version = subprocess.run([python, "-c", "import transformers; print(transformers.__version__)"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert version.startswith("4."), version
    assert outside(python, chain) == seen  # same tokens, stops, bos and generated answers under 4.x
    assert adapter_gap(python, chain["sft_lora"]) < 1e-4  # and the adapter loads with that version's peft
