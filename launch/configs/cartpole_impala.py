"""IMPALA on CartPole-v1: reaches a mean training return of ~500 within 1M env steps."""

import dataclasses

import ml_collections

from podmeta.config import Config


def get_config() -> ml_collections.ConfigDict:
  config = Config(
      env_id="CartPole-v1",
      num_actors=2,
      envs_per_actor=16,
      unroll_length=20,
      batch_size=32,
      hidden_sizes=(64, 64),
      learning_rate=1e-3,
      entropy_cost=0.01,
      discount=0.99,
      max_env_steps=1_000_000,
  )
  return ml_collections.ConfigDict(dataclasses.asdict(config))
