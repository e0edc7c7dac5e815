"""Corridor-v0: walk right along a corridor to its end.

Importing this module registers the env, which is what `module:EnvId` ids
rely on: `--config.env_id=mypkg.envs:Corridor-v0` imports `mypkg.envs` first.
"""

import gymnasium as gym
import numpy as np


class Corridor(gym.Env):
  """Cells 0..length-1, starting at 0; actions 0 (left) and 1 (right).

  Reaching the last cell gives +1 and ends the episode; every step costs 0.01.
  The observation is the one-hot cell. The best return is 1 - 0.01 *
  (length - 1); at length 8 a uniformly random policy averages 0.37.
  """

  def __init__(self, length: int = 10):
    if length < 2:
      raise ValueError(f"length must be at least 2 (got {length})")
    self.length = length
    self.observation_space = gym.spaces.Box(0.0, 1.0, (length,), np.float32)
    self.action_space = gym.spaces.Discrete(2)
    self._cell = 0

  def _obs(self):
    obs = np.zeros(self.length, np.float32)
    obs[self._cell] = 1.0
    return obs

  def reset(self, *, seed=None, options=None):
    super().reset(seed=seed)
    self._cell = 0
    return self._obs(), {}

  def step(self, action):
    self._cell = int(np.clip(self._cell + (1 if action == 1 else -1), 0, self.length - 1))
    done = self._cell == self.length - 1
    return self._obs(), (1.0 if done else 0.0) - 0.01, done, False, {}


gym.register("Corridor-v0", entry_point=Corridor, max_episode_steps=100)
