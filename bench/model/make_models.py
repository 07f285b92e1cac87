"""Random-weight Qwen2 checkpoints with the exact Qwen2.5-0.5B / 1.5B shapes, bf16, for the prefill benchmark.

usage (repository root, via pyref so that the paths are relative to it):
    /work/shared/tools/pyref run bench/model/make_models.py OUTDIR [0.5b] [1.5b]
writes OUTDIR/qwen2-<shape>/ (config.json + model.safetensors, HF save_pretrained).  Weights: HF's own init
(normal, std 0.02, seeded); norms are ones and biases zeros.  Tokenizer files are copied by bench/model/run.sh
(llama.cpp needs tokenizer metadata in the GGUF; fluxprm bench does not need them)."""
import os
import sys
import time

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

SHAPES = {
    # name: hidden, layers, ffn, heads, kv heads (vocab 151936, tied embeddings, rope 1e6: as the real models)
    "0.5b": (896, 24, 4864, 14, 2),
    "1.5b": (1536, 28, 8960, 12, 2),
}


def main():
    out = sys.argv[1]
    names = sys.argv[2:] or list(SHAPES)
    for name in names:
        d = os.path.join(out, f"qwen2-{name}")
        if os.path.exists(os.path.join(d, "model.safetensors")):
            print(f"{d}: exists")
            continue
        H, L, I, nh, nkv = SHAPES[name]
        cfg = Qwen2Config(hidden_size=H, num_hidden_layers=L, intermediate_size=I, num_attention_heads=nh,
                          num_key_value_heads=nkv, vocab_size=151936, max_position_embeddings=32768,
                          rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
                          use_sliding_window=False, bos_token_id=151643, eos_token_id=151643,
                          torch_dtype="bfloat16")
        torch.manual_seed(1234)
        t0 = time.time()
        torch.set_default_dtype(torch.bfloat16)
        model = Qwen2ForCausalLM(cfg)
        torch.set_default_dtype(torch.float32)
        model = model.to(torch.bfloat16).eval()
        nparam = sum(p.numel() for p in model.parameters())
        os.makedirs(d, exist_ok=True)
        model.save_pretrained(d, safe_serialization=True, max_shard_size="100GB")
        print(f"{d}: {nparam / 1e6:.1f} M parameters, bf16, {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
