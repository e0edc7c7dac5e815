"""BMG recovering a poor learning rate on CartPole (benchmarks/cartpole_recovery.py).

cartpole_impala.py's agent, started with a learning rate 10 times too small:
only a learning-rate scale is meta-learned (sigmoid in [0.01, 2], starting at
0.1), by online BMG (K = 1, L = 4: the target is the agent three real updates
later plus one policy-gradient step).
"""

import ml_collections

from launch.configs import cartpole_impala


def get_config() -> ml_collections.ConfigDict:
  config = cartpole_impala.get_config()
  config.meta = ml_collections.ConfigDict(dict(
      method="bmg",
      hyperparams=dict(
          learning_rate_scale=dict(init=0.1, low=0.01, high=2.0, transform="sigmoid"),
      ),
      inner_steps=1,
      target_steps=4,
      target_data="online",
      matching="kl",
      target_update="agent",
      outer_entropy_cost=0.0,
      # At 1e-3 the scale moved 0.10 -> 0.11 in 600k steps (the meta-gradient's
      # sign is noisy while the policy is near uniform); 3e-2 overshot to the
      # bound (2.0) and the agent collapsed.
      learning_rate=1e-2,
      max_grad_norm=1.0,
  ))
  return config
