"""The learner node: trains, serves parameters, keeps the run's counters and ends the run.

Besides stepping the `Learner`, this node is the run's single point of truth:
actors report their env steps and finished episodes to it, the evaluator its
returns; it checks the budgets, writes checkpoints, metrics and
`summary.json`, and asks the program to stop when a budget is reached.
"""

import collections
import dataclasses
import hashlib
import json
import os
import sys
import threading
import time
from typing import Callable, List, Optional

from absl import logging
import jax
import numpy as np

from podmeta import core
from podmeta import plotting
from podmeta.checkpointing import Checkpointer
from podmeta.learning import Learner

_SHUTDOWN_GRACE_SECONDS = 1.0
_FIRST_EVAL_WAIT_SECONDS = 60.0
# A crash in the first interval would otherwise lose every step taken so far.
_FIRST_CHECKPOINT_SECONDS = 10.0

PROGRESS_KEYS = ["progress", "eta_seconds", "env_steps", "env_steps_per_second", "learner_steps", "episode_return_mean",
                 "eval_return", "policy_lag", "loss", "meta_loss", "meta/"]


@dataclasses.dataclass(frozen=True)
class Budget:
  max_env_steps: int = 0
  max_learner_steps: int = 0
  max_seconds: float = 0.0

  def reached(self, env_steps: int, learner_steps: int, seconds: float) -> Optional[str]:
    if self.max_env_steps and env_steps >= self.max_env_steps:
      return "max_env_steps"
    if self.max_learner_steps and learner_steps >= self.max_learner_steps:
      return "max_learner_steps"
    if self.max_seconds and seconds >= self.max_seconds:
      return "max_seconds"
    return None


class Progress:
  """How far the run is towards its budget, and when it will get there.

  The fraction is that of the budget nearest to its limit (env steps, learner
  steps or seconds, all counted over the whole run, resumes included); the ETA
  extrapolates its rate since this launch (a resumed run starts part of the
  way, `seconds_before` into its time).
  """

  def __init__(self, budget: Budget, env_steps: int, learner_steps: int, now: float,
               seconds_before: float = 0.0):
    self._budget = budget
    self._start = now
    self._before = seconds_before
    self._first = self.fraction(env_steps, learner_steps, seconds_before)

  def fraction(self, env_steps: int, learner_steps: int, seconds: float) -> float:
    b, parts = self._budget, []
    if b.max_env_steps:
      parts.append(env_steps / b.max_env_steps)
    if b.max_learner_steps:
      parts.append(learner_steps / b.max_learner_steps)
    if b.max_seconds:
      parts.append(seconds / b.max_seconds)
    return min(1.0, max(parts)) if parts else 0.0

  def fields(self, env_steps: int, learner_steps: int, now: float) -> dict:
    """{"progress": fraction, "eta_seconds": seconds left (absent until it moves)}."""
    elapsed = now - self._start
    done = self.fraction(env_steps, learner_steps, self._before + elapsed)
    row = {"progress": done}
    if done > self._first and elapsed > 0:
      row["eta_seconds"] = elapsed * (1.0 - done) / (done - self._first)
    return row


def _run_each(steps) -> Optional[Exception]:
  """Runs every (description, function) step; logs and returns the first failure."""
  first = None
  for description, function in steps:
    if function is None:
      continue
    try:
      function()
    except Exception as e:  # pylint: disable=broad-except
      logging.exception("learner shutdown: could not %s", description)
      first = first or e
  return first


class RunCounters(core.Saveable):
  """What the actors and the evaluator report, kept across a resume.

  Thread-safe: reports arrive on the learner's server threads while its loop
  reads them.
  """

  def __init__(self, recent_episodes: int = 100):
    self._lock = threading.Lock()
    self._env_steps = 0
    self._episodes = 0
    self._env_errors = 0  # environment exceptions the actors recovered from
    self._recent_returns = collections.deque(maxlen=recent_episodes)
    self._eval_return = float("nan")
    self._eval_learner_steps = None  # the parameters' version it evaluated

  def add_actor_report(self, env_steps: int, returns: List[float], env_errors: int) -> None:
    with self._lock:
      self._env_steps += int(env_steps)
      self._env_errors += int(env_errors)
      self._episodes += len(returns)
      self._recent_returns.extend(float(r) for r in returns)

  def set_eval_return(self, mean_return: float, learner_steps: Optional[int] = None) -> int:
    """Records an evaluation (of the parameters after `learner_steps`); returns
    the env steps it is plotted against."""
    with self._lock:
      self._eval_return = float(mean_return)
      self._eval_learner_steps = None if learner_steps is None else int(learner_steps)
      return self._env_steps

  @property
  def env_steps(self) -> int:
    return self._env_steps

  @property
  def has_eval(self) -> bool:
    return not np.isnan(self._eval_return)

  def save(self) -> dict:
    """JSON-able: checkpointed beside the learner state."""
    with self._lock:
      return {"env_steps": self._env_steps, "episodes": self._episodes,
              "env_errors": self._env_errors, "recent_returns": list(self._recent_returns),
              "eval_return": None if np.isnan(self._eval_return) else self._eval_return,
              "eval_learner_steps": self._eval_learner_steps}

  def restore(self, state: dict) -> None:
    with self._lock:
      self._env_steps = int(state.get("env_steps", 0))
      self._episodes = int(state.get("episodes", 0))
      self._env_errors = int(state.get("env_errors", 0))
      self._recent_returns.clear()
      self._recent_returns.extend(state.get("recent_returns", []))
      if state.get("eval_return") is not None:
        self._eval_return = float(state["eval_return"])
        self._eval_learner_steps = state.get("eval_learner_steps")

  def log_fields(self) -> dict:
    """The counters as fields of a metrics row (the recent returns as their mean)."""
    with self._lock:
      row = {"env_steps": self._env_steps, "episodes": self._episodes,
             "env_errors": self._env_errors}
      if self._recent_returns:
        row["episode_return_mean"] = float(np.mean(self._recent_returns))
      if not np.isnan(self._eval_return):
        row["eval_return"] = self._eval_return
    return row


class MetricsWindow:
  """The learner's metrics between two log rows.

  Step metrics stay on device until a batch of them is fetched in one
  transfer (no host sync per step), and are logged as means over the window,
  with the window's throughputs and policy lags.
  """

  # Steps' metrics fetched together. A jnp.add per metric and step instead
  # took a fifth of the learner process's core (CartPole, ~80 updates/s).
  FETCH_EVERY = 64

  def __init__(self, now: float, learner_steps: int, env_steps: int):
    self._open(now, learner_steps, env_steps)

  def _open(self, now: float, learner_steps: int, env_steps: int) -> None:
    self._pending, self._sums, self._steps, self._lags = [], {}, 0, []
    self._start, self._learner_steps, self._env_steps = now, learner_steps, env_steps

  def add(self, step_metrics, lag: int) -> None:
    self._pending.append(step_metrics)
    self._steps += 1
    self._lags.append(lag)
    if len(self._pending) > self.FETCH_EVERY:
      # All but the newest, whose update may still be running: no wait for it.
      self._fetch(self._pending[:-1])
      self._pending = self._pending[-1:]

  def _fetch(self, metrics_list) -> None:
    for metrics in jax.device_get(metrics_list):
      for k, v in metrics.items():  # [num_devices] copies of a pmean-ed value
        self._sums[k] = self._sums.get(k, 0.0) + float(np.asarray(v)[0])

  @property
  def empty(self) -> bool:
    return not self._steps

  def due(self, now: float, every_seconds: float) -> bool:
    return now - self._start >= every_seconds

  def close(self, now: float, learner_steps: int, env_steps: int,
            env_steps_per_batch: int) -> dict:
    """The window's row; a new window starts at `now`."""
    seconds = max(now - self._start, 1e-9)
    learned = learner_steps - self._learner_steps
    row = {"env_steps_per_second": (env_steps - self._env_steps) / seconds,
           "learner_steps_per_second": learned / seconds,
           "consumed_env_steps_per_second": learned * env_steps_per_batch / seconds}
    if self._lags:
      row["policy_lag"] = float(np.mean(self._lags))
      row["policy_lag_max"] = float(np.max(self._lags))
    self._fetch(self._pending)
    if self._steps:
      row.update({k: v / self._steps for k, v in self._sums.items()})
    self._open(now, learner_steps, env_steps)
    return row


class CheckpointSchedule:
  """A first checkpoint early (a crash in the first interval would lose every
  step so far), then one every `every_seconds`."""

  def __init__(self, now: float, every_seconds: float,
               first_seconds: float = _FIRST_CHECKPOINT_SECONDS):
    self._every = every_seconds
    self._next = now + min(first_seconds, every_seconds)

  def due(self, now: float) -> bool:
    if now < self._next:
      return False
    self._next = now + self._every
    return True


class LearnerNode(core.Worker, core.VariableSource):

  def __init__(self, learner: Learner, make_prefetcher: Callable, checkpointer: Checkpointer,
               run_dir: str, budget: Budget, env_steps_per_batch: int, logger=None,
               log_every_seconds: float = 5.0, checkpoint_every_seconds: float = 60.0,
               stop_program: Optional[Callable[[], None]] = None,
               replay_stats: Optional[Callable[[], dict]] = None,
               expect_eval: bool = False,
               stop_event: Optional[threading.Event] = None,
               host_sync: Optional[Callable] = None,
               pod_watchdog=None):
    """`checkpointer` is None on the hosts of a pod other than process 0;
    `host_sync` (a podmeta.pod.HostSync) and `pod_watchdog` (a
    podmeta.pod.PodWatchdog) are given on every host of a pod."""
    self._learner = learner
    self._make_prefetcher = make_prefetcher
    self._checkpointer = checkpointer
    self._run_dir = run_dir
    self._budget = budget
    self._env_steps_per_batch = env_steps_per_batch
    self._logger = logger
    self._log_every = log_every_seconds
    self._checkpoint_every = checkpoint_every_seconds
    self._stop_program = stop_program
    self._replay_stats = replay_stats
    self._expect_eval = expect_eval
    self._last_replay_info = {}
    self._last_hyperparameters = {}  # meta-learned values at the last log
    self._stop_event = stop_event
    self._host_sync = host_sync
    self._pod_watchdog = pod_watchdog
    self._run = RunCounters()
    self._wall_seconds_before = 0.0  # of the runs this one resumes
    self._start = time.monotonic()
    self._restore()
    # Env steps of every host of a pod (from the last HostSync), else this host's.
    self._pod_env_steps = self._run.env_steps
    if host_sync is not None:
      # Only process 0 restored a checkpoint (with the pod's total env steps;
      # the other hosts count theirs from 0): every host takes its state and
      # that total, so all of them report the same resume point.
      self._learner.sync_from_first_device()
      self._pod_env_steps = host_sync(False, True, self._run.env_steps)[2]
    self._env_steps_at_start = self._pod_env_steps
    self._learner_steps_at_start = self._learner.step_count
    self._startup = core.StartupClock()
    self._startup.mark("learner_built")
    self._actor_threads = None

  def attach_actors(self, actor_threads) -> None:
    """Actors that run in this process (a podmeta.acting.ActorThreads; inference
    on an accelerator): they start with the learner's loop and stop with it,
    and one that fails fails the learner."""
    self._actor_threads = actor_threads

  # -- courier API ----------------------------------------------------------

  def get_variables(self):
    return self._learner.get_variables()

  def get_variables_if_changed(self, version: int):
    return self._learner.get_variables_if_changed(version)

  def report_actor(self, env_steps: int, returns: List[float], lengths: List[int],
                   env_errors: int = 0) -> None:
    del lengths
    self._run.add_actor_report(env_steps, returns, env_errors)

  def report_eval(self, version: int, mean_return: float) -> int:
    return self._run.set_eval_return(mean_return, version)

  # -- main loop ------------------------------------------------------------

  @core.names_failures("learner")
  def run(self) -> None:
    stop = core.resolve_stop_event(self._stop_event)
    start = self._start = time.monotonic()
    self._progress = Progress(self._budget, self._total_env_steps(), self._learner.step_count,
                              start, seconds_before=self._wall_seconds_before)
    prefetcher = self._make_prefetcher()
    window = MetricsWindow(start, self._learner.step_count, self._run.env_steps)
    checkpoints = CheckpointSchedule(start, self._checkpoint_every)
    exit_reason, item = None, None
    if self._pod_watchdog is not None:
      self._pod_watchdog.start(self._pod_host_lost)
    if self._actor_threads is not None:
      self._actor_threads.start(threading.Event())
    try:
      while True:
        if self._actor_threads is not None:
          self._actor_threads.raise_failure()
        # On a pod every host takes the same decisions at the same iteration
        # (see podmeta.pod): a host that stepped alone would wait forever in
        # the update's collectives.
        # max_seconds, like the step budgets, counts the whole run, resumes included.
        exit_reason = "stopped" if stop.is_set() else self._budget.reached(
            self._total_env_steps(), self._learner.step_count,
            self._wall_seconds_before + time.monotonic() - start)
        if item is None and exit_reason is None:
          item = prefetcher.get(timeout=0.25)
        ready = item is not None
        if self._host_sync is not None:
          any_stop, ready, self._pod_env_steps = self._host_sync(
              exit_reason is not None, ready, self._run.env_steps)
          if any_stop and exit_reason is None:
            exit_reason = "stopped_by_another_host"
        if exit_reason:
          break
        if ready:
          self._startup.mark("first_batch")
          (batch, version), item = item, None
          lag = self._learner.step_count - version
          metrics = self._learner.step(batch)
          window.add(metrics, lag)
          if "first_learner_step" not in self._startup.marks:
            jax.block_until_ready(metrics)  # once: the first update, compilation included
            self._startup.mark("first_learner_step")
        now = time.monotonic()
        if window.due(now, self._log_every):
          self._log(window)
        if checkpoints.due(now):
          self._save(now - start)
      if exit_reason != "stopped":
        self._wait_for_first_eval(stop)
    finally:
      if self._pod_watchdog is not None:
        if sys.exc_info()[0] is not None:
          # A collective that failed (gloo: "connection reset by peer") most
          # likely lost a host: let the watchdog say which, and end the run.
          self._pod_watchdog.await_verdict()
        self._pod_watchdog.stop()
      wall = time.monotonic() - start
      last_row = None if window.empty else (lambda: self._log(window))
      # Each step runs even if one before it fails, and a failure here never
      # hides the exception that ended the loop (that one propagates).
      # One snapshot for both: actors keep reporting env steps while the
      # checkpoint is written, and summary.json must say what a resume gets.
      final = self._counters(wall)
      cleanup_error = _run_each([
          ("stop the actors", self._actor_threads.stop if self._actor_threads else None),
          ("close the replay reader", prefetcher.close),
          ("log the last metrics", last_row),
          ("write the final checkpoint", lambda: self._save(wall, final)),
          ("write summary.json", lambda: self._write_summary(exit_reason or "error", wall,
                                                             counters=final)),
          ("close the logger", self._logger.close if self._logger is not None else None),
      ])
      try:
        plotting.plot_run(self._run_dir)
      except Exception as e:  # pylint: disable=broad-except
        logging.warning("could not plot the learning curve: %s", e)
      logging.info("learner finished (%s) after %.1fs: %s", exit_reason, wall, self._run_dir)
    if cleanup_error is not None:
      raise cleanup_error
    if exit_reason != "stopped" and self._stop_program is not None:
      self._stop_program()
      # Keep serving until the stop request has reached every node, so that
      # calls already in flight from actors and the evaluator complete
      # instead of waiting on a server that is gone.
      stop.wait(timeout=10.0)
      time.sleep(_SHUTDOWN_GRACE_SECONDS)

  def _pod_host_lost(self, process_id: int, why: str) -> None:
    """Called by the pod watchdog's thread while this host's learner may be
    blocked in a collective that will never complete: record the verdict and
    end this host's whole program now. The newest periodic checkpoint is
    what a resume continues from."""
    message = f"pod process {process_id} lost ({why})"
    logging.error("%s; stopping this host", message)
    wall = time.monotonic() - self._start
    final = self._counters(wall)

    summarise = lambda: self._write_summary("pod_host_lost", wall, with_digest=False,
                                            counters=final, error=message,
                                            lost_process=process_id)
    # First what needs no device: the state may sit on a device stuck in
    # the collective.
    _run_each([("write summary.json", summarise)])

    def save_and_summarise():
      # The state is the last completed step's: a failed or blocked
      # collective never replaced it.
      self._save(wall, final)
      summarise()  # now naming the final checkpoint

    # Bounded, as this host must end either way (an interrupted save leaves
    # only orbax's temporary directory, never a newest checkpoint).
    writer = threading.Thread(target=save_and_summarise, daemon=True)
    writer.start()
    writer.join(timeout=15.0)
    # This process ends here, so the launcher cannot print its error line.
    sys.stderr.write(f"podmeta: error: {message}\n")
    sys.stderr.flush()
    logging.flush()
    os._exit(1)  # pylint: disable=protected-access

  # -- helpers --------------------------------------------------------------

  def _wait_for_first_eval(self, stop: threading.Event) -> None:
    """A short run can reach its budget before the evaluator's first report
    (in local_mp its process is still importing); wait for one, bounded, so
    summary.json always has an evaluation of the trained policy."""
    deadline = time.monotonic() + _FIRST_EVAL_WAIT_SECONDS
    while (self._expect_eval and not self._run.has_eval and not stop.is_set()
           and time.monotonic() < deadline):
      time.sleep(0.1)

  def _total_env_steps(self) -> int:
    return self._pod_env_steps if self._host_sync is not None else self._run.env_steps

  def _counters(self, wall_seconds: float) -> dict:
    # On a pod, process 0 checkpoints the pod's total; resumed, it counts on
    # from there and the other hosts from 0, so the sum stays the total.
    # num_processes: the pod's size, which sizes the meta ring (its batch is
    # the pod's), so that `evaluate` can rebuild the checkpoint's structure.
    return {**self._run.save(), "env_steps": self._total_env_steps(),
            "learner_steps": self._learner.step_count,
            "wall_seconds_total": self._wall_seconds_before + wall_seconds,
            "num_processes": (self._host_sync.num_processes if self._host_sync is not None
                              else 1)}

  def _save(self, wall_seconds: float, counters: Optional[dict] = None) -> None:
    if self._checkpointer is None:
      return
    self._checkpointer.save(self._learner.step_count, self._learner.save(),
                            counters or self._counters(wall_seconds))

  def _restore(self) -> None:
    if self._checkpointer is None:
      return
    restored = self._checkpointer.restore_latest(self._learner.template)
    if restored is None:
      return
    state, counters = restored
    self._learner.restore(state)
    self._run.restore(counters)
    self._wall_seconds_before = float(counters.get("wall_seconds_total", 0.0))
    logging.info("resumed from checkpoint: learner step %d, env step %d",
                 self._learner.step_count, self._run.env_steps)

  def _log(self, window: MetricsWindow) -> None:
    """Closes the window into a metrics row: counters, throughputs, means, replay."""
    now = time.monotonic()
    row = self._run.log_fields()
    row.update(learner_steps=self._learner.step_count, wall_seconds=now - self._start)
    since_launch = self._startup.since_launch()
    if since_launch is not None:  # what a user waited for this row, start-up included
      row["seconds_since_launch"] = since_launch
    row.update(window.close(now, self._learner.step_count, row["env_steps"],
                            self._env_steps_per_batch))
    row.update(self._progress.fields(self._total_env_steps(), self._learner.step_count, now))
    hyperparameters = {k[len("meta/"):]: v for k, v in row.items() if k.startswith("meta/")}
    self._last_hyperparameters = hyperparameters or self._last_hyperparameters
    if self._logger is None:
      return
    row.update(self._replay_info())
    self._logger.write(row)

  def _replay_info(self) -> dict:
    """The replay table's counts; the last ones read if the server has gone."""
    if self._replay_stats is None:
      return {}
    try:
      self._last_replay_info = self._replay_stats()
    except Exception as e:  # pylint: disable=broad-except
      logging.info("replay stats unavailable (%s); using the last ones", str(e).splitlines()[0])
    return self._last_replay_info

  def _params_digest(self) -> str:
    """A digest of the parameters: equal on every host of a pod."""
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(self._learner.get_variables()[1]):
      h.update(np.ascontiguousarray(leaf).tobytes())
    return h.hexdigest()

  def _write_summary(self, exit_reason: str, wall: float, with_digest: bool = True,
                     counters: Optional[dict] = None, **extra) -> None:
    c = counters or self._counters(wall)
    steps = c["env_steps"] - self._env_steps_at_start
    summary = {
        "env_steps": c["env_steps"],
        "learner_steps": c["learner_steps"],
        "episodes": c["episodes"],
        "env_errors": c["env_errors"],
        "episode_return_mean": float(np.mean(c["recent_returns"])) if c["recent_returns"] else None,
        "eval_return_mean": c["eval_return"],
        # The evaluation may be of older parameters than the final ones: it
        # runs every eval_every_seconds.
        "eval_learner_steps": c["eval_learner_steps"],
        "wall_seconds": wall,
        "wall_seconds_total": c["wall_seconds_total"],
        "env_steps_per_second": steps / wall if wall > 0 else 0.0,
        "exit_reason": exit_reason,
        # Seconds from the launcher's process start: this node built (imports,
        # state, restore), its first batch from replay, its first update done
        # (compilation included).
        "startup_seconds": self._startup.marks or None,
        "meta_learned_hyperparameters": self._last_hyperparameters or None,
        "resumed_from_env_steps": self._env_steps_at_start,
        "resumed_from_learner_steps": self._learner_steps_at_start,
        **self._replay_info(),
        "checkpoint_dir": self._checkpointer.directory if self._checkpointer else None,
        "latest_checkpoint_step": self._checkpointer.latest_step() if self._checkpointer
                                  else None,
        "params_sha256": self._params_digest() if with_digest else None,
        **extra,
    }
    if self._host_sync is not None:
      summary["pod"] = {"process_id": self._host_sync.process_id,
                        "num_processes": self._host_sync.num_processes,
                        "env_steps": self._pod_env_steps}
    path = os.path.join(self._run_dir, "summary.json")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
      json.dump(summary, f, indent=2)
    os.replace(tmp, path)
