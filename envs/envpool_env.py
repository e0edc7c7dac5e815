"""EnvPool's C++ vector envs behind the actor's vector-env interface.

`--config.env_backend=envpool` steps the actor's envs with EnvPool (Weng et
al. 2022), which runs them in C++ threads outside the GIL, instead of
gymnasium's Python envs stepped one after another. Only EnvPool's own ids
(e.g. "CartPole-v1", "Acrobot-v1", "Pendulum-v1"); users' own envs and
wrappers stay on the gymnasium backend.

The interface is the part of gymnasium's VectorEnv the actor uses: `num_envs`,
`single_observation_space`, `single_action_space`, `reset()` and `step()`
with the "next step" autoreset (an env whose episode ended is reset by the
following step, which pays 0 and ignores its action), which is EnvPool's
own. Box actions are taken in [-1, 1] and rescaled to the env's bounds, as
`envs.normalise_actions` does on the gymnasium backend.
"""

import sys
import types
import warnings
from typing import Any, Mapping, Optional, Tuple

import gymnasium as gym
import numpy as np


def _envpool():
  """The envpool module, imported on first use (only its users pay for it).

  envpool 0.8.4's optional XLA bridge (envpool.python.lax) is imported with
  it and fails on JAX >= 0.6 (it uses xla_client.Shape, since removed);
  podmeta never calls the bridge, so an empty mixin stands in for it.
  """
  if "envpool" not in sys.modules and "envpool.python.lax" not in sys.modules:
    bridge = types.ModuleType("envpool.python.lax")
    bridge.XlaMixin = type("XlaMixin", (), {})
    sys.modules["envpool.python.lax"] = bridge
  try:
    import envpool  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ValueError("config field 'env_backend': 'envpool' needs the envpool package "
                     f"({e}); bash scripts/install.sh installs it") from None
  return envpool


def check_env_id(env_id: str) -> None:
  """Raises ValueError naming `env_id` if EnvPool does not have it."""
  known = _envpool().list_all_envs()
  if env_id not in known:
    classic = [e for e in ("CartPole-v1", "Acrobot-v1", "MountainCar-v0", "Pendulum-v1",
                           "MountainCarContinuous-v0") if e in known]
    raise ValueError(f"config field 'env_id': EnvPool has no env {env_id!r} (with "
                     f"env_backend='envpool' use one of its ids, e.g. {', '.join(classic)})")


class VectorEnv:
  """`num_envs` EnvPool envs stepped together, on `num_threads` C++ threads."""

  def __init__(self, env_id: str, num_envs: int, seed: int, num_threads: int = 0,
               env_kwargs: Optional[Mapping[str, Any]] = None):
    check_env_id(env_id)
    kwargs = dict(env_kwargs or {})
    try:
      with warnings.catch_warnings():
        # EnvPool builds float32 Boxes from float64 bounds; gymnasium warns each time.
        warnings.filterwarnings("ignore", message=".*precision lowered")
        self._pool = _envpool().make(env_id, env_type="gymnasium", num_envs=num_envs,
                                     seed=seed, num_threads=num_threads, **kwargs)
        observation_space, space = self._pool.observation_space, self._pool.action_space
    except Exception as e:  # pylint: disable=broad-except  (EnvPool's own checks)
      field = "env_kwargs" if kwargs else "env_id"
      raise ValueError(f"config field {field!r}: envpool.make({env_id!r}) failed "
                       f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
                       ) from None
    self.num_envs = num_envs
    self.single_observation_space = observation_space
    self._bounds = None
    if isinstance(space, gym.spaces.Box):
      self._bounds = (space.low, space.high)
      ones = np.ones(space.shape, space.dtype)
      space = gym.spaces.Box(-ones, ones, dtype=space.dtype)
    self.single_action_space = space

  def reset(self, seed: Optional[int] = None) -> Tuple[np.ndarray, dict]:
    del seed  # EnvPool seeds its envs once, at construction
    return self._pool.reset()

  def step(self, action: np.ndarray):
    if self._bounds is not None:
      low, high = self._bounds
      action = low + (np.clip(action, -1.0, 1.0) + 1.0) * 0.5 * (high - low)
    else:
      action = np.asarray(action, np.int32)  # EnvPool's discrete actions are int32
    obs, reward, terminated, truncated, info = self._pool.step(np.asarray(action))
    return obs, reward, terminated, truncated, info

  def close(self) -> None:
    self._pool.close()
