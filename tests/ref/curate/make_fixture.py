"""Independent reference for `fluxprm curate` (tests/reward/test_curate*.c): HF transformers Qwen2Model
embeddings of the tiny random trunk in tests/ref/score (config_causal.json + trunk.safetensors) on the REAL
Qwen2 tokenizer, pooled at the last token or averaged over all tokens, then L2-normalised
(torch.nn.functional.normalize), plus the thinking->response merge (spec §2.1, the authors' rule) recomputed
here from those embeddings by brute force over every candidate merge, and the alignment cosines.

Run from the repository root (the tokenizer is read from a scratch copy of ../shared):
  mkdir -p tests/tmp/curate_ref && cp ../shared/data/tokenizer/qwen2/tokenizer.json tests/tmp/curate_ref/
  /work/shared/tools/pyref run tests/ref/curate/make_fixture.py tests/tmp/curate_ref

Writes tests/ref/curate/records.jsonl (the end-to-end input; record 3 is deliberately bad) and
tests/ref/curate/fixture.json:
  "texts": [{"text", "last": [H], "mean": [H]}]          encoder check (cosines compared within 1e-5)
  "records": [{"question_emb", "steps": [merged thinking steps], "step_embs", "response_steps",
               "align": [cos(step_t, response_t) or null]}]   (last-token pooling; null for bad records)
"""
import json
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tokenizers import Tokenizer
from transformers import Qwen2Config, Qwen2Model

src = sys.argv[1]
ref = "tests/ref/score"
out = "tests/ref/curate"

tok = Tokenizer.from_file(f"{src}/tokenizer.json")
cfgd = json.load(open(f"{ref}/config_causal.json"))
cfg = Qwen2Config(vocab_size=cfgd["vocab_size"], hidden_size=cfgd["hidden_size"],
                  intermediate_size=cfgd["intermediate_size"], num_hidden_layers=cfgd["num_hidden_layers"],
                  num_attention_heads=cfgd["num_attention_heads"], num_key_value_heads=cfgd["num_key_value_heads"],
                  max_position_embeddings=cfgd["max_position_embeddings"], rope_theta=10000.0,
                  rms_norm_eps=cfgd["rms_norm_eps"], tie_word_embeddings=True)
model = Qwen2Model(cfg).eval()
sd = {k[len("model."):]: v for k, v in load_file(f"{ref}/trunk.safetensors").items()}
missing, unexpected = model.load_state_dict(sd, strict=False)
assert not unexpected and all("rotary" in m for m in missing), (missing, unexpected)
model = model.float()


def embed(text, pooling):
    ids = tok.encode(text, add_special_tokens=False).ids
    assert ids, text
    with torch.no_grad():
        h = model(input_ids=torch.tensor([ids])).last_hidden_state[0]
    v = h[-1] if pooling == "last" else h.mean(0)
    return F.normalize(v, dim=0).tolist()


memo = {}


def emb(text):
    if text not in memo:
        memo[text] = embed(text, "last")
    return memo[text]


def cos(a, b):
    return float(torch.nn.functional.cosine_similarity(torch.tensor(a, dtype=torch.float64),
                                                       torch.tensor(b, dtype=torch.float64), dim=0))


def split(text):
    return [p for p in text.split("\n\n") if p.strip()]


def merge(th, resp):
    """Greedy: while T > M, merge the adjacent pair whose merge maximises sum_j cos(s_j, a_j); ties -> last."""
    cur = list(th)
    M = len(resp)
    while len(cur) > M and len(cur) > 1:
        best, best_i = None, 0
        scores = []
        for i in range(len(cur) - 1):
            cand = cur[:i] + [cur[i] + "\n\n" + cur[i + 1]] + cur[i + 2:]
            s = sum(cos(emb(cand[j]), emb(resp[j])) for j in range(min(M, len(cand))))
            scores.append(s)
            if best is None or s >= best:
                best, best_i = s, i
        # the decision must not hinge on float32 noise: report the margin to the runner-up
        rest = [s for i, s in enumerate(scores) if i != best_i and abs(s - best) > 0]
        print("merge at", best_i, "margin", best - max(rest) if rest else None)
        cur = cur[:best_i] + [cur[best_i] + "\n\n" + cur[best_i + 1]] + cur[best_i + 2:]
    return cur


texts = ["The answer is 42.", "We add 3 and 4 to get 7.", "问题：1+1=?", "Let x = 2, then x^2 = 4.",
         "Emoji 👩‍👩‍👧 and tabs\tand spaces", "a"]
fixture = {"texts": [{"text": t, "last": embed(t, "last"), "mean": embed(t, "mean")} for t in texts]}

records = [
    {"id": "r0", "question": "What is 6 times 7? {{id:0}}{{gold:42}}",
     "thinking_trajectories": ["First, recall the multiplication table for six.\n\nSix times seven: 6*7.\n\n"
                               "Compute: 6*7 = 42.\n\nDouble-check by adding 7 six times: 42."],
     "attempt": "We need 6*7.\n\nThe product is \\boxed{42}.", "gold": "42", "source": "toy"},
    {"id": "r1", "question": "Add 3 and 4. {{id:1}}", "thinking": "We add 3 and 4.\n\nThat gives 7.\n\nSo 7.",
     "response": "3 + 4 = 7.\n\nThe sum is 7.\n\n\\boxed{7}", "source": "toy"},
    {"id": "r2", "question": "Square of 5? {{id:2}}{{gold:25}}",
     "response": "<think>\nFive squared means 5*5.\n\nThat is 25.\n\nSo twenty-five.\n</think>\n\n"
                 "5^2 = 25.\n\n\\boxed{25}", "gold": "25"},
    {"id": "r3", "thinking": "no question here", "response": "bad record"},
    {"id": "r4", "question": "Half of 18? {{id:4}}{{gold:9}}",
     "thinking_trajectories": ["Half means divide by two.\n\n18 / 2.\n\nThat is 9.\n\nCheck: 9 + 9 = 18.\n\nYes."],
     "attempt": "Divide 18 by 2.\n\nWe get 9.\n\n\\boxed{9}", "gold": 9, "extra": {"k": [1, 2]}},
]
with open(f"{out}/records.jsonl", "w") as f:
    for r in records:
        f.write(json.dumps(r, ensure_ascii=False) + "\n")


def parse(r):
    """Thinking and response texts the way fp_record_parse reads these shapes."""
    if "question" not in r:
        return None
    if "thinking_trajectories" in r:
        return "\n\n".join(r["thinking_trajectories"]), r["attempt"]
    if "thinking" in r:
        return r["thinking"], r["response"]
    resp = r["response"]
    t0 = resp.index("<think>") + 7
    t1 = resp.index("</think>")
    return resp[t0:t1], resp[t1 + 8:]


fixture["records"] = []
for r in records:
    p = parse(r)
    if p is None:
        fixture["records"].append(None)
        continue
    th, resp = split(p[0]), split(p[1])
    steps = merge(th, resp)
    fixture["records"].append({
        "question_emb": emb(r["question"]),
        "steps": steps,
        "step_embs": [emb(s) for s in steps],
        "response_steps": resp,
        "align": [cos(emb(s), emb(resp[j])) if j < len(resp) else None for j, s in enumerate(steps)],
    })
json.dump(fixture, open(f"{out}/fixture.json", "w"), ensure_ascii=False, indent=1)
print("wrote", out)
