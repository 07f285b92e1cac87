"""Reference fixtures for the training core (tests/train/test_train.c), computed with PyTorch autograd on
Hugging Face's own Qwen2Model (eager attention) in float64, plus the PRM heads.

Run from the repository root:   /work/shared/tools/pyref run tests/ref/train/make_fixtures.py

Writes tests/ref/train/fixtures/:
  config.json                 tiny Qwen2 PRM config (hidden 32, 2 layers, 4 heads / 2 kv heads, vocab 64)
  model.safetensors           initial weights (F32, HF names; includes lm_head and reward_head for the LM and
                              scalar losses)
  grads_<loss>.safetensors    d loss / d param for loss in joint, ce, lm, scalar (F32; zeros where torch has
                              no gradient)
  grads_joint_long.safetensors  joint-loss gradients for a 300-token record (threaded kernels)
  grads_lora_joint.safetensors  joint-loss gradients of LoRA A/B (all 7 targets, r 4, alpha 8) + score head
  lora_init.safetensors       the LoRA matrices (PEFT names) used for those
  adamw_final.safetensors     weights after 10 AdamW steps (joint loss, grad accumulation 2, clipping, warmup +
                              cosine schedule) on the PRM-only model (no lm_head / reward_head)
  expected.json               records, loss values, score logits, per-step losses / grad norms / learning rates
"""
import json
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import Qwen2Config
from transformers.models.qwen2.modeling_qwen2 import Qwen2Model

OUT = "tests/ref/train/fixtures"
os.makedirs(OUT, exist_ok=True)
torch.manual_seed(20260526)

V, H, I, L, NH, NKV = 64, 32, 48, 2, 4, 2
THETA, EPS = 10000.0, 1e-6
STEP_TAG = 7  # plays the role of <extra_0>

cfg = Qwen2Config(vocab_size=V, hidden_size=H, intermediate_size=I, num_hidden_layers=L,
                  num_attention_heads=NH, num_key_value_heads=NKV, max_position_embeddings=128,
                  rope_theta=THETA, rms_norm_eps=EPS, tie_word_embeddings=False, use_sliding_window=False)
cfg._attn_implementation = "eager"


class PRM(nn.Module):
    def __init__(self, with_extra_heads):
        super().__init__()
        self.model = Qwen2Model(cfg)
        self.score = nn.Sequential(nn.Linear(H, H), nn.ReLU(), nn.Linear(H, 2))
        self.with_extra = with_extra_heads
        if with_extra_heads:
            self.lm_head = nn.Linear(H, V, bias=False)
            self.reward_head = nn.Linear(H, 1)

    def hidden(self, ids):
        return self.model(input_ids=ids[None]).last_hidden_state[0]  # [T,H] after the final norm


def init_weights(m):
    """Random weights at scales that give O(1) activations and non-trivial gradients everywhere."""
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif p.dim() == 1:
                p.copy_(0.2 * torch.randn_like(p))
            elif "embed_tokens" in name:
                p.copy_(torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / math.sqrt(p.shape[1]))


def make_record(T, n_steps):
    ids = torch.randint(8, V, (T,))
    # step tags spread over the sequence, the last one a few tokens before the end (like <extra_0><|im_end|>\n)
    pos = sorted(set(int(x) for x in torch.linspace(3, T - 3, n_steps).round().tolist()))
    ids[torch.tensor(pos)] = STEP_TAG
    r = torch.rand(len(pos))
    return {"tokens": ids.tolist(), "step_pos": pos, "step_reward": [float(x) for x in r.float()],
            "step_label": [int(x > 0.5) for x in r.float()], "final_reward": float(torch.rand(1).float()),
            "scalar_target": float(torch.rand(1).float())}


LAMBDA_STEP, LAMBDA_FINAL = 1.0, 0.5


def losses(m, rec):
    ids = torch.tensor(rec["tokens"])
    pos = torch.tensor(rec["step_pos"])
    r = torch.tensor(rec["step_reward"], dtype=torch.float64)
    h = m.hidden(ids)
    logits2 = m.score(h)
    p = torch.softmax(logits2, dim=-1)[:, 1]
    # read-out of the final prediction: P(class 1) at the last token
    joint = LAMBDA_STEP * ((p[pos] - r) ** 2).mean() + LAMBDA_FINAL * (p[-1] - rec["final_reward"]) ** 2
    out = {"joint": joint, "logits2": logits2}
    out["ce"] = F.cross_entropy(logits2[pos], torch.tensor(rec["step_label"]))
    if m.with_extra:
        out["lm"] = F.cross_entropy(m.lm_head(h)[:-1], ids[1:])
        out["scalar"] = (torch.sigmoid(m.reward_head(h[-1]))[0] - rec["scalar_target"]) ** 2
    return out


def f32_state(m):
    return {k: v.detach().float().contiguous() for k, v in m.state_dict().items()}


expected = {"lambda_step": LAMBDA_STEP, "lambda_final": LAMBDA_FINAL, "step_tag": STEP_TAG}

# ---------------------------------------------------------------- gradients of each loss
m = PRM(True)
init_weights(m)
state = f32_state(m)  # the weights as stored (F32); the reference runs in float64 from exactly these
save_file(state, f"{OUT}/model.safetensors", metadata={"format": "pt"})
m.load_state_dict({k: v.double() for k, v in state.items()})
m.double()

rec = make_record(24, 4)
expected["grad_record"] = rec
expected["grad_losses"] = {}
for name in ["joint", "ce", "lm", "scalar"]:
    m.zero_grad(set_to_none=True)
    out = losses(m, rec)
    out[name].backward()
    expected["grad_losses"][name] = float(out[name].detach())
    if name == "joint":
        expected["grad_logits2"] = [float(x) for x in out["logits2"].detach().flatten()]
    grads = {k: (p.grad if p.grad is not None else torch.zeros_like(p)).float().contiguous()
             for k, p in m.named_parameters()}
    save_file(grads, f"{OUT}/grads_{name}.safetensors")

# ---------------------------------------------------------------- 10 AdamW steps (PRM-only model)
pm = PRM(False)
pm.load_state_dict({k: v for k, v in state.items() if not k.startswith(("lm_head", "reward_head"))})
pm.double()
records = [make_record(T, n) for T, n in [(16, 3), (20, 4), (28, 5), (37, 6)]]
opt_cfg = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01, "max_grad_norm": 0.8,
           "warmup_steps": 2, "total_steps": 10, "accum": 2, "schedule": "cosine"}
decay = [p for n, p in pm.named_parameters() if p.dim() >= 2]
no_decay = [p for n, p in pm.named_parameters() if p.dim() < 2]
opt = torch.optim.AdamW([{"params": decay, "weight_decay": opt_cfg["weight_decay"]},
                         {"params": no_decay, "weight_decay": 0.0}],
                        lr=opt_cfg["lr"], betas=(opt_cfg["beta1"], opt_cfg["beta2"]), eps=opt_cfg["eps"],
                        foreach=False)


def lr_lambda(step):  # warmup then cosine, as in transformers.get_cosine_schedule_with_warmup
    w, tot = opt_cfg["warmup_steps"], opt_cfg["total_steps"]
    if step < w:
        return step / max(1, w)
    prog = (step - w) / max(1, tot - w)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * prog)))


sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
step_losses, step_norms, step_lrs = [], [], []
for step in range(opt_cfg["total_steps"]):
    opt.zero_grad(set_to_none=True)
    total = 0.0
    for j in range(opt_cfg["accum"]):
        r_ = records[(step * opt_cfg["accum"] + j) % len(records)]
        loss = losses(pm, r_)["joint"] / opt_cfg["accum"]
        loss.backward()
        total += float(loss)
    norm = torch.nn.utils.clip_grad_norm_(pm.parameters(), opt_cfg["max_grad_norm"])
    step_lrs.append(opt.param_groups[0]["lr"])
    opt.step()
    sched.step()
    step_losses.append(total)
    step_norms.append(float(norm))
save_file(f32_state(pm), f"{OUT}/adamw_final.safetensors")
expected["adamw"] = {"config": opt_cfg, "records": records, "losses": step_losses, "grad_norms": step_norms,
                     "lrs": step_lrs}

# ---------------------------------------------------------------- a long record (exercises the threaded paths)
rec_long = make_record(300, 12)
m.zero_grad(set_to_none=True)
out = losses(m, rec_long)
out["joint"].backward()
expected["long_record"] = rec_long
expected["long_joint"] = float(out["joint"].detach())
save_file({k: (p.grad if p.grad is not None else torch.zeros_like(p)).float().contiguous()
           for k, p in m.named_parameters() if not k.startswith(("lm_head", "reward_head"))},
          f"{OUT}/grads_joint_long.safetensors")

# ---------------------------------------------------------------- LoRA gradients (PEFT math, no dropout)
LORA_R, LORA_ALPHA = 4, 8.0
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class LoraLinear(nn.Module):
    """PEFT LoRA Linear: base(x) + lora_B(lora_A(x)) * (alpha / r)."""

    def __init__(self, base):
        super().__init__()
        self.base = base
        self.lora_A = nn.Linear(base.in_features, LORA_R, bias=False)
        self.lora_B = nn.Linear(LORA_R, base.out_features, bias=False)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))  # PEFT default for A
        # PEFT initialises B to zero; a random B here makes every LoRA gradient non-trivial
        nn.init.normal_(self.lora_B.weight, std=0.2)
        self.scaling = LORA_ALPHA / LORA_R

    def forward(self, x):
        return self.base(x) + self.lora_B(self.lora_A(x)) * self.scaling


lm = PRM(False)
lm.load_state_dict({k: v for k, v in state.items() if not k.startswith(("lm_head", "reward_head"))})
for p in lm.parameters():
    p.requires_grad_(False)
lora_state = {}
for li, layer in enumerate(lm.model.layers):
    for t in LORA_TARGETS:
        parent = layer.self_attn if t in ("q_proj", "k_proj", "v_proj", "o_proj") else layer.mlp
        wrapped = LoraLinear(getattr(parent, t))
        setattr(parent, t, wrapped)
        sub = "self_attn" if parent is layer.self_attn else "mlp"
        for ab in ("lora_A", "lora_B"):
            w = getattr(wrapped, ab).weight
            with torch.no_grad():
                w.copy_(w.float())  # exactly representable in F32
            lora_state[f"base_model.model.model.layers.{li}.{sub}.{t}.{ab}.weight"] = (
                w.detach().float().contiguous(), w)
for p in lm.score.parameters():  # the head is trained too (PEFT modules_to_save)
    p.requires_grad_(True)
save_file({k: v[0] for k, v in lora_state.items()}, f"{OUT}/lora_init.safetensors")
lm.double()
# .double() replaced the parameter tensors: look them up again by name
named = dict(lm.named_parameters())
lm.zero_grad(set_to_none=True)
out = losses(lm, rec)
out["joint"].backward()
lora_grads = {}
for k in lora_state:
    pname = k[len("base_model.model."):]  # the module path inside lm: model.layers.N.<sub>.<t>.lora_X.weight
    lora_grads[k] = named[pname].grad.float().contiguous()
for k in ["score.0.weight", "score.0.bias", "score.2.weight", "score.2.bias"]:
    lora_grads[k] = named[k].grad.float().contiguous()
save_file(lora_grads, f"{OUT}/grads_lora_joint.safetensors")
expected["lora"] = {"r": LORA_R, "alpha": LORA_ALPHA, "targets": LORA_TARGETS, "joint": float(out["joint"].detach())}

config = {"architectures": ["Qwen2ForProcessRewardModel"], "model_type": "qwen2", "vocab_size": V,
          "hidden_size": H, "intermediate_size": I, "num_hidden_layers": L, "num_attention_heads": NH,
          "num_key_value_heads": NKV, "max_position_embeddings": 128, "rope_theta": THETA,
          "rms_norm_eps": EPS, "tie_word_embeddings": False, "hidden_act": "silu", "num_labels": 2,
          "torch_dtype": "float32", "use_sliding_window": False}
with open(f"{OUT}/config.json", "w") as f:
    json.dump(config, f, indent=1)
with open(f"{OUT}/expected.json", "w") as f:
    json.dump(expected, f, indent=1)
print("losses", expected["grad_losses"])
print("adamw losses", step_losses)
print("adamw grad norms", step_norms)
print("adamw lrs", step_lrs)
