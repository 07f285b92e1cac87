"""Writes tests/ref/tensor/dtype_fixture.bin: independent decodings of BF16/F16/Q8_0/Q4_0 rows.

Run from the repository root:  /work/shared/tools/pyref run tests/ref/tensor/make_dtype_fixture.py
BF16/F16: torch converts random f32 values (plus rounding ties, subnormals, +-0, +-inf, NaN, overflow)
to bf16/f16; the fixture holds the f32 source, the 16-bit codes torch produced, and torch's f32 decoding.
Q8_0/Q4_0: random block bytes decoded with numpy from the GGUF formula (y = q*d for Q8_0; element j =
((qs[j]&15)-8)*d and element j+16 = ((qs[j]>>4)-8)*d for Q4_0, d = fp16 scale).

Format (little endian): magic b"FPDT", u32 case count, then per case:
  u32 dtype (fp_dtype: F16=1, BF16=2, Q8_0=3, Q4_0=4), u32 n (elements), u32 nbytes,
  f32[n] source (NaN-free only for BF16/F16; zeros for the q types), nbytes row bytes, f32[n] expected.
"""
import struct
import numpy as np
import torch

rng = np.random.default_rng(20261126)
cases = []


def special_f32():
    bits = []
    # rounding ties for bf16 (low 16 bits exactly 0x8000, even and odd upper half) and near-ties
    for hi in (0x3F80, 0x3F81, 0xBF80, 0xBF81, 0x4049, 0x7F7F, 0x0001, 0x0080):
        for lo in (0x8000, 0x7FFF, 0x8001, 0x0000, 0xFFFF):
            bits.append((hi << 16) | lo)
    # f32 subnormals, zeros, inf, large
    bits += [0x00000001, 0x80000001, 0x007FFFFF, 0x00400000, 0x00000000, 0x80000000,
             0x7F800000, 0xFF800000, 0x7F7FFFFF, 0xFF7FFFFF]
    return np.array(bits, dtype=np.uint32).view(np.float32)


def f16_specials():
    # around f16 limits: subnormals, min normal, ties of the 10-bit mantissa, overflow, max
    v = [5.960464477539063e-08, 2.9802322387695312e-08, 2.98023259e-08, 8.940696716308594e-08,
         6.103515625e-05, 6.097555160522461e-05, 65504.0, 65519.0, 65520.0, 70000.0, -65504.0,
         1.0 + 2.0 ** -11, 1.0 + 3 * 2.0 ** -11, 1.0 + 2.0 ** -11 + 2.0 ** -20, 2048.5, 2049.0, 1e-10, -1e-8,
         0.0, -0.0, float("inf"), float("-inf")]
    return np.array(v, dtype=np.float32)


def add_float_case(dtype_id, tdtype, src):
    t = torch.from_numpy(src.copy()).to(tdtype)
    codes = t.view(torch.int16).numpy().view(np.uint16)
    dec = t.to(torch.float32).numpy()
    cases.append((dtype_id, src.astype(np.float32), codes.tobytes(), dec.astype(np.float32)))


rand = (rng.standard_normal(200) * np.exp(rng.uniform(-20, 20, 200))).astype(np.float32)
add_float_case(2, torch.bfloat16, np.concatenate([special_f32(), rand]))
rand16 = (rng.standard_normal(200) * np.exp(rng.uniform(-12, 10, 200))).astype(np.float32)
add_float_case(1, torch.float16, np.concatenate([f16_specials(), rand16, special_f32()[:40]]))
# NaN decodings (codes only; source f32 zero means "no conversion check")
nan_codes16 = np.array([0x7FC0, 0xFFC0, 0x7F81, 0x7FFF], dtype=np.uint16)
cases.append((2, np.zeros(4, np.float32), nan_codes16.tobytes(),
              torch.from_numpy(nan_codes16.view(np.int16).copy()).view(torch.bfloat16).to(torch.float32).numpy()))
nan_codes_h = np.array([0x7E00, 0xFE00, 0x7C01, 0x7FFF], dtype=np.uint16)
cases.append((1, np.zeros(4, np.float32), nan_codes_h.tobytes(),
              torch.from_numpy(nan_codes_h.view(np.int16).copy()).view(torch.float16).to(torch.float32).numpy()))


def f16_scale(k):
    d = (rng.uniform(-0.05, 0.05, k)).astype(np.float16)
    d[0] = np.float16(6.0e-8)  # subnormal scale
    return d


# Q8_0: nb blocks of (fp16 d, 32 int8)
nb = 6
d = f16_scale(nb)
q = rng.integers(-128, 128, size=(nb, 32), dtype=np.int8)
q[1, :4] = [-128, 127, 0, -1]
raw = b"".join(d[b:b + 1].tobytes() + q[b].tobytes() for b in range(nb))
exp = (d.astype(np.float32)[:, None] * q.astype(np.float32)).reshape(-1)
cases.append((3, np.zeros(nb * 32, np.float32), raw, exp.astype(np.float32)))

# Q4_0: nb blocks of (fp16 d, 16 bytes of nibbles)
d = f16_scale(nb)
qs = rng.integers(0, 256, size=(nb, 16), dtype=np.uint8)
qs[1, :3] = [0x00, 0xFF, 0x8F]
raw = b"".join(d[b:b + 1].tobytes() + qs[b].tobytes() for b in range(nb))
lo = (qs & 15).astype(np.int32) - 8
hi = (qs >> 4).astype(np.int32) - 8
vals = np.concatenate([lo, hi], axis=1).astype(np.float32)  # element j, then j+16
exp = (d.astype(np.float32)[:, None] * vals).reshape(-1)
cases.append((4, np.zeros(nb * 32, np.float32), raw, exp.astype(np.float32)))

with open("tests/ref/tensor/dtype_fixture.bin", "wb") as f:
    f.write(b"FPDT" + struct.pack("<I", len(cases)))
    for dt, src, raw, exp in cases:
        n = len(exp)
        assert len(src) == n
        f.write(struct.pack("<III", dt, n, len(raw)))
        f.write(src.astype("<f4").tobytes())
        f.write(raw)
        f.write(exp.astype("<f4").tobytes())
print("wrote", len(cases), "cases; torch", torch.__version__, "numpy", np.__version__)
