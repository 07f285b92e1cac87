#!/bin/sh
# OpenRLHF GRPO with `fluxprm serve` as the remote reward model (docs/serve.md).  Not run by the tests.
#
# 1. Start the reward server (one process per GPU-less box is enough; it owns the model on one thread):
#      fluxprm serve --model /models/ReasonFlux-PRM-7B --port 8000 --beta 0.75 &
#    Rewards are r = 0.25*rule + 0.75*PRM when a label is sent (OpenRLHF sends --label_key's field as
#    "labels"), PRM alone when the label is null.  Add --whole-response to score each response as one step
#    like the released verl code; the default splits responses on blank lines ("\n\n").
# 2. Point OpenRLHF at it with --remote_rm_url (a comma-separated list spreads batches over several servers).
#    --advantage_estimator group_norm is OpenRLHF's GRPO; --n_samples_per_prompt is the group size.
#    The dataset is a JSONL of {"problem": ..., "answer": ...} rows (--input_key / --label_key name them).
set -e
python3 -m openrlhf.cli.train_ppo_ray \
  --ref_num_nodes 1 --ref_num_gpus_per_node 1 \
  --actor_num_nodes 1 --actor_num_gpus_per_node 4 \
  --vllm_num_engines 2 --vllm_tensor_parallel_size 1 \
  --pretrain Qwen/Qwen2.5-7B-Instruct \
  --remote_rm_url http://127.0.0.1:8000/get_reward \
  --prompt_data /data/math_train.jsonl --input_key problem --label_key answer --apply_chat_template \
  --advantage_estimator group_norm --n_samples_per_prompt 6 \
  --micro_train_batch_size 1 --train_batch_size 192 --micro_rollout_batch_size 4 --rollout_batch_size 32 \
  --max_epochs 1 --prompt_max_len 512 --generate_max_len 8192 \
  --actor_learning_rate 1e-6 --init_kl_coef 0.001 --use_kl_loss --kl_estimator k3 \
  --zero_stage 3 --bf16 --gradient_checkpointing \
  --save_path ./checkpoint/qwen2.5-7b-grpo-fluxprm
