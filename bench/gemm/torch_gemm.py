"""PyTorch reference timings for the GEMM benchmark (run through /work/shared/tools/pyref).

  pyref run bench/gemm/torch_gemm.py THREADS REPS TxKxN...
Prints "torch-<dtype> T K N threads GFLOP/s ms" per shape for f32 and bf16 torch.matmul(x, W.T)
(+ bias, like fp_matmul_forward), median over REPS calls after a warm-up."""
import sys
import time
import torch

threads, reps = int(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(threads)
for shape in sys.argv[3:]:
    T, K, N = (int(v) for v in shape.split("x"))
    for name, dt in (("f32", torch.float32), ("bf16", torch.bfloat16)):
        x = torch.randn(T, K).to(dt)
        w = (torch.randn(N, K) * 0.05).to(dt)
        b = torch.randn(N).to(dt)
        with torch.no_grad():
            torch.addmm(b, x, w.t())
            ts = []
            for _ in range(reps):
                t0 = time.perf_counter()
                torch.addmm(b, x, w.t())
                ts.append(time.perf_counter() - t0)
        ts.sort()
        med = ts[len(ts) // 2]
        print(f"torch-{name:<10} {'':5} {T:5d} {K:5d} {N:5d} {threads:3d} {2*T*K*N/med*1e-9:9.1f} {med*1e3:9.3f}", flush=True)
