"""Table of medians and ratios fluxprm/peer from bench/model/run.sh's results.jsonl.
usage: python3 bench/model/report.py RESULTS.jsonl [MODELS_DIR]"""
import json
import os
import statistics
import sys
from collections import defaultdict


def main():
    rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
    models = sys.argv[2] if len(sys.argv) > 2 else None
    loads = [r for r in rows if r["peer"] == "load"]
    tok = defaultdict(list)   # (shape, T, key) -> tok/s of each round
    cpu = defaultdict(list)   # fluxprm tokens per CPU-second x threads
    rss = defaultdict(float)  # (shape, key) -> peak RSS MB (max over rounds)
    rss_t = defaultdict(float)  # (shape, T, key) -> fluxprm peak RSS after length T (lengths ascend in a run)
    kern = {}
    longt = []
    longtorch = {}  # (shape, T) -> PyTorch's record at the long lengths
    for r in rows:
        p = r["peer"]
        if p == "load":
            continue
        if p == "torch-long":
            longtorch[(r["shape"], r["T"])] = r
            continue
        key = f"{p}:{r['type']}:{r['mode']}" if p == "fluxprm" else f"{p}:{r['type']}"
        if p in ("fluxprm", "fluxprm-long"):
            for x in r["results"]:
                if p == "fluxprm-long":
                    longt.append((r["shape"], x, r))
                    continue
                tok[(r["shape"], x["T"], key)].append(x["tok_s"])
                cpu[(r["shape"], x["T"], key)].append(x.get("cpu_tok_s", 0))
                if "peak_rss_mb" in x:
                    rss_t[(r["shape"], x["T"], key)] = max(rss_t[(r["shape"], x["T"], key)], x["peak_rss_mb"])
            if p == "fluxprm":
                rss[(r["shape"], key)] = max(rss[(r["shape"], key)], r["peak_rss_mb"])
                kern[key] = r["kernel"]
        else:
            if p == "llama" and r.get("variant"):
                kern[key] = f"ggml-cpu-{r['variant']}"
            tok[(r["shape"], r["T"], key)].append(r["tok_s"])
            if "cpu_tok_s" in r:
                cpu[(r["shape"], r["T"], key)].append(r["cpu_tok_s"])
            if "peak_rss_mb" in r:
                rss[(r["shape"], key)] = max(rss[(r["shape"], key)], r["peak_rss_mb"])
    med = {k: statistics.median(v) for k, v in tok.items()}
    if loads:
        la = [float(l["loadavg"].split()[0]) for l in loads]
        print(f"# load average (1 min) during the run: min {min(la):.1f}, median {statistics.median(la):.1f}, "
              f"max {max(la):.1f}; {loads[0]['time']} - {loads[-1]['time']} UTC")
        isa = loads[0].get("isa", "native")
        print(f"# ISA={isa}: " + ("AMX off for every peer (fluxprm FLUXPRM_AMX=0, PyTorch ONEDNN_MAX_CPU_ISA="
                                  "AVX512_CORE_BF16, llama.cpp's Zen 4 CPU variant)" if isa == "noamx" else
                                  "each peer's best kernels for this CPU"))
    names = {
        "fluxprm:bf16:fast": "fluxprm bf16 fast", "fluxprm:bf16:exact": "fluxprm bf16 exact",
        "fluxprm:q8_0:fast": "fluxprm q8_0 fast", "llama:bf16": "llama.cpp bf16", "llama:q8_0": "llama.cpp q8_0",
        "torch:bf16": "torch bf16",
    }
    print(f"{'shape':6} {'T':>6} {'runner':22} {'kernel':23} {'n':>2} {'tok/s':>8} {'min':>8} {'max':>8} {'cpu-tok/s':>10}")
    for (shape, T) in sorted({(k[0], k[1]) for k in tok}):
        for key, name in names.items():
            v = tok.get((shape, T, key))
            if not v:
                continue
            c = cpu.get((shape, T, key))
            print(f"{shape:6} {T:>6} {name:22} {kern.get(key, '-'):23} {len(v):>2} {statistics.median(v):8.1f} "
                  f"{min(v):8.1f} {max(v):8.1f} {statistics.median(c) if c else float('nan'):10.1f}")
    print()
    print("# ratios of medians (same run, interleaved)")
    pairs = [("fluxprm:bf16:fast", "llama:bf16"), ("fluxprm:bf16:fast", "torch:bf16"),
             ("fluxprm:bf16:exact", "llama:bf16"), ("fluxprm:bf16:exact", "torch:bf16"),
             ("fluxprm:q8_0:fast", "llama:q8_0"), ("fluxprm:q8_0:fast", "fluxprm:bf16:fast"),
             ("llama:bf16", "torch:bf16")]
    for (shape, T) in sorted({(k[0], k[1]) for k in tok}):
        parts = []
        for a, b in pairs:
            if (shape, T, a) in med and (shape, T, b) in med:
                parts.append(f"{names[a]} / {names[b]} = {med[(shape, T, a)] / med[(shape, T, b)]:.2f}")
        print(f"{shape} T={T}: " + "; ".join(parts))
    print()
    print("# memory: model files and peak RSS (MB) of each runner process (max over rounds)")
    for shape in sorted({k[0] for k in tok}):
        if models:
            sz = {}
            for ty in ("bf16", "q8_0"):
                f = os.path.join(models, f"qwen2-{shape}-{ty}.gguf")
                if os.path.exists(f):
                    sz[ty] = os.path.getsize(f) / 1e6
            if sz:
                s = ", ".join(f"{k} GGUF {v:.0f} MB" for k, v in sz.items())
                if len(sz) == 2:
                    s += f" (q8_0/bf16 = {sz['q8_0'] / sz['bf16']:.2f})"
                print(f"{shape}: {s}")
        parts = [f"{names.get(k, k)} {v:.0f}" for (s, k), v in sorted(rss.items()) if s == shape]
        if parts:
            print(f"{shape}: peak RSS " + ", ".join(parts))
        a, b = rss.get((shape, "fluxprm:q8_0:fast")), rss.get((shape, "fluxprm:bf16:fast"))
        if a and b:
            print(f"{shape}: fluxprm peak RSS q8_0/bf16 = {a / b:.3f}")
        for T in sorted({k[1] for k in rss_t if k[0] == shape}):
            a, b = rss_t.get((shape, T, "fluxprm:q8_0:fast")), rss_t.get((shape, T, "fluxprm:bf16:fast"))
            if a and b:
                print(f"{shape}: fluxprm peak RSS through T={T}: q8_0 {a:.0f}, bf16 {b:.0f}, q8_0/bf16 = {a / b:.3f}")
    if longt:
        print()
        print("# long sequences (fluxprm bf16 fast and PyTorch bf16, one process each; tok/s of the median run)")
        for shape, x, r in longt:
            t = longtorch.get((shape, x["T"]))
            vs = (f"; torch bf16 {t['tok_s']:.1f} tok/s ({len(t.get('runs', [1]))} runs), fluxprm / torch = "
                  f"{x['tok_s'] / t['tok_s']:.2f}") if t else ""
            print(f"{shape} T={x['T']}: {x['tok_s']:.1f} tok/s ({r.get('repeat', 1)} runs), {x['median_s']:.1f} s, "
                  f"{x['gflops']:.1f} GFLOP/s, cpu-tok/s {x.get('cpu_tok_s', 0):.1f}, peak RSS {r['peak_rss_mb']:.0f} MB{vs}")


if __name__ == "__main__":
    main()
