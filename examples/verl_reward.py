"""verl custom reward function backed by `fluxprm serve` (docs/serve.md).

    custom_reward_function.path=/abs/path/examples/verl_reward.py
    custom_reward_function.name=compute_score

Each call POSTs one response to /get_reward; the server returns (1-beta)*rule + beta*PRM, where rule is its
verifier's 1.0/0.0 check of the response against ground_truth.  Set FLUXPRM_URL to point elsewhere.
Standard library only.
"""
import json
import os
import urllib.request

URL = os.environ.get("FLUXPRM_URL", "http://127.0.0.1:8000/get_reward")


def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    question = (extra_info or {}).get("question", "")  # optional: the raw problem text, when the dataset has it
    body = {"query": [question + solution_str], "prompts": [question],
            "labels": [None if ground_truth is None else str(ground_truth)]}
    req = urllib.request.Request(URL, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as resp:
        out = json.load(resp)
    return float(out["rewards"][0])
