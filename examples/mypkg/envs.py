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


class Reach(gym.Env):
  """A point on [-1, 1] steered to a target by a continuous velocity.

  The observation is (position, target); the action, a Box in [-0.25, 0.25],
  moves the point by that much. Every step pays minus the distance to the
  target; an episode is 20 steps (truncated). A uniformly random policy
  returns about -13.7, one that heads straight for the target about -1.0.
  """

  def __init__(self, max_speed: float = 0.25):
    self.observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    self.action_space = gym.spaces.Box(-max_speed, max_speed, (1,), np.float32)
    self._position = self._target = 0.0

  def _obs(self):
    return np.array([self._position, self._target], np.float32)

  def reset(self, *, seed=None, options=None):
    super().reset(seed=seed)
    self._position, self._target = self.np_random.uniform(-1.0, 1.0, 2)
    return self._obs(), {}

  def step(self, action):
    move = float(np.clip(np.asarray(action, np.float64).reshape(-1)[0],
                         self.action_space.low[0], self.action_space.high[0]))
    self._position = float(np.clip(self._position + move, -1.0, 1.0))
    return self._obs(), -abs(self._position - self._target), False, False, {}


gym.register("Reach-v0", entry_point=Reach, max_episode_steps=20)
