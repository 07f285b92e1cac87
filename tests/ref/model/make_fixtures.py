"""Builds the tiny random-weight Qwen2/Qwen3 checkpoints under tests/ref/model/ and their expected outputs,
computed by Hugging Face transformers (float32) — the independent reference for tests/model/test_model.c.

Run from the repository root:   /work/shared/tools/pyref run tests/ref/model/make_fixtures.py [--long]
(--long also (re)builds the 20k-token fixture, which takes a minute.)

Each fixture directory holds config.json, the weights as written by save_pretrained (safetensors), and
expected.json:
  {"generator": ..., "inv_freq": [d/2 floats, HF's rotary inv_freq],
   "cases": [{"ids": [...], "positions": [...],                 # step positions (the <extra_0>-like token)
              "hidden_positions": [...], "hidden": [[H floats] per hidden position],  # final (normed) hidden
              "logits": [[L floats] per position], "probs": [P(class 1) or sigmoid per position],
              "embed_last": [H], "embed_mean": [H]}]}               # L2-normalised pooled hidden states
Weights are drawn from a fixed seed with larger-than-default scales so that the outputs are not all ~0.5.
"""
import json
import math
import os
import shutil
import sys

import torch
import torch.nn as nn
from safetensors.torch import save_file
from transformers import (Qwen2Config, Qwen2ForCausalLM, Qwen2ForSequenceClassification, Qwen2ForTokenClassification,
                          Qwen2Model,
                          Qwen2PreTrainedModel, Qwen3Config, Qwen3ForCausalLM)
import transformers

HERE = os.path.dirname(os.path.abspath(__file__))
torch.set_num_threads(2)


class Qwen2ForProcessRewardModel(Qwen2PreTrainedModel):
    """The Qwen2.5-Math-PRM / ReasonFlux-PRM-7B layout: Qwen2 decoder + score = Linear(H,H) -> ReLU -> Linear(H,2)."""
    config_class = Qwen2Config
    base_model_prefix = "model"

    def __init__(self, config):
        super().__init__(config)
        self.model = Qwen2Model(config)
        H = config.hidden_size
        self.score = nn.Sequential(nn.Linear(H, H, bias=True), nn.ReLU(), nn.Linear(H, 2, bias=True))
        self.post_init()

    def forward(self, input_ids):
        h = self.model(input_ids=input_ids).last_hidden_state
        return h, self.score(h)


def reinit(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                fan_in = p.shape[-1]
                p.copy_(torch.randn(p.shape, generator=g) * (1.5 / math.sqrt(fan_in)))


def fl(t):
    return [float(x) for x in t.reshape(-1).tolist()]


def sequences(vocab, step_id, seed, lengths):
    """Random id sequences with a step token every few tokens and always at the end."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for T in lengths:
        ids = torch.randint(0, vocab, (T,), generator=g)
        ids[ids == step_id] = (step_id + 1) % vocab
        pos = list(range(5, T - 1, max(3, T // 7))) + [T - 1]
        for p in pos:
            ids[p] = step_id
        out.append((ids.tolist(), pos))
    return out


def trunk_of(model):
    return model.model if hasattr(model, "model") else model


def expected(model, head, cases, inv_freq, hidden_all_max=64, extra=None):
    """head: 'prm' | 'seqcls' | ('scalar', linear) | None."""
    res = {"generator": "transformers %s, torch %s (float32, %s attention)" %
           (transformers.__version__, torch.__version__, model.config._attn_implementation),
           "inv_freq": fl(inv_freq), "cases": []}
    if extra:
        res.update(extra)
    for ids, pos in cases:
        x = torch.tensor([ids])
        with torch.no_grad():
            h = trunk_of(model)(input_ids=x).last_hidden_state[0]  # [T,H]
        T = len(ids)
        hp = list(range(T)) if T <= hidden_all_max else sorted(set(pos + [0, 1, T // 2, T - 1]))
        c = {"ids": ids, "positions": pos, "hidden_positions": hp, "hidden": [fl(h[p]) for p in hp],
             "embed_last": fl(nn.functional.normalize(h[-1], dim=0)),
             "embed_mean": fl(nn.functional.normalize(h.mean(0), dim=0))}
        with torch.no_grad():
            if head == "prm":
                lg = model.score(h)[pos]
                c["logits"] = [fl(r) for r in lg]
                c["probs"] = fl(torch.softmax(lg, -1)[:, 1])
            elif head == "seqcls":
                lg = model.score(h)[pos]
                c["logits"] = [fl(r) for r in lg]
                c["probs"] = fl(torch.softmax(lg, -1)[:, 1])
            elif isinstance(head, tuple):
                lg = head[1](h)[pos]
                c["logits"] = [fl(r) for r in lg]
                c["probs"] = fl(torch.sigmoid(lg[:, 0]))
        res["cases"].append(c)
    return res


def rotary_inv_freq(model):
    return trunk_of(model).rotary_emb.inv_freq.detach().float()


def fresh(name):
    d = os.path.join(HERE, name)
    if os.path.isdir(d):
        shutil.rmtree(d)
    os.makedirs(d)
    return d


def write_expected(d, res):
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump(res, f, separators=(",", ":"))


def build_tied():
    """(a) Qwen2ForCausalLM, tied embeddings, rope_theta 1e6, GQA 2:1, f32, single file."""
    cfg = Qwen2Config(vocab_size=4096, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, rope_theta=1e6, rms_norm_eps=1e-6,
                      tie_word_embeddings=True, max_position_embeddings=4096, attn_implementation="eager")
    m = Qwen2ForCausalLM(cfg).eval()
    reinit(m, 1)
    m.tie_weights()
    d = fresh("qwen2_tied")
    m.save_pretrained(d)
    write_expected(d, expected(m, None, sequences(4096, 7, 11, [1, 9, 40]), rotary_inv_freq(m)))


def build_prm(name="qwen2_prm", dtype=torch.float32, seed=2, shard="400KB"):
    """(b) Qwen2ForProcessRewardModel: untied, rope_theta 1e4, rms_eps 1e-5, GQA 7:1, sharded save.
       (d) with dtype bfloat16: weights rounded to bf16; reference = HF float32 on the rounded weights."""
    cfg = Qwen2Config(vocab_size=4096, hidden_size=112, intermediate_size=160, num_hidden_layers=2,
                      num_attention_heads=14, num_key_value_heads=2, rope_theta=1e4, rms_norm_eps=1e-5,
                      tie_word_embeddings=False, max_position_embeddings=4096, attn_implementation="eager",
                      bos_token_id=4000, eos_token_id=4001)
    cfg.architectures = ["Qwen2ForProcessRewardModel"]
    m = Qwen2ForProcessRewardModel(cfg).eval()
    reinit(m, seed)
    if dtype != torch.float32:
        with torch.no_grad():
            for p in m.parameters():
                p.copy_(p.to(dtype).float())
    res = expected(m, "prm", sequences(4096, 3000, 22, [12, 50, 97]), rotary_inv_freq(m))
    d = fresh(name)
    if dtype != torch.float32:
        m = m.to(dtype)
        m.config.dtype = dtype
    m.save_pretrained(d, max_shard_size=shard)
    write_expected(d, res)


def build_scalar():
    """(c) ReasonFlux-PRM-1.5B style: CausalLM trunk (real Qwen2.5 vocab size, tied) + reward_head Linear(H,1)
       saved by torch.save (reward_head.pt) and as reward_head.safetensors."""
    cfg = Qwen2Config(vocab_size=151936, hidden_size=16, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, rope_theta=1e6, rms_norm_eps=1e-6,
                      tie_word_embeddings=True, max_position_embeddings=32768, attn_implementation="eager",
                      bos_token_id=151643, eos_token_id=151645)
    m = Qwen2ForCausalLM(cfg).eval()
    reinit(m, 3)
    m.tie_weights()
    head = nn.Linear(16, 1)
    g = torch.Generator().manual_seed(33)
    with torch.no_grad():
        head.weight.copy_(torch.randn(1, 16, generator=g) * 0.5)
        head.bias.copy_(torch.randn(1, generator=g) * 0.5)
    g = torch.Generator().manual_seed(34)
    cases = []
    for T in [6, 31]:
        ids = torch.randint(0, 151936, (T,), generator=g).tolist()
        ids[2] = 151651
        ids[-1] = 151935
        cases.append((ids, [T - 1]))
    d = fresh("qwen2_scalar")
    m.save_pretrained(d)
    torch.save(head.state_dict(), os.path.join(d, "reward_head.pt"))
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, os.path.join(d, "reward_head.safetensors"))
    write_expected(d, expected(m, ("scalar", head), cases, rotary_inv_freq(m), hidden_all_max=8))


def build_qwen3():
    """(e) Qwen3ForCausalLM: explicit head_dim (32 != hidden/heads), q_norm/k_norm, no qkv bias, untied.
    The 1100-token case runs in several layer chunks in fluxprm (q/k-norm and RoPE per chunk)."""
    cfg = Qwen3Config(vocab_size=4096, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=32, rope_theta=1e6, rms_norm_eps=1e-6,
                      tie_word_embeddings=False, max_position_embeddings=40960, attn_implementation="eager")
    m = Qwen3ForCausalLM(cfg).eval()
    reinit(m, 5)
    d = fresh("qwen3")
    m.save_pretrained(d)
    write_expected(d, expected(m, None, sequences(4096, 9, 55, [3, 45, 1100]), rotary_inv_freq(m)))


def build_seqcls():
    """Qwen2ForSequenceClassification with 3 labels (score Linear without bias)."""
    cfg = Qwen2Config(vocab_size=4096, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, rope_theta=1e4, num_labels=3,
                      attn_implementation="eager", pad_token_id=0)
    m = Qwen2ForSequenceClassification(cfg).eval()
    reinit(m, 6)
    d = fresh("qwen2_seqcls")
    m.save_pretrained(d)
    write_expected(d, expected(m, "seqcls", sequences(4096, 17, 66, [10]), rotary_inv_freq(m)))


def build_tokcls():
    """Qwen2ForTokenClassification with 2 labels (score Linear with bias), untied, rope_theta 1e6."""
    cfg = Qwen2Config(vocab_size=4096, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=1, rope_theta=1e6, num_labels=2,
                      attn_implementation="eager")
    m = Qwen2ForTokenClassification(cfg).eval()
    reinit(m, 8)
    d = fresh("qwen2_tokcls")
    m.save_pretrained(d)
    write_expected(d, expected(m, "seqcls", sequences(4096, 21, 88, [16]), rotary_inv_freq(m)))


def build_long():
    """A 20k-token sequence through a tiny PRM (sdpa attention), step probabilities at ~60 positions."""
    cfg = Qwen2Config(vocab_size=4096, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, rope_theta=1e6, rms_norm_eps=1e-6,
                      tie_word_embeddings=False, max_position_embeddings=4096, attn_implementation="sdpa")
    cfg.architectures = ["Qwen2ForProcessRewardModel"]
    m = Qwen2ForProcessRewardModel(cfg).eval()
    reinit(m, 7)
    T = 20000
    g = torch.Generator().manual_seed(77)
    ids = torch.randint(0, 4000, (T,), generator=g)
    pos = list(range(100, T - 1, 331)) + [T - 1]
    for p in pos:
        ids[p] = 4095
    d = fresh("qwen2_long")
    m.save_pretrained(d)
    write_expected(d, expected(m, "prm", [(ids.tolist(), pos)], rotary_inv_freq(m)))


if __name__ == "__main__":
    torch.manual_seed(0)
    build_tied()
    build_prm()
    build_prm("qwen2_prm_bf16", torch.bfloat16, seed=4, shard="5GB")
    build_scalar()
    build_qwen3()
    build_seqcls()
    build_tokcls()
    if "--long" in sys.argv:
        build_long()
    print("fixtures written under", HERE)
