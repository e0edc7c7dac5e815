"""IMPALA with an LSTM core on CartPole without its velocities (a task that needs memory).

podmeta/CartPoleNoVelocity-v1 observes only the cart position and the pole
angle; the velocities must be inferred from the past. The agent is
cartpole_impala.py's with an LSTM of 64 units after each torso: actors carry
its state, each unroll stores the state at its first step, and the learner
unrolls the LSTM over each unroll from there, resetting it where an episode
starts. RESULTS.md compares it with the same agent without the LSTM.
"""

import ml_collections

from launch.configs import cartpole_impala


def get_config() -> ml_collections.ConfigDict:
  config = cartpole_impala.get_config()
  config.env_id = "podmeta/CartPoleNoVelocity-v1"
  config.core = "lstm"
  config.core_size = 64
  config.max_env_steps = 2_000_000
  return config
