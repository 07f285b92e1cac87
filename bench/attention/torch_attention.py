"""PyTorch reference timings for the attention benchmark (run through /work/shared/tools/pyref).

  pyref run bench/attention/torch_attention.py THREADS REPS NH/NKV/D/T...
Prints "torch-<dtype> nh nkv d T threads GFLOP/s ms best-GFLOP/s cpu-GFLOP/s" per shape for
torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True) in f32 and bf16
(q [1, nh, T, d], k/v [1, nkv, T, d]), median over REPS calls after a warm-up (f32 at T >= 8192: a single
call); flops = 4 d nh T (T+1) / 2."""
import sys
import time
import torch
import torch.nn.functional as F

threads, reps = int(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(threads)
for shape in sys.argv[3:]:
    nh, nkv, d, T = (int(x) for x in shape.split("/"))
    flops = 4.0 * d * nh * T * (T + 1) / 2
    for name, dt in (("f32", torch.float32), ("bf16", torch.bfloat16)):
        q = torch.randn(1, nh, T, d).to(dt)
        k = torch.randn(1, nkv, T, d).to(dt)
        v = torch.randn(1, nkv, T, d).to(dt)
        # f32 sdpa runs at a few GFLOP/s here: at T >= 8192 one timed call, no warm-up
        slow = dt == torch.float32 and T >= 8192
        with torch.no_grad():
            if not slow:
                F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            ws, cs = [], []
            for _ in range(1 if slow else reps):
                w0, c0 = time.perf_counter(), time.process_time()
                F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
                ws.append(time.perf_counter() - w0)
                cs.append(time.process_time() - c0)
        ws.sort()
        cs.sort()
        med, cpu = ws[len(ws) // 2], cs[len(cs) // 2] / threads
        print(f"torch-{name:<5} {nh:3d} {nkv:3d} {d:4d} {T:6d} {threads:3d} {flops / med * 1e-9:9.1f} {med * 1e3:10.3f} "
              f"{flops / ws[0] * 1e-9:9.1f} {flops / cpu * 1e-9:9.1f}", flush=True)
