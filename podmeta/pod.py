"""Running one learner across every host of a TPU pod (or several machines).

Each host runs the same program: its own actors and replay table feed its own
learner node, whose update is pmapped over every device of every host
(`jax.distributed`), so gradients are averaged pod-wide and the parameters
stay identical on all hosts. Collectives only work if every host runs the
same sequence of them, so the learner nodes move in lockstep: before each
step they agree (`HostSync`) on whether to stop and whether every host has a
batch ready, and they share their env-step counts so budgets are decided on
pod-wide totals, at the same step everywhere.
"""

import dataclasses
from typing import Optional, Tuple

from absl import logging
import jax
import numpy as np

_AXIS = "hosts"
_LOW_BITS = 20  # env steps travel as (high, low) int32 pairs: no overflow below 2^51


@dataclasses.dataclass(frozen=True)
class PodSpec:
  """Where this process sits in the pod; `coordinator_address` is host:port of process 0.

  With `tpu=True` the TPU runtime's environment provides all three
  (`jax.distributed.initialize()` without arguments).
  """
  coordinator_address: Optional[str] = None
  num_processes: int = 1
  process_id: int = 0
  tpu: bool = False

  @property
  def enabled(self) -> bool:
    return self.tpu or self.num_processes > 1


def joined() -> bool:
  """Whether this process has joined a pod (`initialize` has run in it)."""
  return _distributed_client() is not None


def process_index(spec: PodSpec) -> int:
  """This host's index in the pod: JAX's once joined, else the spec's.

  A local_mp launcher never joins (only its learner node's process does), so
  it builds the program from the spec's index.
  """
  return jax.process_index() if joined() else spec.process_id


def resolve_tpu(spec: PodSpec) -> PodSpec:
  """The TPU runtime's coordinator, process count and this host's index, without joining.

  A local_mp launcher needs them (its learner node joins the pod, with the
  same detection JAX's `jax.distributed.initialize()` uses).
  """
  from jax._src import clusters  # pylint: disable=g-import-not-at-top
  address, n, i, _ = clusters.ClusterEnv.auto_detect_unset_distributed_params(
      None, None, None, None, None, 300)
  if None in (address, n, i):
    raise ValueError("--pod_tpu: no TPU pod found on this machine (JAX's cluster detection "
                     "found no coordinator, process count or index)")
  return dataclasses.replace(spec, coordinator_address=address, num_processes=n, process_id=i)


def initialize(spec: PodSpec) -> Tuple[int, int]:
  """Joins the pod; returns (process_index, process_count). Call before any JAX computation."""
  if spec.tpu:
    jax.distributed.initialize()
  else:
    # Collectives between CPU devices of different processes (tests, CPU
    # clusters) need gloo; accelerator collectives are unaffected.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=spec.coordinator_address,
                               num_processes=spec.num_processes, process_id=spec.process_id)
  logging.info("joined the pod as process %d of %d (%d local, %d global devices)",
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())
  return jax.process_index(), jax.process_count()


class HostSync:
  """One all-reduce over every device of the pod: stop votes, readiness, env steps."""

  def __init__(self):
    self._devices = jax.local_devices()
    self._sum = jax.pmap(lambda x: jax.lax.psum(x, _AXIS), axis_name=_AXIS)

  @property
  def process_id(self) -> int:
    return jax.process_index()

  @property
  def num_processes(self) -> int:
    return jax.process_count()

  def __call__(self, want_stop: bool, ready: bool, env_steps: int) -> Tuple[bool, bool, int]:
    """(any host wants to stop, every host is ready, env steps summed over hosts)."""
    x = np.zeros((len(self._devices), 4), np.int32)
    x[0] = (int(want_stop), int(not ready), env_steps >> _LOW_BITS,
            env_steps & ((1 << _LOW_BITS) - 1))
    total = np.asarray(self._sum(jax.device_put_sharded(list(x), self._devices))[0])
    return bool(total[0]), total[1] == 0, (int(total[2]) << _LOW_BITS) + int(total[3])


def _distributed_client():
  from jax._src import distributed  # pylint: disable=g-import-not-at-top
  return distributed.global_state.client


class PodWatchdog:
  """Notices a lost pod host within `timeout_s`, where a collective would block.

  Every host's learner publishes a counter in jax.distributed's key-value
  store every `period_s` and reads everyone else's. A host whose counter has
  not moved for `timeout_s` (or, for process 0, whose store cannot be reached
  for that long) is lost: `on_lost(process_id, why)` is called once, from
  the watchdog's thread. JAX's own detection (missing coordination-service
  heartbeats) takes about 100 s and aborts the process without naming the
  host. A host that ends its run normally publishes "stopped" first.
  """

  _STOPPED = "stopped"

  def __init__(self, timeout_s: float = 20.0, period_s: float = 2.0,
               startup_grace_s: float = 60.0, client=None):
    self._timeout = timeout_s
    self._period = period_s
    self._grace = startup_grace_s
    self._client = client
    self._stop = None
    self._thread = None

  def _key(self, process_id: int) -> str:
    return f"podmeta/alive/{process_id}"

  def start(self, on_lost) -> None:
    import threading  # pylint: disable=g-import-not-at-top
    self._client = self._client or _distributed_client()
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._watch, args=(on_lost,), name="pod-watchdog",
                                    daemon=True)
    self._thread.start()

  def await_verdict(self) -> None:
    """Keeps watching for up to the timeout (after a collective failed: a
    lost host is the likely cause, and `on_lost` names it)."""
    if self._thread is not None:
      self._thread.join(timeout=self._timeout + 2 * self._period)

  def stop(self) -> None:
    if self._thread is None:
      return
    self._stop.set()
    self._thread.join(timeout=2 * self._period)
    try:
      self._client.key_value_set(self._key(jax.process_index()), self._STOPPED,
                                 allow_overwrite=True)
    except Exception:  # pylint: disable=broad-except
      pass  # the store is gone with process 0; nobody is left to tell

  def _watch(self, on_lost) -> None:
    import time  # pylint: disable=g-import-not-at-top
    me, others = jax.process_index(), [p for p in range(jax.process_count())
                                       if p != jax.process_index()]
    now = time.monotonic()
    last_value = {p: None for p in others}
    # Hosts finish building their learners at different times.
    changed_at = {p: now + self._grace - self._timeout for p in others}
    reached_store_at = now
    beat = 0
    while not self._stop.wait(self._period):
      now = time.monotonic()
      beat += 1
      try:
        self._client.key_value_set(self._key(me), str(beat), allow_overwrite=True)
        reached_store_at = now
      except Exception as e:  # pylint: disable=broad-except
        if now - reached_store_at > self._timeout:
          on_lost(0, f"its key-value store unreachable for {self._timeout:.0f} s: "
                     f"{str(e).splitlines()[0][:200]}")
          return
        continue
      for p in others:
        try:
          value = self._client.key_value_try_get(self._key(p))
        except Exception:  # pylint: disable=broad-except
          value = None  # not published yet
        if value == self._STOPPED:
          changed_at[p] = now
        elif value != last_value[p]:
          last_value[p], changed_at[p] = value, now
        elif now - changed_at[p] > self._timeout:
          on_lost(p, f"no heartbeat for {self._timeout:.0f} s")
          return
