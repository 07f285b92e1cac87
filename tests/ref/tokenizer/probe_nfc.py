#!/usr/bin/env python3
"""Lists the code points where HF tokenizers' NFC normalizer disagrees with Python's unicodedata NFC (HF's Rust
unicode-normalization tables are older).  src/tokenizer/encode.c (hf_nfc_inert) treats these as inert
starters.  Run from the repository root:  /work/shared/tools/pyref run tests/ref/tokenizer/probe_nfc.py"""
import unicodedata as u

from tokenizers import normalizers

n = normalizers.NFC()
bad = []
for cp in range(0x110000):
    if 0xD800 <= cp <= 0xDFFF:
        continue
    c = chr(cp)
    if u.combining(c) == 0 and u.decomposition(c) == "":
        continue
    for s in [c, "\u0345" + c, "a" + c, c + "\u0301", "\u0312" + c, c + "\u0312"]:
        if n.normalize_str(s) != u.normalize("NFC", s):
            bad.append(cp)
            break
ranges = []
for cp in bad:
    if ranges and ranges[-1][1] == cp - 1:
        ranges[-1][1] = cp
    else:
        ranges.append([cp, cp])
print(len(bad), "code points:", " ".join("%X-%X" % (a, b) for a, b in ranges))
