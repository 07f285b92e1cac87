#!/usr/bin/env python3
"""HF tokenizers reference for the benchmark: single thread, encode(text, add_special_tokens=False) per record.
usage (through pyref, from the repository root): hf_tokenize.py TOKENIZER.json CORPUS.jsonl OUT.jsonl
Prints {"encode_s": ..., "encode_cpu_s": ..., "batch_s_est": ..., "bytes": ...} on stdout."""
import os

os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["RAYON_NUM_THREADS"] = "1"
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from tokenizers import Tokenizer  # noqa: E402

tok = Tokenizer.from_file(sys.argv[1])
with open(sys.argv[2], encoding="utf-8") as f:
    texts = [json.loads(line)["text"] for line in f]
nbytes = sum(len(t.encode("utf-8")) for t in texts)
t0, c0 = time.perf_counter(), time.process_time()
ids = [tok.encode(t, add_special_tokens=False).ids for t in texts]
enc, enc_cpu = time.perf_counter() - t0, time.process_time() - c0
t0 = time.perf_counter()
tok.encode_batch(texts[:2000], add_special_tokens=False)  # parallelism is off: one thread
batch = (time.perf_counter() - t0) * len(texts) / min(len(texts), 2000)
with open(sys.argv[3], "w") as f:
    for x in ids:
        f.write('{"ids":[' + ",".join(map(str, x)) + "]}\n")
print(json.dumps({"encode_s": enc, "encode_cpu_s": enc_cpu, "batch_s_est": batch, "bytes": nbytes}))
