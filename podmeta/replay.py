"""Reverb tables, the unroll writer and the batch iterator.

The schema (`Trajectory`, `trajectory_spec`) lives in `podmeta.types` and is
used by both the writer (actors) and the reader (learner). An unroll is T+1 steps of one
environment; consecutive unrolls of one environment overlap by one step, the
last step of one being the first of the next (its bootstrap observation).

Each Reverb item holds the unrolls of a group of `unrolls_per_item` of an
actor's environments, stored time-major as [T+1, group, ...]. Writing one item
per group instead of one per environment is what keeps the writer off the
actor's critical path (Python-side Reverb calls cost more than a CartPole
step); `unrolls_per_item` divides the batch size, so batches are whole items.
"""

import queue
import threading
from typing import Dict, List, Optional, Sequence

from absl import logging
import jax
import numpy as np
import reverb
import tensorflow as tf

from podmeta.types import Trajectory, per_unroll

TABLE = "unrolls"


def reverb_signature(spec: Trajectory) -> Dict[str, tf.TensorSpec]:
  # Reverb stores a dict signature; plain dicts round-trip through its proto
  # encoding unchanged, NamedTuples need not.
  return {name: tf.TensorSpec(s.shape, tf.as_dtype(s.dtype), name=name)
          for name, s in spec._asdict().items()}


def make_tables(spec: Trajectory, *, replay: str, max_size: int,
                samples_per_insert: float, min_size: int, batch_size: int
                ) -> Sequence[reverb.Table]:
  """The replay tables: a FIFO queue, or uniform replay with a rate limiter.

  Sizes are given in unrolls and converted to items of `group` unrolls.
  """
  signature = reverb_signature(spec)
  group = spec.action.shape[1]
  max_size = max(max_size // group, 1)
  min_size = max(min_size // group, 1)
  batch_size = max(batch_size // group, 1)
  if replay == "queue":
    return [reverb.Table.queue(TABLE, max_size=max_size, signature=signature)]
  if replay == "uniform":
    # Allow the learner to run ahead or behind by a few batches before blocking.
    error_buffer = max(2.0 * batch_size * samples_per_insert, 2.0 * batch_size)
    return [reverb.Table(
        name=TABLE,
        sampler=reverb.selectors.Uniform(),
        remover=reverb.selectors.Fifo(),
        max_size=max_size,
        max_times_sampled=0,
        rate_limiter=reverb.rate_limiters.SampleToInsertRatio(
            samples_per_insert=samples_per_insert,
            min_size_to_sample=min_size,
            error_buffer=error_buffer),
        signature=signature)]
  raise ValueError(f"unknown replay {replay!r}")


def table_stats(client: reverb.Client, group: int, timeout_s: int = 1) -> Dict[str, int]:
  """Unrolls inserted into and sampled from the table so far (this server's life).

  With a deadline: at shutdown the server may already be gone.
  """
  info = client.server_info(timeout=timeout_s)[TABLE]
  return {"replay_inserted_unrolls": int(info.rate_limiter_info.insert_stats.completed) * group,
          "replay_sampled_unrolls": int(info.rate_limiter_info.sample_stats.completed) * group,
          "replay_size_unrolls": int(info.current_size) * group}


class UnrollWriter:
  """Writes a vector env's unrolls, one Reverb item per group of environments.

  Steps are gathered in a host buffer of shape [T+1, E, ...]; when it is full
  each group of envs is sent as one item, and the last step is carried over as
  the first step of the next unroll. A per-unroll field (core_state) keeps two
  rows, the value at the unroll's first step (written) and the latest one
  (which becomes the first when the last step is carried over).
  """

  def __init__(self, client: reverb.Client, spec: Trajectory, num_envs: int):
    self._length, self._group = spec.action.shape[:2]
    if num_envs % self._group:
      raise ValueError(f"{num_envs} envs do not split into items of {self._group} unrolls")
    self._num_envs = num_envs
    self._per_unroll = [per_unroll(s) for s in spec]
    self._buffer = Trajectory(*[
        np.zeros((2 if once else self._length, num_envs) + s.shape[2:], s.dtype)
        for s, once in zip(spec, self._per_unroll)])
    self._t = 0
    self._writer = client.trajectory_writer(num_keep_alive_refs=1)

  def append(self, step: Trajectory) -> bool:
    """Adds one vector step ([E, ...] per field). Returns True if items were queued."""
    for buf, value, once in zip(self._buffer, step, self._per_unroll):
      if once:
        buf[1] = value
        if self._t == 0:
          buf[0] = value
      else:
        buf[self._t] = value
    self._t += 1
    if self._t < self._length:
      return False
    g = self._group
    for start in range(0, self._num_envs, g):
      self._writer.append({name: np.ascontiguousarray(buf[:1 if once else None, start:start + g])
                           for name, buf, once in zip(Trajectory._fields, self._buffer,
                                                      self._per_unroll)})
      history = self._writer.history  # rebuilt on every access: read it once
      self._writer.create_item(
          TABLE, priority=1.0,
          trajectory={name: history[name][-1] for name in Trajectory._fields})
    for buf in self._buffer:
      buf[0] = buf[-1]
    self._t = 1
    return True

  @property
  def items_per_unroll(self) -> int:
    """Items one append that completes an unroll queues."""
    return self._num_envs // self._group

  def flush(self, timeout_ms: Optional[int] = None, in_flight: int = 0) -> None:
    """Blocks until at most `in_flight` queued items are not yet in the table
    (raises DeadlineExceededError on timeout)."""
    self._writer.flush(block_until_num_items=in_flight, timeout_ms=timeout_ms)

  def close(self) -> None:
    try:
      self._writer.close()
    except Exception:  # pylint: disable=broad-except
      # The server may already be gone at shutdown; nothing left to deliver.
      logging.info("unroll writer closed with the server gone")


def make_dataset(server_address: str, group: int, timeout_ms: int,
                 max_in_flight: int = 2) -> tf.data.Dataset:
  """Single items, [T+1, group, ...] per field; ends if none arrives within `timeout_ms`."""
  dataset = reverb.TrajectoryDataset.from_table_signature(
      server_address=server_address, table=TABLE,
      max_in_flight_samples_per_worker=max_in_flight, rate_limiter_timeout_ms=timeout_ms)
  return dataset.map(lambda sample: sample.data)


def items_to_batch(items: Sequence[dict]) -> Trajectory:
  """Items of `group` unrolls each -> one batch [len(items) * group, T+1, ...]."""
  def unrolls(*xs):
    x = np.stack(xs)  # [items, T+1, group, ...]
    x = np.swapaxes(x, 1, 2)
    return x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:])
  return Trajectory(**{k: unrolls(*(item[k] for item in items)) for k in items[0]})


class BatchReader:
  """Batches of `batch_size` unrolls from the replay table, as host numpy arrays.

  `next(stop)` returns a batch, or None when no item arrived within `poll_ms`
  (so a caller can check its stop conditions while actors are slow). Items
  already read stay here for the next call: restarting Reverb's dataset after
  a timeout must not drop a part-built batch, which a queue table would never
  hand out again.
  """

  def __init__(self, server_address: str, batch_size: int, group: int, poll_ms: int = 500):
    self._address = server_address
    self._items_per_batch = batch_size // group
    self._group = group
    self._poll_ms = poll_ms
    self._pending: List[dict] = []
    self._iterator = None

  def next(self) -> Optional[Trajectory]:
    while len(self._pending) < self._items_per_batch:
      if self._iterator is None:
        self._iterator = make_dataset(self._address, self._group, self._poll_ms,
                                      max_in_flight=2 * self._items_per_batch
                                      ).as_numpy_iterator()
      try:
        self._pending.append(next(self._iterator))
      except StopIteration:  # the poll timed out
        self._iterator = None
        return None
    batch = items_to_batch(self._pending[:self._items_per_batch])
    del self._pending[:self._items_per_batch]
    return batch


def split_for_devices(batch: Trajectory, num_devices: int) -> Trajectory:
  """[B, ...] -> [num_devices, B // num_devices, ...]."""
  return jax.tree.map(lambda x: x.reshape((num_devices, -1) + x.shape[1:]), batch)


class Prefetcher:
  """Reads batches from Reverb on a thread and places them on the learner's devices.

  `get(timeout)` returns (batch sharded over devices, min policy version of the
  batch) or None when nothing arrived in time, so the learner can check for
  stop requests and budgets while actors are slow or gone.
  """

  def __init__(self, server_address: str, batch_size: int, group: int, devices: Sequence,
               prefetch_size: int = 2, poll_ms: int = 500):
    self._address = server_address
    self._batch_size = batch_size
    self._group = group
    self._devices = list(devices)
    self._poll_ms = poll_ms
    self._queue = queue.Queue(maxsize=prefetch_size)
    self._stop = threading.Event()
    self._error = None
    self._thread = threading.Thread(target=self._run, name="prefetch", daemon=True)
    self._thread.start()

  def _run(self):
    reader = BatchReader(self._address, self._batch_size, self._group, self._poll_ms)
    try:
      while not self._stop.is_set():
        traj = reader.next()
        if traj is None:
          continue
        version = int(traj.policy_version[:, :-1].min())
        sharded = jax.device_put_sharded(per_device(traj, len(self._devices)), self._devices)
        while not self._stop.is_set():
          try:
            self._queue.put((sharded, version), timeout=0.2)
            break
          except queue.Full:
            pass
    except Exception as e:  # pylint: disable=broad-except
      if not self._stop.is_set():
        self._error = e
        logging.exception("prefetch thread failed")

  def get(self, timeout: float):
    if self._error is not None:
      raise RuntimeError(f"replay reader failed: {self._error}") from self._error
    try:
      return self._queue.get(timeout=timeout)
    except queue.Empty:
      return None

  def close(self):
    self._stop.set()
    self._thread.join(timeout=5.0)


def per_device(batch: Trajectory, num_devices: int):
  """[B, ...] -> a list of num_devices batches of B // num_devices, for device_put_sharded."""
  split = split_for_devices(batch, num_devices)
  return [jax.tree.map(lambda x, i=i: x[i], split) for i in range(num_devices)]
