"""Environments that fail on purpose, to see what a run does when a user's env crashes.

"podmeta/FaultyCartPole-v1": CartPole whose `step` raises `EnvCrash` with
probability `error_rate` (default 0.002; gym.make(..., error_rate=...)
overrides it), drawn from its own generator seeded by `reset(seed=...)`.
"podmeta/BrokenCartPole-v1": the same with every step failing.
"""

import gymnasium as gym
from gymnasium.envs.classic_control import cartpole
import numpy as np

FAULTY_ID = "podmeta/FaultyCartPole-v1"
BROKEN_ID = "podmeta/BrokenCartPole-v1"


class EnvCrash(RuntimeError):
  """The injected failure."""


class FaultyCartPole(cartpole.CartPoleEnv):

  def __init__(self, error_rate: float = 0.002, **kwargs):
    super().__init__(**kwargs)
    if not 0.0 <= error_rate <= 1.0:
      raise ValueError(f"error_rate must be in [0, 1] (got {error_rate})")
    self._error_rate = error_rate
    self._faults = np.random.default_rng()

  def reset(self, *, seed=None, options=None):
    if seed is not None:
      self._faults = np.random.default_rng(seed + 1)
    return super().reset(seed=seed, options=options)

  def step(self, action):
    if self._faults.random() < self._error_rate:
      raise EnvCrash("injected environment failure")
    return super().step(action)


def register() -> None:
  for env_id, rate in ((FAULTY_ID, 0.002), (BROKEN_ID, 1.0)):
    if env_id not in gym.registry:
      gym.register(id=env_id, entry_point="envs.faulty:FaultyCartPole", max_episode_steps=500,
                   kwargs={"error_rate": rate})
