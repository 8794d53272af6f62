"""The LoRA adapter beside final/ (`export.save_adapter`) is written atomically, like final/: a crash
inside the writer leaves the previous complete adapter directory, or none, and no temporary."""

from __future__ import annotations

import json

import pytest

from chatforge.atomic_dir import MARKER, check_complete
from chatforge.export import save_adapter
from tiny_models import make_tiny_model


def _lora_model(seed: int = 0):
    from peft import LoraConfig, get_peft_model

    # built from config: no base directory on disk, so the base is written into adapter/base
    return get_peft_model(make_tiny_model(seed=seed), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))


def _files(directory) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def _crash_inside_the_writer(monkeypatch, model):
    """The adapter's own save writes one file of the temporary directory, then the process 'dies'."""

    def save_then_die(self, out, *args, **kwargs):
        (out / "adapter_model.safetensors").write_bytes(b"half a file")
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(type(model), "save_pretrained", save_then_die)


def test_adapter_is_complete_and_names_its_final_base(tmp_path):
    adapter = tmp_path / "run" / "adapter"
    base = save_adapter(_lora_model(), adapter)
    check_complete(adapter)
    marked = json.loads((adapter / MARKER).read_text())["files"]
    assert "adapter_config.json" in marked and "base/config.json" in marked
    # the reference is the base's final place, not the temporary it was written in
    assert base == (adapter / "base").resolve()
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == str(base)
    assert list(adapter.parent.iterdir()) == [adapter]  # no hidden temporary left


def test_crash_mid_write_leaves_no_partial_adapter(tmp_path, monkeypatch):
    adapter = tmp_path / "run" / "adapter"
    model = _lora_model()
    _crash_inside_the_writer(monkeypatch, model)
    with pytest.raises(RuntimeError, match="killed mid-write"):
        save_adapter(model, adapter)
    assert not adapter.exists()
    assert list(adapter.parent.iterdir()) == []  # the temporary (with its half file and base/) is gone


def test_crash_mid_rewrite_keeps_the_previous_adapter(tmp_path, monkeypatch):
    adapter = tmp_path / "run" / "adapter"
    save_adapter(_lora_model(seed=0), adapter)
    before = _files(adapter)
    model = _lora_model(seed=1)
    _crash_inside_the_writer(monkeypatch, model)
    with pytest.raises(RuntimeError, match="killed mid-write"):
        save_adapter(model, adapter)
    assert _files(adapter) == before  # byte for byte the first write
    check_complete(adapter)
    assert list(adapter.parent.iterdir()) == [adapter]
