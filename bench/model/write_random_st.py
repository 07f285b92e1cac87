"""Streams a random-weight Qwen2 checkpoint (config.json + model.safetensors, bf16) of any shape to disk without
torch or numpy: a 4 MiB pool of bf16 values ~ N(0, 0.02) (seeded) is written over and over, each tensor
starting at a different offset of the pool; norm weights are 1, biases 0.  Memory use: a few MiB.
usage: python3 bench/model/write_random_st.py OUTDIR H LAYERS FFN HEADS KV_HEADS VOCAB"""
import json
import os
import random
import struct
import sys


def main():
    out = sys.argv[1]
    H, L, I, nh, nkv, V = map(int, sys.argv[2:8])
    d = H // nh
    tensors = [("model.embed_tokens.weight", [V, H])]
    for l in range(L):
        p = f"model.layers.{l}."
        tensors += [(p + "input_layernorm.weight", [H]), (p + "post_attention_layernorm.weight", [H]),
                    (p + "self_attn.q_proj.weight", [nh * d, H]), (p + "self_attn.q_proj.bias", [nh * d]),
                    (p + "self_attn.k_proj.weight", [nkv * d, H]), (p + "self_attn.k_proj.bias", [nkv * d]),
                    (p + "self_attn.v_proj.weight", [nkv * d, H]), (p + "self_attn.v_proj.bias", [nkv * d]),
                    (p + "self_attn.o_proj.weight", [H, nh * d]), (p + "mlp.gate_proj.weight", [I, H]),
                    (p + "mlp.up_proj.weight", [I, H]), (p + "mlp.down_proj.weight", [H, I])]
    tensors.append(("model.norm.weight", [H]))
    header, off = {}, 0
    for name, shape in tensors:
        n = 1
        for s in shape:
            n *= s
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [off, off + 2 * n]}
        off += 2 * n
    hj = json.dumps(header, separators=(",", ":")).encode()
    hj += b" " * (-len(hj) % 8)
    rng = random.Random(1234)
    pool_n = 2 << 20  # values
    pool = bytearray()
    for _ in range(pool_n):
        pool += struct.pack("<f", rng.gauss(0.0, 0.02))[2:4]  # truncate f32 -> bf16 (high half)
    one = struct.pack("<f", 1.0)[2:4]
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for i, (name, shape) in enumerate(tensors):
            nbytes = header[name]["data_offsets"][1] - header[name]["data_offsets"][0]
            if name.endswith("norm.weight"):
                f.write(one * (nbytes // 2))
                continue
            if name.endswith(".bias"):
                f.write(bytes(nbytes))
                continue
            start = (i * 7919 * 2) % (2 * pool_n)
            while nbytes > 0:
                chunk = pool[start:start + nbytes]
                f.write(chunk)
                nbytes -= len(chunk)
                start = 0
    cfg = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": H,
           "intermediate_size": I, "num_hidden_layers": L, "num_attention_heads": nh, "num_key_value_heads": nkv,
           "vocab_size": V, "max_position_embeddings": 32768, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
           "tie_word_embeddings": True, "hidden_act": "silu", "use_sliding_window": False,
           "torch_dtype": "bfloat16"}
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    print(f"{out}: {off / 1e9:.2f} GB of bf16 weights")


if __name__ == "__main__":
    main()
