# the four RL runs of docs/rl.md, in parallel (small settings for the loaded 2-core machine)
set -u
PY=.venv/bin/python
COMMON="model=runs/rl/sft/final data.max_val_prompts=60 rollout.sampling.max_new_tokens=48 eval.samples=2 eval.sampling.max_new_tokens=48 train.max_steps=16 train.eval_every=8 train.save_every=8"
OMP_NUM_THREADS=1 $PY -m chatforge ppo examples/rl/world_ppo.yaml $COMMON rollout.prompts_per_rollout=16 rollout.samples_per_prompt=1 optim.lr=1e-4 > runs/rl/ppo.log 2>&1 &
OMP_NUM_THREADS=1 $PY -m chatforge ppo examples/rl/world_ppo.yaml $COMMON rollout.prompts_per_rollout=16 rollout.samples_per_prompt=1 optim.lr=1e-4 out=runs/rl/ppo_ptx \
  'ptx={sources: [{path: runs/continual/world/pretrain/world_a_train.jsonl}], coef: 1.0, rows_per_step: 4, seq_len: 128}' > runs/rl/ppo_ptx.log 2>&1 &
OMP_NUM_THREADS=1 $PY -m chatforge grpo examples/rl/world_grpo.yaml $COMMON rollout.prompts_per_rollout=4 rollout.samples_per_prompt=4 optim.lr=1e-4 > runs/rl/grpo.log 2>&1 &
OMP_NUM_THREADS=1 $PY -m chatforge online-dpo examples/rl/world_online_dpo.yaml $COMMON rollout.prompts_per_rollout=16 rollout.samples_per_prompt=2 optim.lr=1e-4 > runs/rl/online_dpo.log 2>&1 &
wait
echo ALL_DONE
