"""A pod host's learner under a watching process.

On a pod host run with `local_mt`, the learner, replay and actors are threads
of one process, the one that joins the pod. When process 0 dies, jax.distributed's client in every
other process aborts its process at once (SIGABRT, "the JAX distributed
service detected fatal errors"): the coordination service lived in process 0,
and JAX 0.6.2 gives no hook to act instead. The process cannot say which host
was lost, or write its summary.

So the launcher runs the host's program as a child and waits for it. A child
that exits reports for itself; one killed by a signal is reported here: if the
pod's coordinator no longer answers, process 0 is the host that was lost
(`exit_reason: "pod_host_lost"`, `lost_process: 0`), otherwise the learner's
process died. Either way one `podmeta: error:` line and exit code 1.

With `local_mp` only the learner node's process joins the pod, so the
launcher, its supervisor, is already the watching process:
`explain_learner_failure` turns its learner's death into the same verdicts.
"""

import dataclasses
import json
import os
import signal
import socket
import subprocess
import time
from typing import List, Optional, Tuple

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


def run(command: List[str], info_path: str) -> Tuple[int, Optional[str]]:
  """Runs `command` (this launcher, as the child); returns the exit code to end
  with and, where the child was killed, the one-line error for the launcher to print.

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
    return code, None  # the child printed its own verdict
  info = _read_info(info_path)
  how = supervisor.describe_exit(code)
  if info is None:
    return 1, f"the pod host died before joining the pod ({how})"
  if info.process_id != 0 and not _reachable(info.coordinator_address):
    outcome = _process_0_lost(supervisor.Outcome(), info.coordinator_address,
                              f"this host's JAX runtime ended the process: {how}")
  else:
    outcome = supervisor.Outcome(failed_node="learner", failure=f"learner died ({how})")
  try:
    supervisor.record_outcome(info.host_dir, outcome, started_at)
  except Exception as e:  # pylint: disable=broad-except
    logging.warning("could not write %s/summary.json: %s", info.host_dir, e)
  return 1, outcome.failure


def _process_0_lost(outcome: supervisor.Outcome, coordinator_address: str,
                    how: str) -> supervisor.Outcome:
  return dataclasses.replace(
      outcome, failed_node="pod_host", lost_process=0,
      failure=f"pod process 0 lost (its coordinator {coordinator_address} does not answer; {how})")


def explain_learner_failure(outcome: supervisor.Outcome, host_dir: str, spec,
                            started_at: float) -> supervisor.Outcome:
  """local_mp on a pod: what the failure of this host's learner node says about the pod.

  Only the learner's process joins the pod there, so the launcher survives
  what ends it. A learner whose watchdog found a lost host wrote that verdict
  to summary.json and exited 1; one killed by a signal while process 0's
  coordinator no longer answers was aborted by JAX because process 0 was
  lost. Otherwise the learner itself failed, as `outcome` says.
  """
  try:
    summary = supervisor.this_runs_summary(host_dir, started_at)
  except (OSError, ValueError):
    summary = {}  # unreadable: no verdict of its own
  if summary.get("exit_reason") == "pod_host_lost":
    return dataclasses.replace(outcome, failed_node="pod_host",
                               lost_process=summary.get("lost_process"),
                               failure=summary.get("error") or outcome.failure)
  if (spec.process_id != 0 and spec.coordinator_address
      and not _reachable(spec.coordinator_address)):
    return _process_0_lost(outcome, spec.coordinator_address,
                           f"JAX's runtime ended this host's learner: {outcome.failure}")
  return outcome
