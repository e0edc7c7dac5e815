"""Environment factories: gymnasium vector envs for actors, single envs for specs.

Besides gymnasium's own ids: "podmeta/TwoColours-v0" (`two_colours`) and
"podmeta/<Game>-v0" for every Atari game (`atari`), e.g. "podmeta/Pong-v0",
CartPoles that fail on purpose (`faulty`) and one without its velocities, which
needs memory (`memory`). A user's own env is named the
gymnasium way, "module:EnvId": the module is imported first (its import
registers the env), in every process that makes the env.
"""

import importlib
import json
from typing import Any, Callable, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import gymnasium as gym
import numpy as np

from envs import atari
from envs import envpool_env
from envs import faulty
from envs import memory
from envs import two_colours


def register() -> None:
  """Registers podmeta's own env ids with gymnasium; idempotent."""
  two_colours.register()
  atari.register()
  faulty.register()
  memory.register()


class EnvSpec(NamedTuple):
  """What the agent needs of an env: its observations, and its actions:
  `num_actions` choices, or (`continuous`) the dimensions of a Box."""
  obs_shape: Tuple[int, ...]
  obs_dtype: np.dtype
  num_actions: int
  continuous: bool = False


def normalise_actions(env: gym.Env) -> gym.Env:
  """A Box action space becomes [-1, 1]^D: actions are clipped there, then
  rescaled to the env's own bounds (what a Gaussian policy's samples need).
  Other spaces are left as they are."""
  space = env.action_space
  if isinstance(space, gym.spaces.Box):
    ones = np.ones(space.shape, space.dtype)  # bounds of the Box's dtype: no cast warnings
    env = gym.wrappers.ClipAction(gym.wrappers.RescaleAction(env, -ones, ones))
  return env


def _check_action_space(env_id: str, space) -> None:
  if isinstance(space, gym.spaces.Discrete):
    return
  if isinstance(space, gym.spaces.Box):
    if len(space.shape) != 1:
      raise ValueError(f"env {env_id!r}: podmeta needs a Box action space of rank 1, got "
                       f"shape {space.shape}")
    if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
      raise ValueError(f"env {env_id!r}: podmeta needs finite Box action bounds (a Gaussian "
                       f"policy's actions are clipped and rescaled to them), got {space}")
    return
  raise ValueError(f"env {env_id!r}: podmeta needs a Discrete or Box action space, "
                   f"got {space}")


def _import_module_of(env_id: str) -> str:
  """Imports the module of a "module:EnvId" id (whose import registers the env,
  as gymnasium does); returns the bare EnvId."""
  module, sep, name = env_id.rpartition(":")
  if not sep:
    return env_id
  try:
    importlib.import_module(module)
  except Exception as e:  # pylint: disable=broad-except  (any error of the user's module)
    raise ValueError(f"config field 'env_id': cannot import module {module!r} of {env_id!r} "
                     f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
  return name


def check_env_id(env_id: str, backend: str = "gymnasium") -> None:
  """Raises ValueError naming `env_id` if the backend does not know it."""
  if backend == "envpool":
    envpool_env.check_env_id(env_id)
    return
  register()
  name = _import_module_of(env_id)
  try:
    gym.spec(name)
  except gym.error.Error as e:
    raise ValueError(f"config field 'env_id': unknown env id {env_id!r} "
                     f"({type(e).__name__}: {str(e).splitlines()[0][:150]})") from None


def load_wrappers(names: Sequence[str]) -> List[Callable[[gym.Env], gym.Env]]:
  """The "module:callable" wrappers of config.env_wrappers, each taking and returning an env."""
  wrappers = []
  for name in names:
    module, sep, attr = name.partition(":")
    if not sep or not module or not attr:
      raise ValueError(f"config field 'env_wrappers': {name!r} is not 'module:callable' "
                       f"(e.g. 'gymnasium.wrappers:FlattenObservation')")
    try:
      wrapper = getattr(importlib.import_module(module), attr)
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(f"config field 'env_wrappers': cannot load {name!r} "
                       f"({type(e).__name__}: {e})") from None
    if not callable(wrapper):
      raise ValueError(f"config field 'env_wrappers': {name!r} is not callable")
    wrappers.append(wrapper)
  return wrappers


def make_env(env_id: str, env_kwargs: Optional[Mapping[str, Any]] = None,
             wrappers: Sequence[str] = ()) -> gym.Env:
  """One env: gym.make(env_id, **env_kwargs), then each wrapper in order, and
  `normalise_actions`.

  Errors of the id, the kwargs or the wrappers are ValueErrors naming the
  config field.
  """
  register()
  name = _import_module_of(env_id)
  env_kwargs = dict(env_kwargs or {})
  try:
    env = gym.make(name, **env_kwargs)
  except gym.error.Error as e:
    raise ValueError(f"config field 'env_id': cannot make {env_id!r} "
                     f"({type(e).__name__}: {str(e).splitlines()[0][:150]})") from None
  except Exception as e:  # pylint: disable=broad-except  (the user's constructor)
    field = "env_kwargs" if env_kwargs else "env_id"
    given = f" with {json.dumps(env_kwargs)}" if env_kwargs else ""
    raise ValueError(f"config field {field!r}: gym.make({env_id!r}){given} failed "
                     f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
  for wrapper in load_wrappers(wrappers):
    env = wrapper(env)
  _check_action_space(env_id, env.action_space)
  return normalise_actions(env)


def env_spec(env_id: str, env_kwargs: Optional[Mapping[str, Any]] = None,
             wrappers: Sequence[str] = (), backend: str = "gymnasium") -> EnvSpec:
  if backend == "envpool":
    pool = envpool_env.VectorEnv(env_id, 1, seed=0, env_kwargs=env_kwargs)
    try:
      _check_action_space(env_id, pool.single_action_space)
      return _spec(env_id, pool.single_observation_space, pool.single_action_space)
    finally:
      pool.close()
  env = make_env(env_id, env_kwargs, wrappers)
  try:
    return _spec(env_id, env.observation_space, env.action_space)
  finally:
    env.close()


def _spec(env_id: str, space, actions) -> EnvSpec:
  if not isinstance(space, gym.spaces.Box):
    raise ValueError(
        f"env {env_id!r}: podmeta needs an array (Box) observation space, got "
        f"{type(space).__name__}; flatten it with "
        f"--config.env_wrappers=\"('gymnasium.wrappers:FlattenObservation',)\"")
  if isinstance(actions, gym.spaces.Box):
    return EnvSpec(tuple(space.shape), np.dtype(space.dtype), int(actions.shape[0]),
                   continuous=True)
  return EnvSpec(tuple(space.shape), np.dtype(space.dtype), int(actions.n))


def make_vector_env(env_id: str, num_envs: int, seed: int, wrappers: Sequence[str] = (),
                    backend: str = "gymnasium", envpool_threads: int = 0, **env_kwargs):
  """A synchronous vector env that resets an episode one step after it ends.

  The "next step" autoreset keeps each final observation in the stream, which
  the V-trace loss needs to bootstrap truncated episodes (see podmeta.losses).
  `wrappers` ("module:callable") wrap each env, after gym.make, then
  `normalise_actions`. With `backend="envpool"`, EnvPool's C++ envs
  (`envs.envpool_env`; no wrappers) on `envpool_threads` threads (0: one per env).
  """
  if backend == "envpool":
    return envpool_env.VectorEnv(env_id, num_envs, seed, num_threads=envpool_threads,
                                 env_kwargs=env_kwargs)
  register()
  name = _import_module_of(env_id)
  env = gym.make_vec(name, num_envs=num_envs, vectorization_mode="sync",
                     vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP},
                     wrappers=load_wrappers(wrappers) + [normalise_actions], **env_kwargs)
  env.reset(seed=seed)
  return env
