"""Online RL: rollouts from the sampler as the engine's Batches, PPO/GRPO/RLOO/online-DPO objectives, the KL controller."""
