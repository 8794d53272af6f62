# Online RL and Best-of-N on the world's letter tasks from one SFT model (docs/rl.md, "On the learnable
# world"). Needs runs/w5 from docs/world_learnability.md ("Format 4 on the 2-core CPU": the world, its
# tokenizer, pt1200 and the 1,200-step SFT run sft1200_mix). Measured on one GPU, all runs at once:
#   DEVICE=cuda bash examples/rl/world_letters.sh
# (on CPU each run takes hours; the demo recipe runs a short GRPO instead).
set -u
DEVICE=${DEVICE:-cuda}
OUT=runs/rl_letters
mkdir -p $OUT
grep -E '"task": "(count_letter|reverse|sort_letters)"' runs/w5/data/verifiable/test.jsonl > $OUT/letters_test.jsonl
G="examples/rl/world_letters_grpo.yaml train.device=$DEVICE"
for lr in 2e-5 5e-5 1e-4; do chatforge grpo $G out=$OUT/grpo_$lr optim.lr=$lr > $OUT/grpo_$lr.log 2>&1 & done
for s in 1 2; do chatforge grpo $G out=$OUT/grpo_5e-5_seed$s train.seed=$s rollout.sampling.seed=$s > $OUT/grpo_seed$s.log 2>&1 & done
chatforge grpo $G out=$OUT/rloo_5e-5 loss.advantage=rloo > $OUT/rloo.log 2>&1 &
chatforge grpo $G out=$OUT/drgrpo_5e-5 loss.scale_rewards=false loss.loss_aggregation=constant > $OUT/drgrpo.log 2>&1 &
chatforge ppo examples/rl/world_letters_ppo.yaml train.device=$DEVICE out=$OUT/ppo_5e-5 > $OUT/ppo.log 2>&1 &
chatforge online-dpo examples/rl/world_letters_online_dpo.yaml train.device=$DEVICE out=$OUT/odpo_5e-5 > $OUT/odpo.log 2>&1 &
chatforge bon out=$OUT/bon model=runs/w5/sft1200_mix/final "data={sources: [{path: $OUT/letters_test.jsonl}], max_prompts: 100}" \
    n_max=16 "sampling={temperature: 1.0, max_new_tokens: 128, seed: 0}" "scorer={kind: check}" \
    "gold={kind: gold, world: runs/w5/data}" device=$DEVICE > $OUT/bon.log 2>&1 &
wait
python examples/rl/frontier.py $OUT/grpo_2e-5 $OUT/grpo_5e-5 $OUT/grpo_5e-5_seed1 $OUT/grpo_5e-5_seed2 $OUT/grpo_1e-4 \
    $OUT/rloo_5e-5 $OUT/drgrpo_5e-5 $OUT/ppo_5e-5 $OUT/odpo_5e-5 --bon $OUT/bon/bon.json --out docs/img/rl_frontier_letters.png
# greedy exact match per task type on all 548 held-out instructions, before and after
python examples/world/exact_match_by_rung.py runs/w5/data runs/w5/sft1200_mix/final $OUT/*/final
