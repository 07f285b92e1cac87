"""PyTorch peer for `fluxprm bench`: HF Qwen2Model (trunk only, no LM head) in bf16, inference_mode, sdpa
attention, torch.set_num_threads(THREADS), on seeded random token ids.  Prints one JSON line per T:
{"peer": "torch-bf16", "T": ..., "median_s": ..., "tok_s": ..., "runs": [...], "peak_rss_mb": ...}.

usage (repository root): /work/shared/tools/pyref run bench/model/torch_prefill.py MODEL_DIR THREADS REPEAT T...
"""
import json
import os
import resource
import statistics
import sys
import time

import torch
from transformers import Qwen2Model


def main():
    d, threads, repeat = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    ts = [int(t) for t in sys.argv[4:]]
    torch.set_num_threads(threads)
    model = Qwen2Model.from_pretrained(d, torch_dtype=torch.bfloat16, attn_implementation="sdpa").eval()
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(1)
    for T in ts:
        ids = torch.randint(0, vocab, (1, T), generator=g)
        runs, cpus = [], []
        with torch.inference_mode():
            # warm-up at the full length: oneDNN creates (JITs) its primitives per shape on the first call,
            # which took 0.5-1.5 s at T=512 (a min(T, 256)-token warm-up, as fluxprm bench's, left that in
            # the timed run and halved PyTorch's T=512 figure in some rounds)
            model(input_ids=ids)
            for _ in range(repeat):
                t0, c0 = time.perf_counter(), time.process_time()
                model(input_ids=ids)
                runs.append(time.perf_counter() - t0)
                cpus.append(time.process_time() - c0)
        med = statistics.median(runs)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        print(json.dumps({"peer": "torch-bf16", "T": T, "median_s": med, "tok_s": T / med, "runs": runs,
                          "cpu_tok_s": T / (statistics.median(cpus) / threads),
                          "threads": threads, "torch": torch.__version__, "peak_rss_mb": rss,
                          "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "")}), flush=True)


if __name__ == "__main__":
    main()
