"""Tasks that need memory.

"podmeta/CartPoleNoVelocity-v1": CartPole-v1 whose observation keeps the cart
position and the pole angle and drops both velocities, so a feed-forward
policy sees a partially observed system: the velocities must be inferred from
consecutive observations (the standard masked-velocity benchmark of recurrent
RL, e.g. Meng et al. 2021, arXiv 2102.12344).
"""

import gymnasium as gym
from gymnasium.envs.classic_control import cartpole
import numpy as np

NO_VELOCITY_ID = "podmeta/CartPoleNoVelocity-v1"
_KEPT = np.array([0, 2])  # x, theta of (x, x_dot, theta, theta_dot)


class CartPoleNoVelocity(cartpole.CartPoleEnv):

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    full = self.observation_space
    self.observation_space = gym.spaces.Box(full.low[_KEPT], full.high[_KEPT], dtype=np.float32)

  def reset(self, *, seed=None, options=None):
    obs, info = super().reset(seed=seed, options=options)
    return obs[_KEPT], info

  def step(self, action):
    obs, reward, terminated, truncated, info = super().step(action)
    return obs[_KEPT], reward, terminated, truncated, info


def register() -> None:
  if NO_VELOCITY_ID not in gym.registry:
    gym.register(id=NO_VELOCITY_ID, entry_point="envs.memory:CartPoleNoVelocity",
                 max_episode_steps=500)
