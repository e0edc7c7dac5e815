"""IMPALA on CartPole-v1 stepped by EnvPool's C++ envs: the lean configuration.

cartpole_impala.py's agent, shaped for throughput: 128 envs per
actor and batches of 128 unrolls. An actor's fixed costs per vector step (the
policy call, the Reverb writes) and the learner's per batch (sampling from
Reverb) are then shared by 4x the env steps; with 32 envs and batches of 32
those fixed costs, not EnvPool, set the end-to-end rate (BENCHMARKS.md).
With 4x fewer updates per env step the learning rate is 3x the 32-unroll
config's: swept on local_mt to the shortest time to a mean return of 475 that
stayed at 500 for 45 s (2e-3: 14.7 s, 4e-3: 12.3-13.6 s, 6e-3: 10.2-11.2 s,
8e-3: 10.2-11.3 s but one seed of five fell back to 149; batches of 64 were
slower or unstable).
"""

import ml_collections

from launch.configs import cartpole_impala


def get_config() -> ml_collections.ConfigDict:
  config = cartpole_impala.get_config()
  config.env_backend = "envpool"
  config.envs_per_actor = 128
  config.batch_size = 128
  config.learning_rate = 6e-3
  config.max_env_steps = 3_000_000
  return config
