"""End-to-end reference for `fluxprm score`: a tiny random-weight PRM on the REAL Qwen2 tokenizer, scored by
HF transformers + tokenizers exactly as the ReasonFlux-PRM-7B README does (apply_chat_template, <extra_0>
after every step, softmax(logits)[1] at each <extra_0>), plus a ReasonFlux-PRM-1.5B-style scalar head
(question + completion, sigmoid at the last token).

Run from the repository root (the tokenizer and template are read from a scratch copy of ../shared):
  mkdir -p tests/tmp/ref && cp ../shared/data/tokenizer/qwen2/tokenizer.json \
      ../shared/data/templates/qwen2.5-instruct.jinja tests/tmp/ref/
  ../shared/tools/pyref run tests/ref/score/make_fixture.py tests/tmp/ref

Writes tests/ref/score/: trunk.safetensors (Qwen2 trunk, tied embeddings), prm_head.safetensors (score.0,
score.2), reward_head.pt (torch.save of Linear(H,1).state_dict()), config_prm.json, config_causal.json,
model.safetensors.index.json (the PRM's shards), records.jsonl (inputs) and expected.jsonl (per record: step_rewards, final_reward, n_tokens, scalar_reward)."""
import json
import sys

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2Model

src = sys.argv[1]
out = "tests/ref/score"
STEP_ID = 151651

# The PRM tokenizer names id 151651 "<extra_0>" (stock Qwen2.5 calls it <|quad_end|>): rename it the same way.
tj = json.load(open(f"{src}/tokenizer.json"))
for t in tj["added_tokens"]:
    if t["id"] == STEP_ID:
        t["content"] = "<extra_0>"
json.dump(tj, open(f"{src}/tokenizer_prm.json", "w"))
tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_file(f"{src}/tokenizer_prm.json"))
tok.chat_template = open(f"{src}/qwen2.5-instruct.jinja").read()
assert tok.encode("<extra_0>") == [STEP_ID]

torch.manual_seed(7)
cfg = Qwen2Config(vocab_size=151936, hidden_size=8, intermediate_size=24, num_hidden_layers=2,
                  num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
                  rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=True, torch_dtype="float32")
trunk = Qwen2Model(cfg).eval()
with torch.no_grad():  # HF initialises norms to 1 and biases to 0: randomise them so they are exercised
    for name, p in trunk.named_parameters():
        if "norm" in name:
            p.copy_(1.0 + 0.2 * torch.randn_like(p))
        elif name.endswith("bias"):
            p.copy_(0.5 * torch.randn_like(p))
H = cfg.hidden_size
score = torch.nn.Sequential(torch.nn.Linear(H, H), torch.nn.ReLU(), torch.nn.Linear(H, 2)).eval()
reward_head = torch.nn.Linear(H, 1).eval()
with torch.no_grad():
    for lin in (score[0], score[2], reward_head):
        lin.weight.mul_(3.0)
        lin.bias.copy_(0.3 * torch.randn_like(lin.bias))

save_file({f"model.{k}": v.contiguous() for k, v in trunk.state_dict().items()}, f"{out}/trunk.safetensors",
          metadata={"format": "pt"})
save_file({"score.0.weight": score[0].weight.data, "score.0.bias": score[0].bias.data,
           "score.2.weight": score[2].weight.data, "score.2.bias": score[2].bias.data},
          f"{out}/prm_head.safetensors", metadata={"format": "pt"})
torch.save(reward_head.state_dict(), f"{out}/reward_head.pt")
weight_map = {f"model.{k}": "trunk.safetensors" for k in trunk.state_dict()}
weight_map.update({k: "prm_head.safetensors" for k in ("score.0.weight", "score.0.bias", "score.2.weight", "score.2.bias")})
json.dump({"metadata": {}, "weight_map": weight_map}, open(f"{out}/model.safetensors.index.json", "w"), indent=1)
base = cfg.to_dict()
for k in ("_name_or_path", "transformers_version", "architectures"):
    base.pop(k, None)
json.dump({**base, "architectures": ["Qwen2ForProcessRewardModel"], "num_labels": 2}, open(f"{out}/config_prm.json", "w"), indent=1)
json.dump({**base, "architectures": ["Qwen2ForCausalLM"]}, open(f"{out}/config_causal.json", "w"), indent=1)

records = [
    {"problem": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May?",
     "steps": ["In April she sold 48 clips.", "In May she sold 48 / 2 = 24 clips.", "Altogether 48 + 24 = 72.\n\\boxed{72}"]},
    {"question": "Solve $x^2 = 4$ for $x > 0$.", "response": "We take square roots.\n\nSo $x = 2$.\n\nThe answer is \\boxed{2}."},
    {"question": "问题：1+1=?", "thinking_trajectories": ["Let me think.\n\nOne plus one is two.\n\nDouble-check: yes 2."], "attempt": "1+1=2\n\n**Answer:** 2"},
    {"question": "What is 7*6?", "response": "<think>\n7*6... 7*5=35\n\n35+7=42\n</think>\n\n42 ✓"},
    {"prompt": "Which number is larger, 9.8 or 9.11?", "completions": ["The fractional part of 9.8 is 0.8, while 9.11 has 0.11.", "Since 0.11 is greater than 0.8, 9.11 is larger."], "labels": [True, False]},
    {"question": "Emoji 👩‍👩‍👧 and tabs\tand   spaces ", "steps": ["  leading", "trailing  ", "mixed\r\nline endings"], "system": "Please reason step by step, and put your final answer within \\boxed{}."},
    {"question": "Long one", "steps": [f"Step {i}: we compute {i}*{i} = {i*i}." for i in range(60)]},
]

def split_steps(text):  # the documented "\n\n" rule: whitespace-only pieces dropped, others verbatim
    return [p for p in text.split("\n\n") if p.strip()]

def steps_of(r):
    if "steps" in r:
        return r["steps"]
    if "completions" in r:
        return r["completions"]
    if "thinking_trajectories" in r:
        return split_steps("\n\n".join(r["thinking_trajectories"])) + split_steps(r["attempt"])
    resp = r["response"]
    if "</think>" in resp:
        th, rs = resp.split("</think>", 1)
        th = th.split("<think>", 1)[1] if "<think>" in th else th
        return split_steps(th) + split_steps(rs)
    return split_steps(resp)

def plain_completion(r):
    if "attempt" in r:
        return r["attempt"]
    if "response" in r:
        resp = r["response"]
        return resp.split("</think>", 1)[1] if "</think>" in resp else resp
    return "\n\n".join(steps_of(r))

with open(f"{out}/records.jsonl", "w") as f_in, open(f"{out}/expected.jsonl", "w") as f_exp, torch.no_grad():
    for r in records:
        q = r.get("question") or r.get("problem") or r.get("prompt")
        steps = steps_of(r)
        msgs = ([{"role": "system", "content": r["system"]}] if "system" in r else []) + [
            {"role": "user", "content": q},
            {"role": "assistant", "content": "<extra_0>".join(steps) + "<extra_0>"}]
        text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=False)
        ids = tok.encode(text)
        x = torch.tensor([ids])
        h = trunk(input_ids=x).last_hidden_state[0]
        probs = torch.softmax(score(h), dim=-1)[:, 1]
        pos = [i for i, t in enumerate(ids) if t == STEP_ID]
        assert len(pos) == len(steps)
        plain_ids = tok.encode(q + plain_completion(r))
        hp = trunk(input_ids=torch.tensor([plain_ids])).last_hidden_state[0, -1]
        scalar = torch.sigmoid(reward_head(hp))[0]
        f_in.write(json.dumps(r, ensure_ascii=False) + "\n")
        f_exp.write(json.dumps({"step_rewards": [float(probs[p]) for p in pos], "final_reward": float(probs[-1]),
                                "n_tokens": len(ids), "scalar_reward": float(scalar),
                                "n_plain_tokens": len(plain_ids)}) + "\n")
print("wrote", len(records), "records")
