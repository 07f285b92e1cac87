"""Independent references for `fluxprm train` (tests/train/test_train_cli.c), from HF transformers + tokenizers.

Mode `expected` (writes tests/ref/train_cli/expected.json): the loss of the first optimizer step of a full-batch
run is the mean loss of the input model over the records, so it checks the whole data path (ChatML rendering with
the template's default system prompt, <extra_0> positions, targets, final read-out at the last token, SFT
assistant-token masks) and the loss definitions, computed here in float64 from the tiny PRM of tests/ref/score:
  mse: lambda_step * mean_t (p_t - target_t)^2 + lambda_final * (p_last - final_target)^2  (final term only when
       the record has final_target), lambda_step 0.7, lambda_final 0.3
  ce:  mean over steps of -log softmax(score logits)[label]
  lm:  mean over the assistant tokens (content + the closing <|im_end|>) of the next-token cross-entropy, with the
       tied embedding as the LM head; the text is tokenized whole here (the trainer tokenizes per message piece).

Mode `check OUT SCORED`: loads OUT/model.safetensors with safetensors.torch into HF Qwen2Model (strict) + the score
head, scores tests/ref/train_cli/targets.jsonl the HF way and compares with SCORED (the output of
`fluxprm score --model OUT --step-token-id 151651` on the same file): every reward within 1e-5.

Mode `lora OUT`: OUT/model.safetensors (written with --merge-lora) equals the base weights + (alpha/r) B A of
OUT/adapter/adapter_model.safetensors, and its heads equal the adapter's saved score head.

Setup and runs (from the repository root; ../shared is not visible inside pyref):
  mkdir -p tests/tmp/ref && cp ../shared/data/tokenizer/qwen2/tokenizer.json \
      ../shared/data/templates/qwen2.5-instruct.jinja tests/tmp/ref/
  ../shared/tools/pyref run tests/ref/train_cli/make_expected.py expected tests/tmp/ref
  ../shared/tools/pyref run tests/ref/train_cli/make_expected.py check tests/tmp/ref OUT SCORED
  ../shared/tools/pyref run tests/ref/train_cli/make_expected.py lora tests/tmp/ref OUT
"""
import json
import sys

import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2Model

REF = "tests/ref/train_cli"
SCORE = "tests/ref/score"
STEP_ID = 151651
LSTEP, LFINAL = 0.7, 0.3

mode, src = sys.argv[1], sys.argv[2]
tj = json.load(open(f"{src}/tokenizer.json"))
for t in tj["added_tokens"]:
    if t["id"] == STEP_ID:
        t["content"] = "<extra_0>"
json.dump(tj, open(f"{src}/tokenizer_prm.json", "w"))
tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_file(f"{src}/tokenizer_prm.json"))
tok.chat_template = open(f"{src}/qwen2.5-instruct.jinja").read()


def load_model(config_path, tensors, dtype):
    cfg = Qwen2Config.from_json_file(config_path)
    trunk = Qwen2Model(cfg).eval()
    sd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    trunk.load_state_dict(sd, strict=True)
    H = cfg.hidden_size
    score = torch.nn.Sequential(torch.nn.Linear(H, H), torch.nn.ReLU(), torch.nn.Linear(H, 2)).eval()
    score.load_state_dict({k[len("score."):]: v for k, v in tensors.items() if k.startswith("score.")}, strict=True)
    left = [k for k in tensors if not k.startswith("model.") and not k.startswith("score.")]
    assert not left, f"unexpected tensors {left}"
    return trunk.to(dtype), score.to(dtype)


def records(path):
    return [json.loads(line) for line in open(path) if line.strip()]


def prm_ids(r):
    msgs = ([{"role": "system", "content": r["system"]}] if "system" in r else []) + [
        {"role": "user", "content": r["question"]},
        {"role": "assistant", "content": "<extra_0>".join(r["steps"]) + "<extra_0>"}]
    ids = tok.encode(tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=False))
    pos = [i for i, t in enumerate(ids) if t == STEP_ID]
    assert len(pos) == len(r["steps"])
    return ids, pos


def step_probs(trunk, score, ids):
    h = trunk(input_ids=torch.tensor([ids])).last_hidden_state[0]
    return torch.log_softmax(score(h), dim=-1)


if mode == "expected":
    t = load_file(f"{SCORE}/trunk.safetensors")
    t.update(load_file(f"{SCORE}/prm_head.safetensors"))
    trunk, score = load_model(f"{SCORE}/config_prm.json", t, torch.float64)
    out = {}
    with torch.no_grad():
        losses = []
        for r in records(f"{REF}/targets.jsonl"):
            ids, pos = prm_ids(r)
            p = step_probs(trunk, score, ids).exp()[:, 1]
            tgt = torch.tensor(r["step_targets"], dtype=torch.float64)
            loss = LSTEP * ((p[pos] - tgt) ** 2).mean()
            if "final_target" in r:
                loss = loss + LFINAL * (p[-1] - r["final_target"]) ** 2
            losses.append(float(loss))
        out["mse"] = {"lambda_step": LSTEP, "lambda_final": LFINAL, "record_losses": losses,
                      "mean_loss": sum(losses) / len(losses)}
        losses = []
        for r in records(f"{REF}/ce.jsonl"):
            ids, pos = prm_ids(r)
            lp = step_probs(trunk, score, ids)
            lab = [int(x) for x in r["step_labels"]]
            losses.append(float(-sum(lp[q, y] for q, y in zip(pos, lab)) / len(pos)))
        out["ce"] = {"record_losses": losses, "mean_loss": sum(losses) / len(losses)}
        losses = []
        emb = trunk.embed_tokens.weight
        for r in records(f"{REF}/sft.jsonl"):
            text, spans = "", []
            for m in r["messages"]:
                text += f"<|im_start|>{m['role']}\n"
                start = len(text)
                text += m["content"]
                if m["role"] == "assistant":
                    spans.append((start, len(text) + len("<|im_end|>")))
                text += "<|im_end|>\n"
            enc = tok(text, return_offsets_mapping=True, add_special_tokens=False)
            ids, offs = enc["input_ids"], enc["offset_mapping"]
            target = [any(a <= s and e <= b for a, b in spans) and e > s for s, e in offs]
            h = trunk(input_ids=torch.tensor([ids])).last_hidden_state[0]
            lp = torch.log_softmax(h @ emb.T, dim=-1)
            terms = [-lp[i - 1, ids[i]] for i in range(1, len(ids)) if target[i]]
            losses.append(float(sum(terms) / len(terms)))
        out["lm"] = {"record_losses": losses, "mean_loss": sum(losses) / len(losses)}
    json.dump(out, open(f"{REF}/expected.json", "w"), indent=1)
    print(json.dumps(out))
elif mode == "check":
    outdir, scored = sys.argv[3], sys.argv[4]
    trunk, score = load_model(f"{outdir}/config.json", load_file(f"{outdir}/model.safetensors"), torch.float32)
    worst = 0.0
    with torch.no_grad():
        for r, s in zip(records(f"{REF}/targets.jsonl"), records(scored)):
            ids, pos = prm_ids(r)
            p = step_probs(trunk, score, ids).exp()[:, 1]
            assert len(s["step_rewards"]) == len(pos) and s["n_tokens"] == len(ids)
            for q, got in zip(pos, s["step_rewards"]):
                worst = max(worst, abs(float(p[q]) - got))
            worst = max(worst, abs(float(p[-1]) - s["final_reward"]))
    print(f"HF vs fluxprm score on {outdir}: max |diff| = {worst:.3g}")
    assert worst < 1e-5
elif mode == "lora":
    outdir = sys.argv[3]
    merged = load_file(f"{outdir}/model.safetensors")
    ad = load_file(f"{outdir}/adapter/adapter_model.safetensors")
    acfg = json.load(open(f"{outdir}/adapter/adapter_config.json"))
    base = load_file(f"{SCORE}/trunk.safetensors")
    s = acfg["lora_alpha"] / acfg["r"]
    worst, n = 0.0, 0
    for k, a in ad.items():
        if k.endswith("lora_A.weight"):
            b = ad[k.replace("lora_A", "lora_B")]
            name = k[len("base_model.model."):].replace(".lora_A.weight", ".weight")
            want = base[name].double() + s * (b.double() @ a.double())
            worst = max(worst, float((merged[name].double() - want).abs().max()))
            n += 1
        elif not k.endswith("lora_B.weight"):
            assert torch.equal(merged[k[len("base_model.model."):]], a), k
    print(f"{n} merged LoRA weights: max |diff| = {worst:.3g}")
    assert n > 0 and worst < 1e-6
