"""PyTorch peer of bench_train.c (run through /work/shared/tools/pyref):
  pyref run bench/train/torch_step.py LAYERS T VOCAB STEPS THREADS
HF Qwen2Model (default attention implementation, sdpa) with the 0.5B shape + the PRM score head
Linear(H,H)+ReLU+Linear(H,2), f32, one joint-loss step = forward + backward + clip_grad_norm_(1.0) +
torch.optim.AdamW + zero_grad, same record layout as bench_train.c.  Prints per-step lines and
  torch layers=L T=T vocab=V threads=N params=P median_s=... tokens_per_s=... cpu_s=... peak_rss_mb=...
(cpu_s: median process CPU seconds per step, as in bench_train.c)"""
import resource
import sys
import time

import torch
import torch.nn as nn
from transformers import Qwen2Config
from transformers.models.qwen2.modeling_qwen2 import Qwen2Model

L, T, V, steps, threads = (int(a) for a in sys.argv[1:6])
torch.set_num_threads(threads)
torch.manual_seed(0)
H = 896
cfg = Qwen2Config(vocab_size=V, hidden_size=H, intermediate_size=4864, num_hidden_layers=L,
                  num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                  rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True, use_sliding_window=False)


class PRM(nn.Module):
    def __init__(self):
        super().__init__()
        self.model = Qwen2Model(cfg)
        self.score = nn.Sequential(nn.Linear(H, H), nn.ReLU(), nn.Linear(H, 2))


m = PRM().float()
m.train()
for mod in m.modules():  # no dropout anywhere; attention dropout is 0 in Qwen2Config by default
    if isinstance(mod, nn.Dropout):
        mod.p = 0.0
opt = torch.optim.AdamW(m.parameters(), lr=1e-5, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
g = torch.Generator().manual_seed(99)
ids = torch.randint(0, V, (1, T), generator=g)
nst = max(T // 64, 1)
pos = torch.tensor([(i + 1) * (T // nst) - 2 for i in range(nst)])
rew = torch.tensor([((i * 37) % 100) / 100.0 for i in range(nst)])
final = 0.7
ts, cs = [], []
for i in range(steps + 1):
    t0, c0 = time.perf_counter(), time.process_time()
    h = m.model(input_ids=ids).last_hidden_state[0]
    z = m.score(h)
    p = torch.softmax(z, -1)[:, 1]
    loss = ((p[pos] - rew) ** 2).mean() + (p[-1] - final) ** 2
    loss.backward()
    t1 = time.perf_counter()
    gn = torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=False)
    t2 = time.perf_counter()
    if i > 0:
        ts.append(t2 - t0)
        cs.append(time.process_time() - c0)
    print(f"# step {i}{'' if i else ' (warm-up)'}: fwd+bwd {t1 - t0:.3f} s, adamw+zero {t2 - t1:.3f} s, "
          f"loss {loss.item():.6f}, grad_norm {gn.item():.4g}", flush=True)
def median(a):
    a = sorted(a)
    return a[len(a) // 2] if len(a) % 2 else 0.5 * (a[len(a) // 2 - 1] + a[len(a) // 2])


med, cmed = median(ts), median(cs)
n = sum(p.numel() for p in m.parameters())
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
print(f"torch layers={L} T={T} vocab={V} threads={threads} params={n} median_s={med:.4f} "
      f"tokens_per_s={T / med:.1f} cpu_s={cmed:.3f} peak_rss_mb={rss:.0f}", flush=True)
