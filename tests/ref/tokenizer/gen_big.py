#!/usr/bin/env python3
"""Reference ids for huge single-piece inputs (long BPE words, whitespace runs), stored compactly as the id
count plus a polynomial hash h = (h * 1000003 + id) mod (2**61 - 1) over HF's ids
(Tokenizer.encode(text, add_special_tokens=False)).  Run from the repository root:
    mkdir -p tests/tmp/tokref && cp ../shared/data/tokenizer/qwen2/tokenizer*.json tests/tmp/tokref/
    /work/shared/tools/pyref run tests/ref/tokenizer/gen_big.py tests/tmp/tokref tests/ref/tokenizer/big.jsonl
"""
import json
import sys

from tokenizers import Tokenizer

tok = Tokenizer.from_file(sys.argv[1] + "/tokenizer.json")
M = (1 << 61) - 1
cases = [("a", 1 << 20), ("7", 1 << 20), (" ", 1 << 20), ("\n", 1 << 20), ("x ", 1 << 19), ("ab1 ", 1 << 18),
         ("\u4e2d", 349525), ("!", 1 << 20), ("\u0439", 1 << 19), ("ab", 1 << 19), ("\t \n", 1 << 18), ("=-", 1 << 19),
         ("\U0001F600", 1 << 18), ("e\u0301", 1 << 18)]
with open(sys.argv[2], "w", encoding="utf-8") as f:
    for unit, count in cases:
        ids = tok.encode(unit * count, add_special_tokens=False).ids
        h = 0
        for i in ids:
            h = (h * 1000003 + i) % M
        f.write(json.dumps({"unit": unit, "count": count, "n_ids": len(ids), "hash": str(h)}, ensure_ascii=False) + "\n")
        print(repr(unit), count, len(ids), file=sys.stderr)
