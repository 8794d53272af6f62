"""final/: the one function that writes a trained model for tools outside chatforge.

Every training stage writes `final/` through `export_final` (the engine for full/freeze runs, the
LoRA path for adapter runs). Besides the weights (safetensors) and the tokenizer, it settles four
things that plain `transformers`, vLLM and lm-evaluation-harness read, each checked by
`tests/test_export.py` in a process that imports only `transformers` (and `peft`):

1. **Generation stops at the end of a turn.** `generation_config.json` lists the chat template's
   end-of-turn token(s) and then the document-end eos as `eos_token_id` (`[<|im_end|>, </s>]` for
   chatml), so `model.generate` and vLLM stop where chatforge's sampler stops. The exported
   tokenizer's `eos_token` becomes the (first) end-of-turn token as well (the convention of
   Qwen2-Instruct and Llama-3-Instruct), for tools that stop on `tokenizer.eos_token`
   (lm-evaluation-harness's `until`). The eos that pretraining appends to documents is recorded in
   `chatforge_tokenizer.json`, and `chatforge.tokenizer.load.load_tokenizer` puts it back, so a later
   chatforge stage reading this `final/` ends documents exactly as pretraining did.
2. **bos: one rule from training to export.** Pretraining starts every document with bos
   (`data/token_cache.py`), and chatforge's multiple-choice scoring does the same; so the exported
   tokenizer prepends bos to plain text (`tokenizer(text)`), through the post-processor in
   `tokenizer.json`. Chat text is exactly what the chat template renders:
   `apply_chat_template(..., tokenize=True)` adds no special tokens of its own, so it gives the
   tokens SFT trained on (bos only where the template writes `{{ bos_token }}`). A tokenizer with no
   bos token gets none (pretraining put none).
3. **transformers 4.x reads it.** transformers 5 names the generic fast tokenizer
   `TokenizersBackend` in `tokenizer_config.json` and lists extra special tokens as a plain list;
   4.x has no such class and expects `additional_special_tokens`. Both are rewritten to what 4.x and
   5.x read. `config.json` also gets `rope_theta` (and `rope_scaling`) beside 5.x's
   `rope_parameters`: 4.x ignores the latter and would silently fall back to theta 10000.
   Checked against transformers 4.57.1 (`tests/test_export.py::test_transformers_4_reads_the_export`,
   which runs when `CHATFORGE_TF4_PYTHON` names a 4.x interpreter; `bench/tf4_env.sh` makes one).
4. **LoRA adapters are portable.** With an adapter model, the adapter alone is saved to
   `adapter_dir` (the stages use `OUT/adapter/`, beside `final/`; written atomically like it) before merging, with
   `base_model_name_or_path` an absolute path, so `AutoPeftModelForCausalLM.from_pretrained(adapter)`
   works from any working directory. When the adapter's base weights are not on disk as a directory
   of the same architecture (a `full_then_lora` run, whose base is its own full segment; a reward
   model, whose base directory is a causal LM), the base is written to `adapter_dir/base/` and
   referenced instead.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import torch

from chatforge.atomic_dir import atomic_dir
from chatforge.tokenizer.load import EXPORT_SIDECAR

logger = logging.getLogger("chatforge")

_V5_ONLY_TOKENIZER_CLASS = "TokenizersBackend"
_PORTABLE_TOKENIZER_CLASS = "PreTrainedTokenizerFast"  # the same generic fast tokenizer, in 4.x and 5.x


def export_final(
    model: torch.nn.Module,
    out_dir: str | Path,
    tokenizer: Any = None,
    *,
    state_dict: dict[str, torch.Tensor] | None = None,
    adapter_dir: str | Path | None = None,
    base_trained: bool = False,
) -> Path:
    """Write `out_dir` as a plain `transformers` model directory (points 1-4 of the module docstring).

    `model`: a `transformers` model, or a `peft` model whose adapters are merged into `out_dir`
    (the adapter alone goes to `adapter_dir` first, when given). `state_dict`: the full weights when
    the live model's are sharded (FSDP2; the engine gathers them). `base_trained`: the weights under
    the adapters were trained too (full_then_lora), so the directory they were loaded from is not
    their base. Returns `out_dir`.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if _is_peft(model):
        if adapter_dir is not None:
            save_adapter(model, Path(adapter_dir), base_trained=base_trained)
        model = model.merge_and_unload()
    model.save_pretrained(out_dir, state_dict=state_dict, safe_serialization=True)
    add_legacy_config_keys(out_dir / "config.json")
    if tokenizer is not None:
        stops = stop_token_ids(tokenizer)
        if (out_dir / "generation_config.json").is_file():
            write_generation_stops(out_dir, stops)
        save_tokenizer_for_export(tokenizer, out_dir, stops)
    return out_dir


# ---- 1. generation stops ---------------------------------------------------------------------------
def stop_token_ids(tokenizer) -> list[int]:
    """The chat template's end-of-turn token(s), then eos: where a generated answer ends."""
    ends: list[int] = []
    if getattr(tokenizer, "chat_template", None):
        from chatforge.errors import ChatforgeError
        from chatforge.sft.masking import end_of_turn_ids

        try:
            ends = end_of_turn_ids(tokenizer)
        except ChatforgeError as exc:  # a template chatforge cannot train answers on: still export
            logger.warning("export: no end-of-turn token found in the chat template (%s); stopping on eos only", exc)
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    return list(dict.fromkeys(ends + eos))


def write_generation_stops(out_dir: Path, stops: list[int]) -> None:
    from transformers import GenerationConfig

    config = GenerationConfig.from_pretrained(out_dir)
    config.eos_token_id = stops if len(stops) > 1 else (stops[0] if stops else None)
    config.save_pretrained(out_dir)


# ---- 2 and 3. the tokenizer ------------------------------------------------------------------------
def save_tokenizer_for_export(tokenizer, out_dir: Path, stops: list[int]) -> None:
    """`tokenizer.save_pretrained(out_dir)`, then: bos on plain text, eos = end of turn, 4.x-readable config.

    The caller's tokenizer object is not changed: the saved files are edited.
    """
    tokenizer.save_pretrained(out_dir)
    bos = tokenizer.bos_token
    if bos is not None and tokenizer.bos_token_id is not None and (out_dir / "tokenizer.json").is_file():
        prepend_bos(out_dir / "tokenizer.json", bos, tokenizer.bos_token_id)  # (a slow tokenizer has no tokenizer.json)
    config_path = out_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    document_eos = tokenizer.eos_token
    end_of_turn = tokenizer.convert_ids_to_tokens(stops[0]) if stops else document_eos
    config["eos_token"] = end_of_turn
    # 4.x's generic fast tokenizer also returns token_type_ids, which generate(**inputs) rejects for a causal LM
    config.setdefault("model_input_names", ["input_ids", "attention_mask"])
    for key in ("is_local", "local_files_only"):  # how this copy was loaded, not a property of the tokenizer
        config.pop(key, None)
    if config.get("tokenizer_class") == _V5_ONLY_TOKENIZER_CLASS:
        config["tokenizer_class"] = _PORTABLE_TOKENIZER_CLASS
    extra = config.get("extra_special_tokens")
    if isinstance(extra, list):  # 5.x's list form; 4.x reads only a dict there
        config.pop("extra_special_tokens")
        config["additional_special_tokens"] = list(dict.fromkeys([*config.get("additional_special_tokens", []), *extra]))
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    sidecar = {
        "document_eos_token": document_eos,
        "stop_tokens": tokenizer.convert_ids_to_tokens(stops),
        "note": "written by chatforge.export; chatforge.tokenizer.load sets eos_token back to document_eos_token",
    }
    (out_dir / EXPORT_SIDECAR).write_text(json.dumps(sidecar, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def prepend_bos(tokenizer_json: Path, bos: str, bos_id: int) -> bool:
    """Make the tokenizer in `tokenizer_json` start every encoded text with bos; False if it already did.

    The existing post-processor (byte-level offsets, say) runs first, then a template that puts bos
    in front; a pair gets bos before each text, as Llama's tokenizer does.
    """
    from tokenizers import Tokenizer, processors

    backend = Tokenizer.from_file(str(tokenizer_json))
    if backend.encode("a", add_special_tokens=True).ids[:1] == [bos_id]:
        return False
    add_bos = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos}:1 $B:1", special_tokens=[(bos, bos_id)]
    )
    current = backend.post_processor
    backend.post_processor = add_bos if current is None else processors.Sequence([current, add_bos])
    backend.save(str(tokenizer_json))
    return True


def add_legacy_config_keys(config_json: Path) -> None:
    """`rope_theta` / `rope_scaling` beside `rope_parameters`, which transformers 4.x does not read."""
    if not config_json.is_file():
        return
    config = json.loads(config_json.read_text(encoding="utf-8"))
    rope = config.get("rope_parameters")
    if not isinstance(rope, dict) or "rope_theta" not in rope or "rope_theta" in config:
        return
    config["rope_theta"] = rope["rope_theta"]
    if rope.get("rope_type", "default") != "default":
        config["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
    config_json.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


# ---- 4. LoRA adapters ------------------------------------------------------------------------------
def _is_peft(model: torch.nn.Module) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def save_adapter(model, adapter_dir: Path, *, base_trained: bool = False) -> Path:
    """Save the adapter alone with an absolute `base_model_name_or_path` (see point 4); returns the base used.

    Written like `final/` (`atomic_dir`): into a hidden temporary renamed into place with a completeness
    marker, so a kill mid-write leaves the previous `adapter_dir` or none, never a partial one. A base
    written beside the adapter is referenced at its final place (`adapter_dir/base`), not the temporary's."""
    adapter_dir = Path(adapter_dir)
    name = model.active_adapter if isinstance(model.active_adapter, str) else model.active_adapter[0]
    peft_config = model.peft_config[name]
    base = _base_directory(peft_config.base_model_name_or_path, type(model.get_base_model()).__name__)
    written = base is None or base_trained
    with atomic_dir(adapter_dir) as tmp:
        if written:
            base = adapter_dir / "base"
            # unload() strips the adapters without merging them: the weights they were trained on
            copy.deepcopy(model).unload().save_pretrained(tmp / "base", safe_serialization=True)
            add_legacy_config_keys(tmp / "base" / "config.json")
        base = base.resolve()
        saved = peft_config.base_model_name_or_path
        peft_config.base_model_name_or_path = str(base)
        try:
            # A base written here holds these very embeddings, so they need no copy in the adapter
            # (peft's "auto" would look for the base's config at its final place, not yet there).
            model.save_pretrained(tmp, **({"save_embedding_layers": False} if written else {}))
        finally:
            peft_config.base_model_name_or_path = saved
    return base


def _base_directory(reference: str | None, architecture: str) -> Path | None:
    """`reference` as a directory whose config names `architecture`, or None."""
    if not reference:
        return None
    path = Path(reference)
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return path if architecture in (config.get("architectures") or []) else None
