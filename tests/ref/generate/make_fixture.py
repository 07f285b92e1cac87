"""Reference fixtures for `fluxprm generate` and the KV-cache forward (tests/model/test_generate.c), computed
with Hugging Face transformers (float32, eager attention) as the independent reference.

Run from the repository root (the tokenizer and chat template are read from a scratch copy of ../shared):
  mkdir -p tests/tmp/genref && cp ../shared/data/tokenizer/qwen2/tokenizer.json \
      ../shared/data/templates/qwen2.5-instruct.jinja tests/tmp/genref/
  ../shared/tools/pyref run tests/ref/generate/make_fixture.py tests/tmp/genref

Writes tests/ref/generate/:
  qwen2_gen/   Qwen2ForCausalLM, untied lm_head, vocab 1024, f32 (config.json, model.safetensors, expected.json)
  qwen3_gen/   Qwen3ForCausalLM, tied embeddings, head_dim 32 != H/heads, q/k norm, f32
     expected.json: {"cases": [{"prompt": [ids], "tokens": [64 greedy ids from generate(do_sample=False)],
                     "logits": [[V floats] for the first 3 decode steps], "min_gap": smallest top1-top2 logit gap}]}
  chat_records.jsonl / chat_expected.jsonl: greedy generation (24 new tokens) with the tied 8-wide Qwen2 trunk of
     tests/ref/score (config_causal.json + trunk.safetensors) and the real Qwen2 tokenizer: {"messages": [...]}
     records rendered by apply_chat_template(add_generation_prompt=True) with the Qwen2.5 template, {"prompt": s}
     records encoded as is.  Per record: prompt_ids, tokens, completion (decode(skip_special_tokens=True)), and
     for the stop-string check: stop, stop_tokens (tokens up to the one completing the stop string),
     stop_completion (the text before the stop string)."""
import json
import math
import os
import shutil
import sys

import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM
import transformers

OUT = "tests/ref/generate"
torch.set_num_threads(2)
GEN = "transformers %s, torch %s (float32, eager attention)" % (transformers.__version__, torch.__version__)


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
                p.copy_(torch.randn(p.shape, generator=g) * (1.5 / math.sqrt(p.shape[-1])))


def greedy(model, prompt, n):
    x = torch.tensor([prompt])
    with torch.no_grad():
        out = model.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=n, min_new_tokens=n,
                             output_logits=True, return_dict_in_generate=True, pad_token_id=0)
    toks = out.sequences[0, len(prompt):].tolist()
    gaps = []
    for lg in out.logits:
        t2 = torch.topk(lg[0].double(), 2).values
        gaps.append(float(t2[0] - t2[1]))
    return toks, [[float(v) for v in out.logits[i][0].tolist()] for i in range(3)], min(gaps)


def build(name, model, prompts):
    d = os.path.join(OUT, name)
    if os.path.isdir(d):
        shutil.rmtree(d)
    model.save_pretrained(d)
    for f in os.listdir(d):
        if f not in ("config.json", "model.safetensors"):
            os.remove(os.path.join(d, f))
    cases = []
    for p in prompts:
        toks, lg, gap = greedy(model, p, 64)
        print(name, "prompt", len(p), "min gap %.3g" % gap, "tokens", toks[:10], "...")
        assert gap > 1e-4, "near tie: pick another seed"
        cases.append({"prompt": p, "tokens": toks, "logits": lg, "min_gap": gap})
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump({"generator": GEN, "cases": cases}, f, separators=(",", ":"))


def small_models():
    cfg = Qwen2Config(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, rope_theta=1e4, rms_norm_eps=1e-6,
                      tie_word_embeddings=False, max_position_embeddings=4096, attn_implementation="eager",
                      bos_token_id=None, eos_token_id=None, pad_token_id=None)
    m = Qwen2ForCausalLM(cfg).eval()
    reinit(m, 5)
    g = torch.Generator().manual_seed(51)
    prompts = [torch.randint(0, 1024, (T,), generator=g).tolist() for T in (5, 150)]
    build("qwen2_gen", m, prompts)

    cfg = Qwen3Config(vocab_size=1024, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=32, rope_theta=1e6, rms_norm_eps=1e-6,
                      tie_word_embeddings=True, max_position_embeddings=4096, attn_implementation="eager",
                      bos_token_id=None, eos_token_id=None, pad_token_id=None)
    m = Qwen3ForCausalLM(cfg).eval()
    reinit(m, 6)
    m.tie_weights()
    g = torch.Generator().manual_seed(61)
    build("qwen3_gen", m, [torch.randint(0, 1024, (12,), generator=g).tolist()])


def chat(src):
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_file(f"{src}/tokenizer.json"))
    tok.chat_template = open(f"{src}/qwen2.5-instruct.jinja").read()
    raw = Tokenizer.from_file(f"{src}/tokenizer.json")
    cfgd = json.load(open("tests/ref/score/config_causal.json"))
    cfg = Qwen2Config(**{k: v for k, v in cfgd.items() if k not in ("architectures",)})
    cfg._attn_implementation = "eager"
    m = Qwen2ForCausalLM(cfg).eval()
    sd = load_file("tests/ref/score/trunk.safetensors")
    missing, unexpected = m.load_state_dict(sd, strict=False)
    assert not unexpected and all("lm_head" in k for k in missing), (missing, unexpected)
    m.tie_weights()
    assert torch.equal(m.lm_head.weight, m.model.embed_tokens.weight)
    records = [
        {"messages": [{"role": "user", "content": "What is 2+3?"}]},
        {"messages": [{"role": "system", "content": "Please reason step by step, and put your final answer in \\boxed{}."},
                      {"role": "user", "content": "Solve x + 1 = 3 for x."}]},
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! 👋"},
                      {"role": "user", "content": "Count to three, please."}]},
        {"prompt": "The capital of France is"},
    ]
    exp = []
    for r in records:
        if "messages" in r:
            text = tok.apply_chat_template(r["messages"], tokenize=False, add_generation_prompt=True)
        else:
            text = r["prompt"]
        ids = raw.encode(text, add_special_tokens=False).ids
        toks, _, gap = greedy(m, ids, 24)
        assert gap > 1e-5, "near tie"
        assert all(t < raw.get_vocab_size(with_added_tokens=True) for t in toks), "unknown id generated"
        comp = raw.decode(toks, skip_special_tokens=True)
        e = {"prompt_ids": ids, "tokens": toks, "completion": comp, "min_gap": gap}
        # a stop string from the middle of the completion (first occurrence cuts)
        for a in range(len(comp) // 2, len(comp) - 2):
            s = comp[a:a + 2]
            if s.strip() and "\ufffd" not in s:
                break
        else:
            s = None
        if s:
            k = next(k for k in range(1, len(toks) + 1) if s in raw.decode(toks[:k], skip_special_tokens=True))
            e.update({"stop": s, "stop_tokens": toks[:k], "stop_completion": comp[:comp.find(s)]})
        print("chat", len(ids), "prompt ids; gap %.3g" % gap, repr(comp[:60]))
        exp.append(e)
    with open(os.path.join(OUT, "chat_records.jsonl"), "w") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    with open(os.path.join(OUT, "chat_expected.jsonl"), "w") as f:
        for e in exp:
            f.write(json.dumps(e, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    small_models()
    chat(sys.argv[1])
