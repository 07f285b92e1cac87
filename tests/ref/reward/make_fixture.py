"""Reference numbers for tests/reward/test_targets.c, computed independently with numpy.

Run from the repository root:  /work/shared/tools/pyref run tests/ref/reward/make_fixture.py
Writes tests/ref/reward/fixture.json (committed).  Definitions follow docs/reward.md:
  cos(u, v)                     cosine similarity (0 when a vector is zero)
  coherence log-prob            l_pos - logsumexp([l_pos] + [l_neg_j]),  l = cos(prev, .) / tau
  normalised components         align (cos + 1) / 2, coh exp(log_prob), qual score / 10
  mix                           sum_k softmax(c)_k * c_k over the present (non-NaN) components
  negatives                     splitmix64 stream seeded with mix(mix(mix(seed) ^ record) ^ step);
                                draw u = (next * m) >> 64 over the m rows outside [lo, hi), skip repeats
"""
import json
import numpy as np

M64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


def mix64(z):
    z = (z + GOLDEN) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


class Rng:
    def __init__(self, seed, record, step):
        self.state = mix64(mix64(mix64(seed) ^ record) ^ step)

    def next(self):
        self.state = (self.state + GOLDEN) & M64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        return z ^ (z >> 31)

    def below(self, m):
        return (self.next() * m) >> 64


def negatives(seed, record, step, pool_n, lo, hi, k):
    r = Rng(seed, record, step)
    avail = pool_n - (hi - lo)
    out = []
    while len(out) < k:
        u = r.below(avail)
        idx = u if u < lo else u + (hi - lo)
        if idx not in out:
            out.append(idx)
    return out


def cos(a, b):
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 0.0
    return float(np.clip(np.dot(a, b) / (na * nb), -1.0, 1.0))


def coherence(prev, pos, negs, tau):
    l = np.array([cos(prev, pos)] + [cos(prev, n) for n in negs], dtype=np.float64) / tau
    mx = l.max()
    return float(l[0] - mx - np.log(np.exp(l - mx).sum()))


def mix(c):
    c = np.array([x for x in c if x is not None and not np.isnan(x)], dtype=np.float64)
    w = np.exp(c - c.max())
    w /= w.sum()
    return float((w * c).sum())


def main():
    rng = np.random.default_rng(20250101)
    cases = []
    for i, (dim, k, tau) in enumerate([(8, 5, 0.1), (16, 3, 0.5), (4, 8, 0.05), (32, 1, 1.0)]):
        v = rng.standard_normal((k + 2, dim)).astype(np.float32)
        prev, pos, negs = v[0], v[1], v[2:]
        p64, q64, n64 = prev.astype(np.float64), pos.astype(np.float64), negs.astype(np.float64)
        c_align = cos(p64, q64)
        logp = coherence(p64, q64, list(n64), tau)
        qual = float(rng.integers(0, 11))
        norm = [(c_align + 1) / 2, float(np.exp(logp)), qual / 10]
        cases.append({
            "dim": dim, "k": k, "tau": tau,
            "prev": [float(x) for x in prev], "pos": [float(x) for x in pos],
            "negs": [float(x) for x in negs.reshape(-1)],
            "cos": c_align, "log_prob": logp, "qual_score": qual,
            "norm": norm, "mix": mix(norm),
            "mix_no_qual": mix(norm[:2]),
        })
    samples = []
    for (seed, record, step, pool_n, lo, hi, k) in [(0, 0, 0, 100, 10, 20, 5), (42, 7, 3, 50, 0, 5, 8),
                                                   (12345, 99, 1, 30, 25, 30, 10), (1, 2, 3, 12, 4, 8, 8)]:
        samples.append({"seed": seed, "record": record, "step": step, "pool_n": pool_n, "lo": lo, "hi": hi,
                        "k": k, "idx": negatives(seed, record, step, pool_n, lo, hi, k)})
    r = Rng(0, 0, 0)
    stream = [str(r.next()) for _ in range(4)]
    out = {"cases": cases, "negatives": samples, "rng_000": stream}
    with open("tests/ref/reward/fixture.json", "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print("wrote tests/ref/reward/fixture.json:", len(cases), "cases,", len(samples), "negative draws")


main()
