"""BMG on the non-stationary two-colours grid world, with the distributed program.

The agent follows Luketina et al. 2022 (separate 2x256 MLPs, SGD at 0.1,
unrolls of 16, discount 0.99), with gradients clipped to norm 1 (without it
the SGD agent diverged here) and, as a distributed run, 64 environments
feeding batches of 32 unrolls. BMG meta-learns the entropy cost from the
reward context (the mean reward of the last 10 batches). Every environment
swaps its rewarding colour every 100,000 of its own steps.

The paper's single-stream comparison runs with the same update code under
`make results` (benchmarks/two_colours.py); this config is the same method at
scale, for `make train CONFIG=launch/configs/two_colours_bmg.py`.
"""

import dataclasses

import ml_collections

from envs import two_colours
from podmeta.config import Config


def get_config() -> ml_collections.ConfigDict:
  config = Config(
      env_id=two_colours.ENV_ID,
      num_actors=2,
      envs_per_actor=32,
      unroll_length=16,
      batch_size=32,
      hidden_sizes=(256, 256),
      shared_torso=False,
      optimizer="sgd",
      learning_rate=0.1,
      max_grad_norm=1.0,
      discount=0.99,
      baseline_cost=1.0,
      entropy_cost=0.1,
      eval_episodes=4,
      max_env_steps=3_000_000,
  )
  values = dataclasses.asdict(config)
  values["meta"] = dict(
      method="bmg",
      hyperparams=dict(entropy_cost=dict(init=0.1, low=0.0, high=1.0)),
      context="reward",
      context_window=10,
      meta_hidden_sizes=(64, 64),
      inner_steps=1,
      target_steps=8,
      target_data="online",
      matching="kl",
      target_update="agent",
      outer_entropy_cost=0.0,
      learning_rate=1e-4,
      adam_eps=1e-4,
  )
  return ml_collections.ConfigDict(values)
