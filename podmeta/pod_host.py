"""A pod host's program under a watching parent process.

On a pod, each host's learner, replay and actors run as threads of one
process (`local_mt`). When process 0 dies, jax.distributed's client in every
other process aborts its process at once (SIGABRT, "the JAX distributed
service detected fatal errors"): the coordination service lived in process 0,
and JAX 0.6.2 gives no hook to act instead. The process cannot say which host
was lost, or write its summary.

So the launcher runs the host's program as a child and waits for it. A child
that exits reports for itself; one killed by a signal is reported here: if the
pod's coordinator no longer answers, process 0 is the host that was lost
(`exit_reason: "pod_host_lost"`, `lost_process: 0`), otherwise the learner's
process died. Either way one `podmeta: error:` line and exit code 1.
"""

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import List, Optional

from absl import logging

from podmeta import node_entry
from podmeta import supervisor

# Set in the child: where it writes what it learnt on joining the pod.
CHILD_ENV = "PODMETA_POD_HOST_INFO"


@dataclasses.dataclass(frozen=True)
class HostInfo:
  """What the child knows once it has joined the pod, and its parent does not."""
  process_id: int
  num_processes: int
  coordinator_address: str
  host_dir: str


def is_child() -> bool:
  return bool(os.environ.get(CHILD_ENV))


def start_child() -> None:
  """First thing in the child: it ends (SIGTERM) when its parent does, by any signal."""
  node_entry.die_with_launcher()


def write_info(info: HostInfo) -> None:
  """In the child, once joined: tells the parent who this host is."""
  path = os.environ[CHILD_ENV]
  with open(path + ".tmp", "w") as f:
    json.dump(dataclasses.asdict(info), f)
  os.replace(path + ".tmp", path)


def _read_info(path: str) -> Optional[HostInfo]:
  try:
    with open(path) as f:
      return HostInfo(**json.load(f))
  except (OSError, ValueError, TypeError):
    return None


def _reachable(address: str, timeout_s: float = 3.0) -> bool:
  host, _, port = address.rpartition(":")
  try:
    with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
      return True
  except (OSError, ValueError):
    return False


def run(command: List[str], info_path: str) -> int:
  """Runs `command` (this launcher, as the child) and returns the exit code to end with.

  SIGTERM is passed on to the child. SIGINT is not: the child is in the same
  process group, so a Ctrl-C on the terminal reaches it directly.
  """
  started_at = time.time()
  env = dict(os.environ, **{CHILD_ENV: info_path,
                            node_entry.LAUNCHER_PID_ENV: str(os.getpid())})
  child = subprocess.Popen(command, env=env)
  previous = {signal.SIGTERM: signal.signal(signal.SIGTERM,
                                            lambda sig, _: child.send_signal(sig)),
              signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN)}
  try:
    code = child.wait()  # retried across signals (PEP 475)
  finally:
    for sig, handler in previous.items():
      signal.signal(sig, handler)
  if code >= 0:
    return code
  info = _read_info(info_path)
  how = supervisor.describe_exit(code)
  # A child killed mid-write (JAX's abort dumps every thread's stack) can
  # leave its last line unfinished: ours starts on a line of its own.
  sys.stderr.write("\n")
  if info is None:
    message = f"the pod host died before joining the pod ({how})"
    print(f"podmeta: error: {message}", file=sys.stderr)
    return 1
  if info.process_id != 0 and not _reachable(info.coordinator_address):
    outcome = supervisor.Outcome(
        failed_node="pod_host", lost_process=0,
        failure=(f"pod process 0 lost (its coordinator {info.coordinator_address} does not "
                 f"answer; this host's JAX runtime ended the process: {how})"))
  else:
    outcome = supervisor.Outcome(failed_node="learner", failure=f"learner died ({how})")
  try:
    supervisor.record_outcome(info.host_dir, outcome, started_at)
  except Exception as e:  # pylint: disable=broad-except
    logging.warning("could not write %s/summary.json: %s", info.host_dir, e)
  print(f"podmeta: error: {outcome.failure}", file=sys.stderr)
  return 1
