"""The actor: a vector env, a jitted policy, and an unroll writer.

The policy runs on the CPU, or on an accelerator device given to the actor
(`inference="accelerator"`: the actor is then a thread of the learner's
process, Podracer's Sebulba). Parameters are refreshed asynchronously: every
`variable_update_period` vector steps the actor asks the learner for new ones
and keeps acting with the old ones until the answer arrives.
"""

import threading
import time
from typing import Any, Callable, Optional, Sequence, Tuple

from absl import logging
import jax
import numpy as np

from podmeta import core
from podmeta import networks as networks_lib
from podmeta import types
from podmeta.types import Trajectory

_FIRST_FETCH_TIMEOUT_SECONDS = 300.0


def make_policy(network: networks_lib.Network, greedy: bool = False, on_cpu: bool = True):
  """jit(params, key, obs[E, ...], is_first[E], state[E, S]) -> (actions[E, ...],
  logits[E, P], next state, next key), on the CPU, or (`on_cpu=False`) on
  the device that holds the params and key.

  Samples from the network's action distribution, or takes its mode (`greedy`).
  `state` is the core state before this step (reset where is_first); a
  feed-forward network passes it through.

  The key is split inside the jitted function: a separate `jax.random.split`
  call costs more than the whole policy on CartPole-sized inputs.
  """

  def policy(params, key, obs, is_first, state):
    key, sub = jax.random.split(key)
    if network.state_size:
      logits, _, state = network.unroll(params, obs[:, None], is_first[:, None], state)
      logits = logits[:, 0]
    else:
      logits = network.policy(params, obs)
    dist = network.distribution
    action = dist.mode(logits) if greedy else dist.sample(sub, logits)
    return action.astype(dist.action_dtype), logits, state, key

  where = {"backend": "cpu"} if on_cpu else {}
  if network.state_size:
    return jax.jit(policy, **where)
  # A feed-forward network ignores is_first and the state: not passing them
  # saves two host-to-device copies per step (the actor's per-step cost is
  # mostly such fixed overheads).
  def policy_without_state(params, key, obs):
    return policy(params, key, obs, None, None)

  stateless = jax.jit(policy_without_state, **where)
  return lambda params, key, obs, is_first, state: stateless(params, key, obs)



def initial_state(network: networks_lib.Network, num_envs: int) -> np.ndarray:
  """The core state before any step: zeros, one ignored zero for a feed-forward network."""
  return np.zeros((num_envs, types.core_state_width(network.state_size)), np.float32)


def _cpu():
  """This process's CPU device (on a pod, global CPU device 0 belongs to host 0)."""
  return jax.local_devices(backend="cpu")[0]

class VariableClient:
  """Fetches (version, params) from a VariableSource without blocking the caller.

  `source` is either a local VariableSource or a courier client, whose
  `futures.get_variables_if_changed(version)` returns a concurrent future.
  A poll answered "unchanged" (None) keeps the params held.
  """

  def __init__(self, source, update_period: int, device=None):
    """The params are kept on `device` (default: this process's CPU)."""
    self._source = source
    self._period = update_period
    self._device = device or _cpu()
    self._calls = 0
    self._future = None
    self.version, self.params = None, None

  def wait_for_first(self, stop: Optional[threading.Event] = None) -> bool:
    """Fetches the first params; False if `stop` was set before they came.

    Called from the worker's `run`, not its constructor, so that a stop
    request (Ctrl-C, a failed learner) during start-up is seen.
    """
    # The learner may still be starting (its server comes up after its state
    # is built), and remote calls have a deadline: retry for a while.
    deadline = time.monotonic() + _FIRST_FETCH_TIMEOUT_SECONDS
    while self.params is None:
      if stop is not None and stop.is_set():
        return False
      try:
        version, params = self._source.get_variables()
      except Exception as e:  # pylint: disable=broad-except
        if time.monotonic() > deadline:
          raise RuntimeError(f"no parameters from the learner: {e}") from e
        if stop is not None:
          stop.wait(0.5)
        else:
          time.sleep(0.5)
        continue
      self.version, self.params = version, jax.device_put(params, self._device)
    return True

  def update(self) -> None:
    self._calls += 1
    if self._future is not None and self._future.done():
      try:
        self._take(self._future.result())
      except Exception as e:  # pylint: disable=broad-except
        logging.warning("parameter refresh failed: %s", e)
      self._future = None
    if self._future is None and self._calls % self._period == 0:
      futures = getattr(self._source, "futures", None)
      if futures is not None:
        self._future = futures.get_variables_if_changed(self.version)
      elif hasattr(self._source, "get_variables_if_changed"):
        self._take(self._source.get_variables_if_changed(self.version))
      else:  # a bare object with get_variables only
        self._take(self._source.get_variables())

  def _take(self, latest: Optional[Tuple[int, Any]]) -> None:
    if latest is not None and latest[0] != self.version:
      self.version, self.params = latest[0], jax.device_put(latest[1], self._device)


class EpisodeTracker:
  """Returns and lengths of the episodes a vector env finishes."""

  def __init__(self, num_envs: int):
    self._ret = np.zeros(num_envs, np.float64)
    self._len = np.zeros(num_envs, np.int64)

  def step(self, reward, terminated, truncated, was_reset):
    """Call after env.step; `was_reset` marks envs whose step was a reset."""
    live = ~was_reset
    self._ret += np.where(live, reward, 0.0)
    self._len += live
    done = np.logical_or(terminated, truncated)
    if not done.any():  # most steps: skip the indexing
      return [], []
    finished = (self._ret[done].tolist(), self._len[done].tolist())
    self._ret[done] = 0.0
    self._len[done] = 0
    return finished


def _no_stats() -> dict:
  return {"env_steps": 0, "returns": [], "lengths": [], "env_errors": 0}


class _VersionColumn:
  """The policy_version field of a step: one array per version, not one per step."""

  def __init__(self, num_envs: int):
    self._n, self._version, self._column = num_envs, None, None

  def get(self, version: int) -> np.ndarray:
    if version != self._version:
      self._version, self._column = version, np.full(self._n, version, np.int32)
    return self._column


class EnvErrorCounter:
  """Counts an environment's exceptions; too many in a row is fatal."""

  def __init__(self, max_consecutive: int):
    self._max = max_consecutive
    self.total = 0
    self._in_a_row = 0

  def failed(self, error: Exception) -> None:
    self.total += 1
    self._in_a_row += 1
    if self._in_a_row >= self._max:
      raise RuntimeError(f"the environment failed {self._in_a_row} times in a row "
                         f"(max_consecutive_env_errors={self._max}); the last: "
                         f"{type(error).__name__}: {error}") from error
    logging.warning("environment step failed (%d in a row, %d in all); resetting it: %s: %s",
                    self._in_a_row, self.total, type(error).__name__, error)

  def succeeded(self) -> None:
    self._in_a_row = 0


class Actor(core.Worker):
  """Steps a vector env with the latest policy and writes unrolls to replay
  (`writer`: a podmeta.replay.UnrollWriter; not imported here, so that the
  evaluator, which shares the policy code, need not import Reverb)."""

  def __init__(self, env, network: networks_lib.Network, variable_source, writer,
               key: jax.Array, variable_update_period: int,
               report: Optional[Callable[..., Any]] = None, logger=None,
               report_every_seconds: float = 0.5,
               stop_event: Optional[threading.Event] = None,
               max_consecutive_env_errors: int = 10, device=None):
    """An exception from `env.step` resets the env and is counted
    (`env_errors`); `max_consecutive_env_errors` of them in a row end the
    actor with the last one. The policy runs on `device` (default: the CPU)."""
    self._env = env
    self._network = network
    self._policy = make_policy(network, on_cpu=device is None)
    self._variables = VariableClient(variable_source, variable_update_period, device)
    self._writer = writer
    self._key = jax.device_put(key, device or _cpu())
    self._report = report
    self._logger = logger
    self._report_every = report_every_seconds
    self._stop_event = stop_event
    self._num_envs = env.num_envs
    self._episodes = EpisodeTracker(self._num_envs)
    self._env_errors = EnvErrorCounter(max_consecutive_env_errors)

  @core.names_failures("actor")
  def run(self, max_steps: Optional[int] = None,
          stop_event: Optional[threading.Event] = None) -> int:
    """Acts until stopped (or for `max_steps` vector steps). Returns env steps taken."""
    stop = core.resolve_stop_event(stop_event or self._stop_event)
    n = self._num_envs
    obs, _ = self._env.reset()
    reward = np.zeros(n, np.float32)
    discount = np.ones(n, np.float32)
    is_first = np.ones(n, np.bool_)
    done = np.zeros(n, np.bool_)  # whether obs is the last one of its episode
    state = initial_state(self._network, n)
    env_steps = 0
    unreported = _no_stats()
    last_report = t0 = time.monotonic()
    steps_at_last_report = 0
    vector_steps = 0
    versions = _VersionColumn(n)
    try:
      if not self._variables.wait_for_first(stop):
        return 0
      while not stop.is_set() and (max_steps is None or vector_steps < max_steps):
        self._variables.update()
        action, logits, next_state, self._key = self._policy(
            self._variables.params, self._key, obs, is_first, state)
        action = np.asarray(action)
        step = Trajectory(
            observation=obs, action=action, reward=reward, discount=discount,
            is_first=is_first, behaviour_logits=np.asarray(logits),
            policy_version=versions.get(self._variables.version), core_state=state)
        if self._network.state_size:  # a feed-forward network's is a constant zero
          state = np.asarray(next_state)
        if self._writer.append(step):
          # The unroll just queued stays in flight while the next one is
          # acted; the one before must have reached the table (back-pressure).
          self._flush_until_written(stop, in_flight=self._writer.items_per_unroll)
        try:
          obs, r, terminated, truncated, _ = self._env.step(action)
        except Exception as e:  # pylint: disable=broad-except
          # The unroll goes on from fresh episodes, as after a truncation:
          # the last observation written is bootstrapped, its action unused.
          self._env_errors.failed(e)
          unreported["env_errors"] += 1
          obs, _ = self._env.reset()
          self._episodes = EpisodeTracker(n)
          reward, discount = np.zeros(n, np.float32), np.ones(n, np.float32)
          is_first, done = np.ones(n, np.bool_), np.zeros(n, np.bool_)
          state = initial_state(self._network, n)
          continue
        self._env_errors.succeeded()
        # Next-step autoreset: an env whose episode ended on the previous step
        # was reset by this one (its action ignored, reward 0).
        returns, lengths = self._episodes.step(r, terminated, truncated, was_reset=done)
        reward = r.astype(np.float32)
        discount = 1.0 - terminated.astype(np.float32)
        is_first = done
        done = np.logical_or(terminated, truncated)
        vector_steps += 1
        env_steps += n
        unreported["env_steps"] += n
        unreported["returns"] += returns
        unreported["lengths"] += lengths
        now = time.monotonic()
        if now - last_report >= self._report_every:
          self._publish(unreported, env_steps, (env_steps - steps_at_last_report) / (now - last_report))
          unreported = _no_stats()
          last_report, steps_at_last_report = now, env_steps
      if not stop.is_set():  # a run that ended by max_steps delivers its last unroll
        self._flush_until_written(stop)
    finally:
      if (unreported["env_steps"] or unreported["env_errors"]) and not stop.is_set():
        self._publish(unreported, env_steps, env_steps / max(time.monotonic() - t0, 1e-9))
      # A run is one-shot. As threads of the learner's process (accelerator
      # inference, actor groups) nothing else would close these.
      self._writer.close()
      self._env.close()
      if self._logger is not None:
        self._logger.close()
    return env_steps

  def _flush_until_written(self, stop: threading.Event, in_flight: int = 0) -> None:
    # A full queue blocks the flush (back-pressure from the learner); wake up
    # regularly so a stop request is seen.
    import reverb  # pylint: disable=g-import-not-at-top
    while not stop.is_set():
      try:
        self._writer.flush(timeout_ms=500, in_flight=in_flight)
        return
      except reverb.errors.DeadlineExceededError:
        continue

  def _publish(self, stats, total_steps: int, steps_per_second: float) -> None:
    if self._logger is not None:
      row = {"actor_env_steps": total_steps, "env_steps_per_second": steps_per_second,
             "policy_version": self._variables.version, "env_errors": self._env_errors.total}
      if stats["returns"]:
        row["episode_return"] = float(np.mean(stats["returns"]))
        row["episode_length"] = float(np.mean(stats["lengths"]))
      self._logger.write(row)
    if self._report is not None:
      try:
        self._report(stats["env_steps"], stats["returns"], stats["lengths"], stats["env_errors"])
      except Exception as e:  # pylint: disable=broad-except
        logging.warning("could not report actor stats: %s", e)


class ActorThreads:
  """Actors running on threads of this process until `stop` or a failure."""

  def __init__(self, actors: Sequence[Actor]):
    self._actors = list(actors)
    self._threads = []
    self._errors = []
    self._stop = None

  def start(self, stop: threading.Event) -> None:
    self._stop = stop

    def run_one(actor):
      try:
        actor.run(stop_event=stop)
      except BaseException as e:  # pylint: disable=broad-except
        self._errors.append(e)
        logging.exception("actor thread failed")

    self._threads = [threading.Thread(target=run_one, args=(a,), name=f"actor-{i}", daemon=True)
                     for i, a in enumerate(self._actors)]
    for t in self._threads:
      t.start()

  @property
  def running(self) -> bool:
    return any(t.is_alive() for t in self._threads)

  def raise_failure(self) -> None:
    """Re-raises the first actor's exception, if one has failed."""
    if self._errors:
      raise self._errors[0]

  def stop(self, timeout_s: float = 30.0) -> None:
    if self._stop is not None:
      self._stop.set()
    deadline = time.monotonic() + timeout_s
    for t in self._threads:
      t.join(timeout=max(0.0, deadline - time.monotonic()))


class ActorGroup(core.Worker):
  """Several actors in one process, each on its own thread.

  A large actor count then does not mean as many Python interpreters (each
  holding its own JAX runtime and imports). The threads share one GIL, but an
  actor spends much of its time outside it (XLA's policy call, Reverb writes,
  waiting for the queue), so a few per process still add throughput.
  """

  def __init__(self, actors: Sequence[Actor]):
    self._threads = ActorThreads(actors)

  @core.names_failures("actor")
  def run(self) -> None:
    # Launchpad's stop event is only found from the node's own thread.
    self._threads.start(core.resolve_stop_event(None))
    # A failed actor fails the node at once (as a lone actor would), rather
    # than after its siblings stop.
    while self._threads.running:
      self._threads.raise_failure()
      time.sleep(0.5)
    self._threads.raise_failure()
