"""IMPALA on CartPole-v1: a mean training return near 500 within ~600k env steps.

Tuned by sweeping a synchronous version of the same learner: what made it
reliable was orthogonal initialisation (in podmeta.networks), separate policy
and value torsos, RMSProp with gradients clipped to norm 0.5, and many small
updates (32 unrolls of 10 steps) instead of few large ones. With Adam, norm-40
clipping and 32x20 batches it oscillated between returns of 100 and 400.
"""

import dataclasses

import ml_collections

from podmeta.config import Config


def get_config() -> ml_collections.ConfigDict:
  config = Config(
      env_id="CartPole-v1",
      num_actors=2,
      envs_per_actor=32,
      unroll_length=10,
      batch_size=32,
      hidden_sizes=(64, 64),
      shared_torso=False,
      optimizer="rmsprop",
      learning_rate=2e-3,
      rmsprop_decay=0.99,
      optimizer_eps=1e-5,
      max_grad_norm=0.5,
      entropy_cost=0.0,
      baseline_cost=0.5,
      discount=0.99,
      max_env_steps=1_000_000,
  )
  return ml_collections.ConfigDict(dataclasses.asdict(config))
