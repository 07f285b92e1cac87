"""Renders PRM inputs with HF transformers' apply_chat_template (the real Jinja path) so that
tests/format/test_format.c can check fp_render_prm_chatml byte for byte.

Run from the repository root:
  mkdir -p tests/tmp/ref && cp ../shared/data/tokenizer/qwen2/tokenizer.json \
     ../shared/data/templates/qwen2.5-instruct.jinja tests/tmp/ref/
  ../shared/tools/pyref run tests/ref/format/make_chatml_fixture.py tests/tmp/ref
Writes tests/ref/format/chatml_qwen25.jsonl: {question, steps, system (optional), expected}."""
import json
import random
import sys

from transformers import PreTrainedTokenizerFast

src = sys.argv[1]
tok = PreTrainedTokenizerFast(tokenizer_file=f"{src}/tokenizer.json")
tok.chat_template = open(f"{src}/qwen2.5-instruct.jinja").read()

rng = random.Random(1234)
pieces = ["Let x = 3.", "So 2x = 6.", "  leading spaces", "trailing\n", "数学 ünïcödé ✓", "$\\frac{1}{2}$",
          "tab\there", "emoji 👩‍👩‍👧", "line\nbreak", "<|im_start|> literal", "The answer is \\boxed{42}."]
records = []
for i in range(40):
    q = rng.choice(["What is 2+2?", "Solve $x^2=4$.", "Natalia sold clips to 48 friends...", "问题：1+1=?", " spaced question "])
    steps = [rng.choice(pieces) for _ in range(rng.randint(1, 6))]
    rec = {"question": q, "steps": steps}
    if i % 3 == 1:
        rec["system"] = rng.choice(["Please reason step by step, and put your final answer within \\boxed{}.", "Be brief."])
    msgs = []
    if "system" in rec:
        msgs.append({"role": "system", "content": rec["system"]})
    msgs.append({"role": "user", "content": q})
    msgs.append({"role": "assistant", "content": "<extra_0>".join(steps) + "<extra_0>"})
    rec["expected"] = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=False)
    records.append(rec)

with open("tests/ref/format/chatml_qwen25.jsonl", "w") as f:
    for r in records:
        f.write(json.dumps(r, ensure_ascii=False) + "\n")
print("wrote", len(records), "records")
