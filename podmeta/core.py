"""Small interfaces between podmeta's roles, so the transport stays swappable.

Launchpad and Reverb wire the roles together in `podmeta.builder`; nothing
below depends on either.
"""

import abc
import functools
import os
import threading
import time
from typing import Any, Callable, Optional, Tuple


class VariableSource(abc.ABC):
  """Something that serves the latest policy parameters."""

  @abc.abstractmethod
  def get_variables(self) -> Tuple[int, Any]:
    """Returns (version, params) with params as host (numpy) arrays (or, from
    a source in the caller's own process, as device arrays).

    The version is the learner step that produced the parameters; actors tag
    their data with it so the learner can measure policy lag.
    """

  def get_variables_if_changed(self, version: int) -> Optional[Tuple[int, Any]]:
    """get_variables(), or None if the source's version is still `version`.

    Actors poll every few steps, far more often than the learner steps: an
    unchanged answer then costs no copy and, through courier, no transfer.
    """
    latest = self.get_variables()
    return None if latest[0] == version else latest


class Worker(abc.ABC):
  """A node's main loop."""

  @abc.abstractmethod
  def run(self) -> None:
    """Runs until the program is asked to stop (or a budget ends it)."""


class Saveable(abc.ABC):
  """State that can be checkpointed and restored."""

  @abc.abstractmethod
  def save(self) -> Any:
    """Returns the state as a pytree of host arrays."""

  @abc.abstractmethod
  def restore(self, state: Any) -> None:
    """Restores from what `save` returned."""


def launchpad_stop_event() -> threading.Event:
  """The running Launchpad program's stop event, or a private never-set one.

  Outside a Launchpad node (unit tests, benchmarks) there is no worker
  manager; callers then pass their own event or run for a bounded count.
  """
  try:
    import launchpad as lp
    return lp.stop_event()
  except RuntimeError:
    return threading.Event()


def resolve_stop_event(stop_event: Optional[threading.Event]) -> threading.Event:
  return stop_event if stop_event is not None else launchpad_stop_event()


def names_failures(role: str) -> Callable:
  """Decorates a Worker's `run`: an exception leaving it carries the node's
  role as `podmeta_node`, so the launcher's one error line can name the node
  (in local_mt every node is a thread of the launcher's own process)."""

  def decorate(run):
    @functools.wraps(run)
    def wrapped(*args, **kwargs):
      try:
        return run(*args, **kwargs)
      except Exception as e:
        if not hasattr(e, "podmeta_node"):
          e.podmeta_node = role
        raise
    return wrapped

  return decorate



# The launcher's process start (unix seconds), exported by launch/ to every
# node process, so that start-up is measured from what a user waits through.
LAUNCH_TIME_ENV = "PODMETA_LAUNCH_UNIX_TIME"


class StartupClock:
  """Seconds from the launcher's process start to a node's first milestones.

  `mark(name)` keeps the first time it is called for a name. Without a
  launch time (a node built outside launch/, as in most tests) nothing is
  recorded.
  """

  def __init__(self, launch_time: Optional[float] = None):
    if launch_time is None and os.environ.get(LAUNCH_TIME_ENV):
      launch_time = float(os.environ[LAUNCH_TIME_ENV])
    self._launch_time = launch_time
    self.marks = {}

  def since_launch(self) -> Optional[float]:
    """Seconds since the launcher's process started, None without a launch time."""
    return None if self._launch_time is None else round(time.time() - self._launch_time, 3)

  def mark(self, name: str) -> None:
    if self._launch_time is not None and name not in self.marks:
      self.marks[name] = self.since_launch()
