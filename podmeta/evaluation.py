"""The evaluator: pulls the latest parameters and runs greedy episodes."""

import threading
import time
from typing import Any, Callable, List, Optional

from absl import logging
import jax
import numpy as np

from podmeta import core
from podmeta import networks as networks_lib
from podmeta.acting import initial_state
from podmeta.acting import make_policy


def run_episodes(env, network: networks_lib.Network, policy, params, key,
                 max_steps: int = 100_000,
                 stop: Optional[threading.Event] = None) -> List[float]:
  """Return of the first episode of every env in `env` (a vector env)."""
  n = env.num_envs
  obs, _ = env.reset()
  returns = np.zeros(n)
  finished = np.zeros(n, np.bool_)
  state = initial_state(network, n)
  is_first, done = np.ones(n, np.bool_), np.zeros(n, np.bool_)
  for _ in range(max_steps):
    action, _, state, key = policy(params, key, obs, is_first, state)
    obs, r, terminated, truncated, _ = env.step(np.asarray(action))
    # Next-step autoreset: an env whose last observation was final was reset.
    is_first, done = done, np.logical_or(terminated, truncated)
    returns += np.where(finished, 0.0, r)
    finished |= done
    if finished.all() or (stop is not None and stop.is_set()):
      break
  return returns.tolist()


class Evaluator(core.Worker):

  def __init__(self, env, network: networks_lib.Network, variable_source, key: jax.Array,
               every_seconds: float, logger=None,
               report: Optional[Callable[[int, float], Any]] = None,
               stop_event: Optional[threading.Event] = None):
    self._env = env
    self._network = network
    self._policy = make_policy(network, greedy=True)
    self._source = variable_source
    self._key = key
    self._every = every_seconds
    self._logger = logger
    self._report = report
    self._stop_event = stop_event

  def evaluate_once(self, stop: Optional[threading.Event] = None):
    version, params = self._source.get_variables()
    self._key, sub = jax.random.split(self._key)
    returns = run_episodes(self._env, self._network, self._policy, params, sub, stop=stop)
    return version, returns

  @core.names_failures("evaluator")
  def run(self) -> None:
    stop = core.resolve_stop_event(self._stop_event)
    try:
      self._evaluate_until(stop)
    finally:
      self._env.close()
      if self._logger is not None:
        self._logger.close()

  def _evaluate_until(self, stop: threading.Event) -> None:
    while not stop.is_set():
      start = time.monotonic()
      try:
        version, returns = self.evaluate_once(stop)
      except Exception as e:  # pylint: disable=broad-except
        if stop.is_set():
          break
        logging.warning("evaluation failed: %s", e)
        stop.wait(self._every)
        continue
      if stop.is_set():
        break
      mean = float(np.mean(returns))
      row = {"learner_steps": version, "eval_return": mean,
             "eval_return_std": float(np.std(returns)), "eval_episodes": len(returns)}
      if self._report is not None:
        try:
          # The learner answers with its env-step count, to plot against.
          row["eval_env_steps"] = self._report(version, mean)
        except Exception as e:  # pylint: disable=broad-except
          logging.warning("could not report evaluation: %s", e)
      if self._logger is not None:
        self._logger.write(row)
      stop.wait(max(0.0, self._every - (time.monotonic() - start)))
