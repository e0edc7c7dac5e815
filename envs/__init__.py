"""Environment factories: gymnasium vector envs for actors, single envs for specs.

Besides gymnasium's own ids: "podmeta/TwoColours-v0" (`two_colours`) and
"podmeta/<Game>-v0" for every Atari game (`atari`), e.g. "podmeta/Pong-v0", and
CartPoles that fail on purpose (`faulty`).
"""

from typing import NamedTuple, Tuple

import gymnasium as gym
import numpy as np

from envs import atari
from envs import faulty
from envs import two_colours


def register() -> None:
  """Registers podmeta's own env ids with gymnasium; idempotent."""
  two_colours.register()
  atari.register()
  faulty.register()


class EnvSpec(NamedTuple):
  obs_shape: Tuple[int, ...]
  obs_dtype: np.dtype
  num_actions: int


def check_env_id(env_id: str) -> None:
  """Raises ValueError naming `env_id` if gymnasium does not know it."""
  register()
  try:
    gym.spec(env_id)
  except gym.error.Error as e:
    raise ValueError(f"unknown env id {env_id!r} ({type(e).__name__})") from None


def env_spec(env_id: str) -> EnvSpec:
  register()
  env = gym.make(env_id)
  try:
    if not isinstance(env.action_space, gym.spaces.Discrete):
      raise ValueError(f"env {env_id!r}: podmeta needs a discrete action space, "
                       f"got {env.action_space}")
    space = env.observation_space
    return EnvSpec(tuple(space.shape), np.dtype(space.dtype), int(env.action_space.n))
  finally:
    env.close()


def make_vector_env(env_id: str, num_envs: int, seed: int, **env_kwargs) -> gym.vector.VectorEnv:
  """A synchronous vector env that resets an episode one step after it ends.

  The "next step" autoreset keeps each final observation in the stream, which
  the V-trace loss needs to bootstrap truncated episodes (see podmeta.losses).
  """
  register()
  env = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync",
                     vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP},
                     **env_kwargs)
  env.reset(seed=seed)
  return env
