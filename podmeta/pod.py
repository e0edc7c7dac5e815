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
