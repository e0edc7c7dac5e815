"""Orbax checkpoints of the full learner state plus the run's counters.

Orbax writes each step to a temporary directory and renames it when complete,
so an interrupted save never replaces the last good checkpoint. Restoring is
validated against the structure the learner expects, which lets the
launcher's preflight refuse a bad checkpoint before any node starts.
"""

import asyncio
import json
import os
import sys
from typing import Any, Dict, Optional, Tuple

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp


_COUNTERS_FILE = "latest_counters.json"


class CheckpointError(ValueError):
  """A checkpoint that cannot be read or does not fit this run."""


class CheckpointMismatch(CheckpointError):
  """A readable checkpoint of another network or optimiser: a config mistake, not a fault."""


class _Unreadable(CheckpointError):
  """A checkpoint whose files are damaged (as opposed to one of another config)."""


class Checkpointer:

  def __init__(self, directory: str, max_to_keep: int = 3, read_only: bool = False):
    """`read_only`: for readers beside the run (the launcher's preflight, on a
    pod every host's; `evaluate`): the directory must exist, and an unreadable
    checkpoint is skipped but left where it is (the learner sets it aside)."""
    self._directory = os.path.abspath(directory)
    self._read_only = read_only
    # Only this process uses the manager, even on a pod (where process 0
    # alone writes): orbax would otherwise wait at barriers for the others.
    me = jax.process_index()
    if read_only and not os.path.isdir(self._directory):
      raise CheckpointError(f"no checkpoint directory {self._directory}")
    if not read_only:
      os.makedirs(self._directory, exist_ok=True)
    self._manager = ocp.CheckpointManager(
        self._directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=False, enable_async_checkpointing=False,
            multiprocessing_options=ocp.options.MultiprocessingOptions(
                primary_host=me, active_processes={me})),
        item_names=("state", "counters"))

  @property
  def directory(self) -> str:
    return self._directory

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, counters: Dict[str, Any]) -> str:
    """Saves host-array `state` and JSON-able `counters` under `step`.

    A step is written once (orbax keeps it immutable): saving it again,
    as the final save does when no learner step happened since the last one,
    only updates its counters (the actors kept counting env steps).
    """
    if self._read_only:
      raise CheckpointError(f"{self._directory} was opened read-only")
    if step not in self._manager.all_steps():
      self._manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(jax.tree.map(np.asarray, state)),
          counters=ocp.args.JsonSave(counters)), force=True)
      self._manager.wait_until_finished()
      logging.info("checkpoint saved: step %d in %s", step, self._directory)
    self._write_latest_counters(step, counters)
    return os.path.join(self._directory, str(step))

  def _write_latest_counters(self, step: int, counters: Dict[str, Any]) -> None:
    """The newest counters of `step`, beside orbax's, replaced atomically."""
    path = os.path.join(self._directory, _COUNTERS_FILE)
    with open(path + ".tmp", "w") as f:
      json.dump({"step": step, "counters": counters}, f)
    os.replace(path + ".tmp", path)

  def _latest_counters(self, step: int) -> Optional[Dict[str, Any]]:
    try:
      with open(os.path.join(self._directory, _COUNTERS_FILE)) as f:
        saved = json.load(f)
    except (OSError, ValueError):
      return None
    return dict(saved["counters"]) if saved.get("step") == step else None

  def restore_latest(self, template: Any) -> Optional[Tuple[Any, Dict[str, Any]]]:
    """(state, counters) of the newest readable checkpoint, or None if there is none.

    A newest checkpoint that cannot be read (truncated, corrupted, holding
    non-finite values) is moved aside to `corrupt-<step>` (read-only: left in
    place), never deleted, and the previous one is restored instead, with a
    warning naming both. One that does not match `template` (another network
    or optimiser) raises CheckpointMismatch naming it: that is a config mistake,
    not a fault.
    """
    skipped = []
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        state, counters = self._restore_step(step, template)
      except _Unreadable as e:
        logging.warning("%s; trying the previous checkpoint", e)
        skipped.append((step, str(e)))
        continue
      self._set_aside(skipped)
      if skipped:
        logging.warning("resumed from checkpoint step %d (newer unreadable: %s)", step,
                        ", ".join(str(s) for s, _ in skipped))
      return state, counters
    if skipped:
      raise CheckpointError(f"no readable checkpoint in {self._directory}: {skipped[0][1]}")
    return None

  def _restore_step(self, step: int, template: Any) -> Tuple[Any, Dict[str, Any]]:
    path = os.path.join(self._directory, str(step))
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype), template)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract),
          counters=ocp.args.JsonRestore()))
      state = jax.tree.map(np.asarray, restored["state"])
      counters = dict(restored["counters"])
    except Exception as e:  # pylint: disable=broad-except
      _quiet_stale_read_callbacks()
      msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      if "mismatch" in msg.lower() or "do not match" in msg.lower():
        raise CheckpointMismatch(
            f"checkpoint {path} does not match this config's network/optimizer "
            f"({msg[:200]})") from e
      raise _Unreadable(f"unreadable checkpoint {path}: {msg[:300]}") from e
    _check_matches(template, state, path)
    # Counters written after the step's checkpoint (by a later save of the
    # same step) are newer; those of another step are not this checkpoint's.
    return state, self._latest_counters(step) or counters

  def _set_aside(self, skipped) -> None:
    """Renames unreadable checkpoints so that saves of lower steps become the newest."""
    if not skipped or self._read_only:
      return
    for step, _ in skipped:
      src = os.path.join(self._directory, str(step))
      dst = os.path.join(self._directory, f"corrupt-{step}")
      if os.path.exists(src) and not os.path.exists(dst):
        os.rename(src, dst)
        logging.warning("moved unreadable checkpoint %s to %s", src, dst)
    self._manager.reload()

  def latest_counters(self) -> Tuple[Optional[int], Optional[Dict[str, Any]]]:
    """(step, counters) of the newest checkpoint without reading its state."""
    step = self.latest_step()
    if step is None:
      return None, None
    newer = self._latest_counters(step)
    if newer is not None:
      return step, newer
    restored = self._manager.restore(
        step, args=ocp.args.Composite(counters=ocp.args.JsonRestore()))
    return step, dict(restored["counters"])

  def close(self):
    self._manager.close()


def read_latest_counters(directory: str) -> Tuple[Optional[int], Optional[Dict[str, Any]]]:
  """(step, counters) of the newest checkpoint in `directory` without its state,
  or (None, None) if there is none or its counters cannot be read."""
  if not os.path.isdir(directory):
    return None, None
  checkpointer = Checkpointer(directory, read_only=True)
  try:
    return checkpointer.latest_counters()
  except Exception as e:  # pylint: disable=broad-except
    logging.warning("cannot read the counters of the newest checkpoint in %s: %s", directory, e)
    return None, None
  finally:
    checkpointer.close()


def _is_stale_loop_callback(exc_type, exc, tb) -> bool:
  if exc_type is not RuntimeError or str(exc) != "Event loop is closed":
    return False
  while tb is not None and tb.tb_next is not None:
    tb = tb.tb_next
  return tb is not None and tb.tb_frame.f_code.co_filename == asyncio.base_events.__file__


def _quiet_stale_read_callbacks() -> None:
  """Silences one known, harmless traceback after a failed restore.

  When one array read fails, orbax's `asyncio.run` cancels the others and
  closes its loop while tensorstore still has reads in flight; as each one
  finishes, tensorstore's C++ thread calls `loop.call_soon_threadsafe` on the
  closed loop and reports the RuntimeError as unraisable, which prints a stray
  "Traceback ... Event loop is closed" after our one-line error. Only that
  exception, raised inside asyncio's own code, is dropped; every other one
  reaches the previous hook.
  """
  previous = sys.unraisablehook
  if getattr(previous, "_podmeta_quiet", False):
    return

  def hook(unraisable):
    if not _is_stale_loop_callback(unraisable.exc_type, unraisable.exc_value,
                                   unraisable.exc_traceback):
      previous(unraisable)

  hook._podmeta_quiet = True  # pylint: disable=protected-access
  sys.unraisablehook = hook


def _check_matches(template, state, path):
  t_leaves, t_tree = jax.tree.flatten(template)
  s_leaves, s_tree = jax.tree.flatten(state)
  if t_tree != s_tree:
    raise CheckpointMismatch(f"checkpoint {path} does not match this config's network/optimizer")
  for t, s in zip(t_leaves, s_leaves):
    if np.shape(t) != np.shape(s):
      raise CheckpointMismatch(
          f"checkpoint {path} does not match this config's network "
          f"(array of shape {np.shape(s)}, expected {np.shape(t)})")
    if not np.all(np.isfinite(s)) and np.issubdtype(np.asarray(s).dtype, np.floating):
      raise _Unreadable(f"checkpoint {path} holds non-finite values")
