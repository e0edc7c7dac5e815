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

Atari: "podmeta/<Game>-v0" is EnvPool's "<Game>-v5" set up with the
preprocessing of the gymnasium backend (`envs.atari`: sticky actions 0.25,
frame skip 4 with max-pooling, ALE's greyscale, area resize to 84x84, 4
frames stacked, 1-30 no-ops, no fire reset, no life-loss terminal, 27,000
agent steps), channels last. On the same seed-free start (one no-op, no
sticky actions) the two give the same pixels and rewards step for step
(tests/test_envpool.py); they differ only in the last frame of a game that
ends inside a frame skip, which EnvPool does not max-pool, and with
`terminal_on_life_loss`, where EnvPool keeps the frame stack across a lost
life and takes 1-30 no-ops after it (the gymnasium path: a fresh stack after
one no-op). EnvPool's own Atari ids, with its own defaults and channels first,
are refused.
"""

import sys
import types
import warnings
from typing import Any, Mapping, Optional, Tuple

import gymnasium as gym
import numpy as np

from envs import atari

# podmeta's Atari env_kwargs (envs.atari.make_env) -> EnvPool's names.
_ATARI_KWARGS = {"terminal_on_life_loss": "episodic_life", "noop_max": "noop_max",
                 "repeat_action_probability": "repeat_action_probability",
                 "full_action_space": "full_action_space"}


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


def _is_atari(native_id: str) -> bool:
  spec = _envpool().registration.registry.specs.get(native_id)
  return spec is not None and spec[0] == "envpool.atari"


def _atari_game(env_id: str) -> Optional[str]:
  """The game of a podmeta Atari id ("podmeta/Pong-v0" -> "Pong"), else None."""
  if env_id.startswith(atari.ENV_ID_PREFIX) and env_id.endswith(atari.ENV_ID_SUFFIX):
    return env_id[len(atari.ENV_ID_PREFIX):-len(atari.ENV_ID_SUFFIX)]
  return None


def native(env_id: str, env_kwargs: Optional[Mapping[str, Any]] = None
           ) -> Tuple[str, dict, bool]:
  """EnvPool's id and make() kwargs for `env_id`, and whether its observations are
  Atari's channels-first stacks (to be moved last). ValueError names a bad field."""
  kwargs = dict(env_kwargs or {})
  game = _atari_game(env_id)
  if game is None:
    if _is_atari(env_id):
      raise ValueError(
          f"config field 'env_id': with env_backend='envpool' name Atari games podmeta's way, "
          f"{atari.env_id(env_id.rsplit('-', 1)[0])!r} (the gymnasium backend's "
          f"preprocessing, channels last), not EnvPool's {env_id!r}")
    return env_id, kwargs, False
  unknown = sorted(set(kwargs) - set(_ATARI_KWARGS))
  if unknown:
    raise ValueError(f"config field 'env_kwargs': {unknown} are not options of {env_id!r} "
                     f"on env_backend='envpool' (it takes {sorted(_ATARI_KWARGS)})")
  if kwargs.get("noop_max", atari.NOOP_MAX) < 1:
    raise ValueError("config field 'env_kwargs': noop_max must be at least 1 with "
                     "env_backend='envpool' (EnvPool always takes 1 to noop_max no-ops)")
  options = dict(repeat_action_probability=atari.REPEAT_ACTION_PROBABILITY,
                 noop_max=atari.NOOP_MAX, episodic_life=False, full_action_space=False,
                 frame_skip=atari.FRAME_SKIP, stack_num=atari.STACK,
                 img_height=atari.SCREEN_SIZE, img_width=atari.SCREEN_SIZE, gray_scale=True,
                 use_inter_area_resize=True, use_fire_reset=False, reward_clip=False,
                 max_episode_steps=atari.MAX_EPISODE_STEPS)
  options.update({_ATARI_KWARGS[k]: v for k, v in kwargs.items()})
  return f"{game}-v5", options, True


def check_env_id(env_id: str) -> None:
  """Raises ValueError naming `env_id` if EnvPool does not have it."""
  known = _envpool().list_all_envs()
  if native(env_id)[0] not in known:
    classic = [e for e in ("CartPole-v1", "Acrobot-v1", "MountainCar-v0", "Pendulum-v1",
                           "MountainCarContinuous-v0") if e in known]
    raise ValueError(f"config field 'env_id': EnvPool has no env {env_id!r} (with "
                     f"env_backend='envpool' use one of its ids, e.g. {', '.join(classic)})")


class VectorEnv:
  """`num_envs` EnvPool envs stepped together, on `num_threads` C++ threads."""

  def __init__(self, env_id: str, num_envs: int, seed: int, num_threads: int = 0,
               env_kwargs: Optional[Mapping[str, Any]] = None):
    check_env_id(env_id)
    native_id, kwargs, self._channels_first = native(env_id, env_kwargs)
    try:
      with warnings.catch_warnings():
        # EnvPool builds float32 Boxes from float64 bounds; gymnasium warns each time.
        warnings.filterwarnings("ignore", message=".*precision lowered")
        self._pool = _envpool().make(native_id, env_type="gymnasium", num_envs=num_envs,
                                     seed=seed, num_threads=num_threads, **kwargs)
        observation_space, space = self._pool.observation_space, self._pool.action_space
    except Exception as e:  # pylint: disable=broad-except  (EnvPool's own checks)
      field = "env_kwargs" if env_kwargs else "env_id"
      raise ValueError(f"config field {field!r}: envpool.make({env_id!r}) failed "
                       f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
                       ) from None
    self.num_envs = num_envs
    if self._channels_first:
      stack, height, width = observation_space.shape
      observation_space = gym.spaces.Box(0, 255, (height, width, stack), np.uint8)
    self.single_observation_space = observation_space
    self._bounds = None
    if isinstance(space, gym.spaces.Box):
      self._bounds = (space.low, space.high)
      ones = np.ones(space.shape, space.dtype)
      space = gym.spaces.Box(-ones, ones, dtype=space.dtype)
    self.single_action_space = space

  def reset(self, seed: Optional[int] = None) -> Tuple[np.ndarray, dict]:
    del seed  # EnvPool seeds its envs once, at construction
    obs, info = self._pool.reset()
    return self._observation(obs), info

  def _observation(self, obs: np.ndarray) -> np.ndarray:
    if self._channels_first:  # one copy for all envs: [N, C, H, W] -> [N, H, W, C]
      return np.ascontiguousarray(obs.transpose(0, 2, 3, 1))
    return obs

  def step(self, action: np.ndarray):
    if self._bounds is not None:
      low, high = self._bounds
      action = low + (np.clip(action, -1.0, 1.0) + 1.0) * 0.5 * (high - low)
    else:
      action = np.asarray(action, np.int32)  # EnvPool's discrete actions are int32
    obs, reward, terminated, truncated, info = self._pool.step(np.asarray(action))
    return self._observation(obs), reward, terminated, truncated, info

  def close(self) -> None:
    self._pool.close()
