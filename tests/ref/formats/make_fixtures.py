#!/usr/bin/env python3
"""Fixtures for tests/model/test_torchzip.c and tests/model/test_gguf.c, written by independent code
(torch.save, HF transformers, safetensors, numpy).  Run from the repository root:

    /work/shared/tools/pyref run tests/ref/formats/make_fixtures.py

Writes tests/ref/formats/data/.  Deterministic (fixed seeds)."""
import collections, io, json, os, pickle, shutil, struct, zipfile
import numpy as np
import torch

OUT = "tests/ref/formats/data"
os.makedirs(OUT, exist_ok=True)
torch.manual_seed(1234)
rng = np.random.default_rng(1234)

# ------------------------------------------------------------------ torch zip (torch.save) fixtures
TZ = os.path.join(OUT, "torchzip")
os.makedirs(TZ, exist_ok=True)
expected = {}

def record(fname, sd):
    exp = {}
    for k, t in sd.items():
        t = t.contiguous() if t.is_contiguous() else t
        exp[k] = {"dtype": {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}[t.dtype],
                  "shape": list(t.shape),
                  "f32": [float(v) for v in t.float().reshape(-1).tolist()]}
    expected[fname] = exp

def save(fname, sd, rec=True):
    torch.save(sd, os.path.join(TZ, fname))
    if rec:
        record(fname, sd)

save("f32_2d.pt", {"weight": torch.randn(3, 5), "bias": torch.randn(3)})
save("bf16_1d.pt", {"x": torch.randn(7).to(torch.bfloat16)})
save("f16_2d.pt", {"w": torch.randn(4, 6).to(torch.float16)})
lin = torch.nn.Linear(8, 1)
save("linear_state_dict.pt", lin.state_dict())          # OrderedDict with _metadata, like reward_head.pt
od = collections.OrderedDict()
od["a.weight"] = torch.randn(2, 3, 4)
od["a.bias"] = torch.randn(2)
od["scalar"] = torch.tensor(3.5)
od["b.weight"] = torch.randn(5, 2).to(torch.bfloat16)
od["c"] = torch.randn(1, 16)
save("multi.pt", od)
base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
save("shared.pt", {"rows12": base[1:3], "row2": base[2], "all": base})   # one storage, offsets 6/12/0
save("noncontig.pt", {"t": torch.randn(3, 4).t()}, rec=False)
save("long.pt", {"ids": torch.arange(5)}, rec=False)
# nested dict (checkpoint style) -> names joined with "."
save("nested.pt", {"state_dict": {"w": torch.ones(2, 2)}, "step": 7}, rec=False)
expected["nested.pt"] = {"state_dict.w": {"dtype": "F32", "shape": [2, 2], "f32": [1.0] * 4}}

# the same archive as f32_2d.pt but deflate-compressed
with zipfile.ZipFile(os.path.join(TZ, "f32_2d.pt")) as zin, \
        zipfile.ZipFile(os.path.join(TZ, "compressed.pt"), "w", zipfile.ZIP_DEFLATED) as zout:
    for info in zin.infolist():
        zout.writestr(info.filename, zin.read(info.filename))

# an archive whose pickle uses an opcode torch never emits for state_dicts (BINFLOAT)
with zipfile.ZipFile(os.path.join(TZ, "float_pickle.pt"), "w", zipfile.ZIP_STORED) as z:
    z.writestr("archive/data.pkl", pickle.dumps({"lr": 0.5}, protocol=2))
    z.writestr("archive/version", "3\n")

with open(os.path.join(TZ, "expected.json"), "w") as f:
    json.dump(expected, f, indent=1)

# ------------------------------------------------------------------ quantisation reference (numpy)
# llama.cpp reference rules (ggml-quants.c quantize_row_q8_0_ref / quantize_row_q4_0_ref), in float32:
#   q8_0: amax = max|x|; d = amax/127; id = d ? 1/d : 0; q = roundf(x*id) (half away from zero); store fp16(d)
#   q4_0: m = the x with the largest |x| (signed, first on ties); d = m/-8; id = d ? 1/d : 0;
#         q = min(15, (int8)(x*id + 8.5f)) (truncation toward zero); nibbles: byte j = q[j] | q[j+16] << 4
Q = os.path.join(OUT, "quant")
os.makedirs(Q, exist_ok=True)
rows, cols = 6, 128
x = rng.standard_normal((rows, cols)).astype(np.float32)
x[0, 0:32] = 0.0                                   # an all-zero block
x[1, 32:64] = np.float32(0.25)                     # a constant block
x[2, 64:96] = rng.uniform(-1, 1, 32).astype(np.float32); x[2, 70] = np.float32(-3.0)  # negative extreme
x[3, 0:32] = np.linspace(-2, 2, 32, dtype=np.float32)          # exact ties for q4_0
x[4] *= np.float32(1e-3)
x[5, 96:128] = rng.uniform(-60000, 60000, 32).astype(np.float32)

def roundf(v):   # C roundf on float32 values: exact, half away from zero
    v64 = v.astype(np.float64)
    return (np.sign(v64) * np.floor(np.abs(v64) + 0.5)).astype(np.float32)

def q8_0(row):
    out = bytearray()
    for b in row.reshape(-1, 32):
        amax = np.max(np.abs(b)).astype(np.float32)
        d = np.float32(amax / np.float32(127))
        idv = np.float32(1) / d if d != 0 else np.float32(0)
        q = roundf((b * idv).astype(np.float32)).astype(np.int8)
        out += np.float16(d).tobytes() + q.tobytes()
    return bytes(out)

def q4_0(row):
    out = bytearray()
    for b in row.reshape(-1, 32):
        i = int(np.argmax(np.abs(b)))
        m = b[i]
        d = np.float32(m / np.float32(-8))
        idv = np.float32(1) / d if d != 0 else np.float32(0)
        v = ((b * idv).astype(np.float32) + np.float32(8.5)).astype(np.float32)
        q = np.minimum(15, np.trunc(v).astype(np.int8)).astype(np.uint8)
        out += np.float16(d).tobytes() + (q[:16] | (q[16:] << 4)).astype(np.uint8).tobytes()
    return bytes(out)

with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
    open(os.path.join(Q, "input_f32.bin"), "wb").write(x.astype("<f4").tobytes())
    open(os.path.join(Q, "q8_0.bin"), "wb").write(b"".join(q8_0(r) for r in x))
    open(os.path.join(Q, "q4_0.bin"), "wb").write(b"".join(q4_0(r) for r in x))
    open(os.path.join(Q, "f16.bin"), "wb").write(x.astype("<f2").tobytes())
    bf = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().astype("<i2")
    open(os.path.join(Q, "bf16.bin"), "wb").write(bf.tobytes())
json.dump({"rows": rows, "cols": cols}, open(os.path.join(Q, "shape.json"), "w"))

# ------------------------------------------------------------------ tiny HF checkpoints
from safetensors.torch import save_file
from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

def save_hf(model, d, dtype):
    if os.path.isdir(d):
        shutil.rmtree(d)
    model.to(dtype).save_pretrained(d, safe_serialization=True)

# (1) tiny Qwen2ForCausalLM with the full Qwen2 vocabulary (151936 rows) so llama.cpp accepts it with the
#     real tokenizer (tests copy tokenizer.json / tokenizer_config.json from ../shared at test time).
cfg = Qwen2Config(vocab_size=151936, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                  rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
                  bos_token_id=151643, eos_token_id=151645)
torch.manual_seed(1)
m = Qwen2ForCausalLM(cfg)
with torch.no_grad():
    for p in m.parameters():
        p.normal_(0, 0.5)
save_hf(m, os.path.join(OUT, "tiny-qwen2"), torch.bfloat16)

# (2) tiny PRM: Qwen2 trunk (vocab 64) + score.0/score.2 head, config architectures
#     Qwen2ForProcessRewardModel.
cfg = Qwen2Config(vocab_size=64, hidden_size=64, intermediate_size=96, num_hidden_layers=1,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=False)
torch.manual_seed(2)
m = Qwen2ForCausalLM(cfg)
sd = {k: v.detach().clone().contiguous() for k, v in m.state_dict().items() if not k.startswith("lm_head")}
H = cfg.hidden_size
sd["score.0.weight"] = torch.randn(H, H)
sd["score.0.bias"] = torch.randn(H)
sd["score.2.weight"] = torch.randn(2, H)
sd["score.2.bias"] = torch.randn(2)
d = os.path.join(OUT, "tiny-prm")
os.makedirs(d, exist_ok=True)
save_file(sd, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
c = cfg.to_dict()
c["architectures"] = ["Qwen2ForProcessRewardModel"]
c["num_labels"] = 2
c["torch_dtype"] = "float32"
json.dump(c, open(os.path.join(d, "config.json"), "w"), indent=1)
if os.path.exists(os.path.join(d, "reward_head.pt")):
    os.remove(os.path.join(d, "reward_head.pt"))

# (2b) tiny scalar-head model like ReasonFlux-PRM-1.5B: Qwen2ForCausalLM (vocab 64) + reward_head.pt
#      (torch.save of nn.Linear(H, 1).state_dict()).
cfg = Qwen2Config(vocab_size=64, hidden_size=64, intermediate_size=96, num_hidden_layers=1,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=True)
torch.manual_seed(4)
m = Qwen2ForCausalLM(cfg)
d = os.path.join(OUT, "tiny-scalar")
save_hf(m, d, torch.float32)
rh = torch.nn.Linear(cfg.hidden_size, 1)
torch.save(rh.state_dict(), os.path.join(d, "reward_head.pt"))

# (3) tiny Qwen3 (qk-norm, no q/k/v bias), vocab 64, f32
cfg = Qwen3Config(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=256,
                  rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=False)
torch.manual_seed(3)
m = Qwen3ForCausalLM(cfg)
save_hf(m, os.path.join(OUT, "tiny-qwen3"), torch.float32)
print("fixtures written to", OUT)
