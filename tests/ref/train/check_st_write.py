"""Cross-checks fluxprm's safetensors writer and PEFT adapter output with the reference `safetensors` package.

  mkdir -p tests/tmp/stcheck
  FPT_ST_OUT=tests/tmp/stcheck/ckpt.safetensors FPT_LORA_OUT=tests/tmp/stcheck/adapter \\
      build-train/tests/train/test_train
  /work/shared/tools/pyref run tests/ref/train/check_st_write.py tests/tmp/stcheck

The checkpoint written by fpt_model_save must load with safetensors.torch.load_file / safe_open and equal the
fixture weights it was loaded from, bit for bit; the adapter directory must hold PEFT-named LoRA matrices of the
right shapes and a parseable adapter_config.json.
"""
import json
import struct
import sys

import torch
from safetensors import safe_open
from safetensors.torch import load_file

d = sys.argv[1] if len(sys.argv) > 1 else "tests/tmp/stcheck"
FIX = "tests/ref/train/fixtures"

raw = open(f"{d}/ckpt.safetensors", "rb").read()
(hl,) = struct.unpack("<Q", raw[:8])
assert hl % 8 == 0, hl
header = json.loads(raw[8:8 + hl])
assert header["__metadata__"] == {"format": "pt"}, header["__metadata__"]
ours = load_file(f"{d}/ckpt.safetensors")
ref = load_file(f"{FIX}/model.safetensors")
assert set(ours) == set(ref), set(ours) ^ set(ref)
for k in ref:
    assert ours[k].dtype == torch.float32 and ours[k].shape == ref[k].shape, k
    assert torch.equal(ours[k], ref[k]), k
with safe_open(f"{d}/ckpt.safetensors", framework="pt") as f:
    assert f.metadata() == {"format": "pt"}
print(f"checkpoint: {len(ours)} tensors equal to the fixture")

ad = load_file(f"{d}/adapter/adapter_model.safetensors")
cfg = json.load(open(f"{d}/adapter/adapter_config.json"))
assert cfg["peft_type"] == "LORA" and cfg["r"] == 4 and cfg["lora_alpha"] == 8.0, cfg
lora_init = load_file(f"{FIX}/lora_init.safetensors")
n = 0
for k, v in lora_init.items():
    assert k in ad and torch.equal(ad[k], v), k
    n += 1
for k in ["score.0.weight", "score.0.bias", "score.2.weight", "score.2.bias"]:
    assert torch.equal(ad["base_model.model." + k], ref[k]), k
assert cfg["modules_to_save"] == ["score"], cfg["modules_to_save"]
print(f"adapter: {n} LoRA matrices + score head with PEFT names, config {sorted(cfg)}")
print("OK")
