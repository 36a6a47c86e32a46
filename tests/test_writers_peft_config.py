"""The PEFT writer's adapter_config.json: written without importing peft or transformers, and loaded by
PEFT exactly as the config ``peft.LoraConfig.save_pretrained`` wrote for the same fields."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from merge_bench.merging.writers import peft_adapter_config

SCRIPT = """
import json, sys
from merge_bench.merging.api import merge
merge("simple_avg", json.loads(sys.argv[1]), out=sys.argv[2], format="peft")
print(json.dumps(sorted(sys.modules)))
"""


def test_peft_write_imports_neither_peft_nor_transformers(micro_loras, tmp_path):
    out = tmp_path / "merged"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps([str(p) for p in micro_loras]), str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    modules = set(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    loaded = sorted(m for m in modules if m.split(".")[0] in ("transformers", "peft"))
    assert not loaded, f"the peft writer imported {loaded[:5]}"


def _peft_written(tmp_path, name, **fields):
    """What the writer wrote before: PEFT's LoraConfig for the same fields, saved by PEFT."""
    from peft import LoraConfig

    path = tmp_path / name
    LoraConfig(lora_alpha=fields["r"], lora_dropout=0.0, bias="none", inference_mode=True, **fields).save_pretrained(
        str(path))
    return path


@pytest.mark.parametrize("fields", [
    dict(r=16, target_modules=["model.layers.1.self_attn.v_proj", "model.layers.0.self_attn.q_proj"],
         fan_in_fan_out=False, task_type=None, base_model_name_or_path=None),
    dict(r=8, target_modules=["transformer.h.0.attn.c_attn"], fan_in_fan_out=True, task_type="CAUSAL_LM",
         base_model_name_or_path="/models/gpt2"),
    dict(r=32, target_modules=["encoder.block.0.layer.0.SelfAttention.q"], fan_in_fan_out=False,
         task_type="SEQ_2_SEQ_LM", base_model_name_or_path="google/t5-small"),
])
def test_our_config_loads_as_peft_own(fields, tmp_path):
    from peft import LoraConfig, PeftConfig

    ours = tmp_path / "ours"
    ours.mkdir()
    written = peft_adapter_config(**fields)
    (ours / "adapter_config.json").write_text(json.dumps(written, indent=2, sort_keys=True) + "\n")
    theirs = _peft_written(tmp_path, "theirs", **fields)
    loaded, reference = PeftConfig.from_pretrained(str(ours)), PeftConfig.from_pretrained(str(theirs))
    assert isinstance(loaded, LoraConfig)
    assert loaded.to_dict() == reference.to_dict()
    # Every key we write has the value PEFT writes for it (target_modules: PEFT writes a set's order).
    peft_json = json.loads((theirs / "adapter_config.json").read_text())
    for key, value in written.items():
        if key == "target_modules":
            assert sorted(peft_json[key]) == value
        else:
            assert peft_json[key] == value, key
