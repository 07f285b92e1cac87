#!/usr/bin/env python3
"""Reference for added-token options (lstrip / rstrip / single_word / normalized): adds tokens to the Qwen
tokenizer with HF tokenizers, and writes their "added_tokens" entries (as HF serialises them) and the ids of a
set of probe strings (encode(text, add_special_tokens=False)).  The C test appends the entries to
tokenizer.json and compares.  Run from the repository root:
    mkdir -p tests/tmp/tokref && cp ../shared/data/tokenizer/qwen2/tokenizer*.json tests/tmp/tokref/
    /work/shared/tools/pyref run tests/ref/tokenizer/gen_added.py tests/tmp/tokref tests/ref/tokenizer/added_flags.json
"""
import json
import sys

from tokenizers import AddedToken, Tokenizer

tok = Tokenizer.from_file(sys.argv[1] + "/tokenizer.json")
n0 = len(json.loads(tok.to_str())["added_tokens"])  # noqa: the new entries follow these
tok.add_special_tokens([AddedToken("<mask>", lstrip=True), AddedToken("[R]", rstrip=True),
                        AddedToken("<both>", lstrip=True, rstrip=True)])
tok.add_tokens([AddedToken("zqzw", single_word=True), AddedToken("caf\u00e9!", normalized=True),
                AddedToken("Zq", normalized=False), AddedToken("<mask>x", normalized=False)])
added = json.loads(tok.to_str())["added_tokens"][n0:]
probes = ["a <mask> b", "a<mask>b", "  <mask>  ", "\n\t<mask>", "<mask><mask>", " <mask> <mask>", "<mask>x and <mask>xy",
          "[R]   x", "x [R]\n\ny", "[R]", "a[R] \u3000b", "<both>", "  <both>  x", "a \n<both>\n b",
          "zqzw", "a zqzw b", "szqzw", "zqzws", "_zqzw", "zqzw_", "zqzwzqzw", "\u00e9 zqzw", "\u00e9zqzw", "1zqzw", "zqzw!",
          "(zqzw)", "zqzw\u0301", "\u4e2dzqzw", "zqzw\u4e2d", "\u0661zqzw", "zqzw\u00b2", "\u2167zqzw", "zqzw\u200d", "caf\u00e9!", "cafe\u0301!", "a cafe\u0301! b", "CAF\u00c9!", "Zq", "aZqb", "ZZqq",
          "<mask>zqzw[R] caf\u00e9!<both><|im_start|>Zq", "<|im_start|> <mask>"]
cases = [{"text": p, "ids": tok.encode(p, add_special_tokens=False).ids} for p in probes]
with open(sys.argv[2], "w", encoding="utf-8") as f:
    json.dump({"added_tokens": added, "cases": cases}, f, ensure_ascii=False, indent=1)
print(f"wrote {len(added)} tokens and {len(cases)} cases", file=sys.stderr)
