"""Runs a `local_mp` program's nodes as child processes and watches them.

Launchpad's own local_mp launcher starts each node behind a bash | sed
pipeline and assumes a node that is gone ended well: a learner killed by
SIGKILL left the rest of the program idle forever, a dead actor went
unnoticed, and nodes outlived a killed launcher. Here every node is a direct
child, so its exit status is known the moment it ends:

* the learner or the replay server ending while nothing asked the program
  to stop is a failure: every other node is stopped (SIGTERM, then SIGKILL
  after the termination notice) and the outcome names the node and how it
  ended;
* actors and the evaluator are expendable: one that dies is logged by name
  and started again, up to `max_restarts` restarts in all; a program left
  with no actor fails;
* each node gets SIGTERM from the kernel if the launcher dies
  (`podmeta.node_entry`);
* only the learner's process may open an accelerator: the others run JAX
  with `JAX_PLATFORMS=cpu`.

SIGINT or SIGTERM to the launcher (also what a node's `lp.stop()` sends)
asks every node to stop; a second SIGINT kills them at once.
"""

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import IO, List, Optional, Sequence

from absl import logging

from podmeta import node_entry

_POLL_SECONDS = 0.2
# Beyond the nodes' own termination notice (after which Launchpad's node
# runtime kills itself): time for that kill to land.
_KILL_MARGIN_SECONDS = 5.0
ESSENTIAL_GROUPS = ("learner", "replay")
RESTARTABLE_GROUPS = ("actor", "evaluator")


@dataclasses.dataclass
class Outcome:
  """How a supervised program ended."""
  failed_node: Optional[str] = None  # e.g. "learner", or "actor" when all actors were lost
  failure: Optional[str] = None  # one line: "learner died (killed by SIGKILL)"
  actors_lost: int = 0
  actor_restarts: int = 0
  evaluator_restarts: int = 0
  lost_process: Optional[int] = None  # a pod host that was lost (podmeta.pod_host)

  @property
  def exit_reason(self) -> Optional[str]:
    if self.lost_process is not None:
      return "pod_host_lost"
    return f"{self.failed_node}_failed" if self.failed_node else None


@dataclasses.dataclass
class _Node:
  name: str
  group: str
  command: List[str]
  env: dict
  process: Optional[subprocess.Popen] = None
  returncode: Optional[int] = None
  restarts: int = 0
  forwarder: Optional[threading.Thread] = None

  @property
  def alive(self) -> bool:
    return self.process is not None and self.returncode is None


# Read by jaxlib when it creates a GPU client (jaxlib/xla_client.py).
_PREALLOCATE_ENV = "XLA_PYTHON_CLIENT_PREALLOCATE"


@contextlib.contextmanager
def launcher_without_preallocation():
  """The local_mp launcher's own JAX client, created inside, takes no GPU memory up front.

  The launcher opens a JAX backend only for its checks before the start (device count,
  a checkpoint's shapes); by default a GPU client reserves 75% of the device's memory,
  which the learner's process then could not have. The variable is restored on exit, so
  the nodes started afterwards inherit the user's setting; a user's own value is kept.
  """
  if _PREALLOCATE_ENV in os.environ:
    yield
    return
  os.environ[_PREALLOCATE_ENV] = "false"
  try:
    yield
  finally:
    os.environ.pop(_PREALLOCATE_ENV, None)


def describe_exit(returncode: int) -> str:
  if returncode < 0:
    try:
      return f"killed by {signal.Signals(-returncode).name}"
    except ValueError:
      return f"killed by signal {-returncode}"
  return f"exit code {returncode}"


def local_mp_commands(program):
  """The node commands Launchpad's local_mp launch would run for `program`.

  The same steps as launchpad.launch.local_multi_processing.launch (0.5.2),
  stopping before it hands the commands to a terminal.
  """
  from launchpad import context
  for _, nodes in program.groups.items():
    for node in nodes:
      node._initialize_context(context.LaunchType.LOCAL_MULTI_PROCESSING, launch_config=None)  # pylint: disable=protected-access
  for label, nodes in program.groups.items():
    for node in nodes:
      for handle in node.input_handles:
        handle.connect(node, label)
  for node in program.get_all_nodes():
    node.bind_addresses()
  commands = []
  for label, nodes in program.groups.items():
    commands.extend(nodes[0].to_executables(nodes, label, nodes[0].launch_context))
  return commands


class Supervisor:
  """Starts, watches, restarts and stops the nodes of one local_mp program."""

  def __init__(self, commands: Sequence, max_restarts: int, log_dir: str,
               termination_notice_secs: float = 10.0, out: Optional[IO[str]] = None, pid_file: Optional[str] = None):
    """Each node's output goes to `log_dir`/<node>.log and, prefixed with its
    name, to `out` (stdout). `pid_file`, if given, is kept up to date with
    {node name: pid} of the running processes (which process is which, for an
    operator or a test)."""
    self._nodes = []
    groups = [c.title.split("/")[0] for c in commands]
    for command, group in zip(commands, groups):
      index = command.title.split("/")[-1]
      name = group if groups.count(group) == 1 else f"{group}_{index}"
      # Only the learner computes on the accelerator: another process opening
      # it would take memory JAX preallocates for the learner, or on a TPU
      # find the chips held already.
      platform = {} if group == "learner" else {"JAX_PLATFORMS": "cpu"}
      self._nodes.append(_Node(
          name=name, group=group,
          command=[command.command_as_list[0], "-m", node_entry.__name__,
                   *command.command_as_list[1:]],
          env={**os.environ, **command.env_overrides, **platform,
               node_entry.LAUNCHER_PID_ENV: str(os.getpid())}))
    self._max_restarts = max_restarts
    self._notice = termination_notice_secs
    self._out = out or sys.stdout
    self._out_lock = threading.Lock()
    self._pid_file = pid_file
    self._log_dir = log_dir
    os.makedirs(log_dir, exist_ok=True)
    self._outcome = Outcome()
    self._stop_requested = False
    self._kill_now = False

  def run(self) -> Outcome:
    previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    kill_at = None
    try:
      for node in self._nodes:
        self._start(node)
      while any(n.alive for n in self._nodes):
        self._poll()
        if self._stop_requested and kill_at is None:
          self._signal_alive(signal.SIGTERM)
          kill_at = time.monotonic() + self._notice + _KILL_MARGIN_SECONDS
        if kill_at is not None and (self._kill_now or time.monotonic() > kill_at):
          self._signal_alive(signal.SIGKILL)
        time.sleep(_POLL_SECONDS)
    finally:
      self._signal_alive(signal.SIGKILL)  # only after an error in this loop
      for s, handler in previous.items():
        signal.signal(s, handler)
      for node in self._nodes:
        if node.forwarder is not None:
          node.forwarder.join(timeout=5.0)
    return self._outcome

  # -- helpers --------------------------------------------------------------

  def _on_signal(self, signum, frame):
    del frame
    if self._stop_requested and signum == signal.SIGINT:
      self._kill_now = True
    self._stop_requested = True

  def _start(self, node: _Node) -> None:
    # Output goes to a file that the launcher follows, not to a pipe: a pipe
    # would break under the nodes when the launcher dies, and a node that is
    # shutting down must still be able to write.
    log_path = os.path.join(self._log_dir, f"{node.name}.log")
    with open(log_path, "ab") as log:
      start = log.tell()
      env = {**node.env, node_entry.RESTARTS_ENV: str(node.restarts)}
      node.process = subprocess.Popen(node.command, env=env, stdout=log,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    node.returncode = None
    node.forwarder = threading.Thread(target=self._follow, args=(node, log_path, start),
                                      name=f"output-{node.name}", daemon=True)
    node.forwarder.start()
    logging.info("started %s (pid %d), output in %s", node.name, node.process.pid, log_path)
    if self._pid_file:
      pids = {n.name: n.process.pid for n in self._nodes if n.process is not None}
      with open(self._pid_file + ".tmp", "w") as f:
        json.dump(pids, f, indent=2)
      os.replace(self._pid_file + ".tmp", self._pid_file)

  def _follow(self, node: _Node, path: str, offset: int) -> None:
    """Copies the node's output to the launcher's, each line prefixed with its name."""
    process = node.process
    with open(path, "rb") as f:
      f.seek(offset)
      pending = b""
      while True:
        chunk = f.readline()
        if chunk:
          pending += chunk
          if pending.endswith(b"\n"):
            self._write(node.name, pending)
            pending = b""
          continue
        if process.poll() is not None:
          # What it wrote between the last read and its exit.
          for line in (pending + f.read()).splitlines(keepends=True):
            self._write(node.name, line)
          return
        time.sleep(0.1)

  def _write(self, name: str, line: bytes) -> None:
    text = line.decode(errors="replace").rstrip("\n")
    with self._out_lock:
      try:
        self._out.write(f"[{name}] {text}\n")
        self._out.flush()
      except (BrokenPipeError, ValueError):
        pass  # nobody reads the launcher's output any more; the log file has it

  def _signal_alive(self, sig: int) -> None:
    for node in self._nodes:
      if node.alive:
        try:
          node.process.send_signal(sig)
        except ProcessLookupError:
          pass

  def _poll(self) -> None:
    for node in self._nodes:
      if not node.alive:
        continue
      node.returncode = node.process.poll()
      if node.returncode is None or self._stop_requested:
        continue
      how = describe_exit(node.returncode)
      if node.group in ESSENTIAL_GROUPS:
        if node.group == "learner" and node.returncode == 0:
          self._stop_requested = True  # it ended its run; its stop request may still be in flight
        else:
          self._fail(node.group, f"{node.name} died ({how})")
      elif node.group in RESTARTABLE_GROUPS:
        self._lost(node, how)
      else:
        self._fail(node.group, f"{node.name} died ({how})")

  def _lost(self, node: _Node, how: str) -> None:
    if node.group == "actor":
      self._outcome.actors_lost += 1
    used = self._outcome.actor_restarts + self._outcome.evaluator_restarts
    if used < self._max_restarts:
      logging.error("%s died (%s); restarting it (restart %d of at most %d)", node.name, how,
                    used + 1, self._max_restarts)
      if node.group == "actor":
        self._outcome.actor_restarts += 1
      else:
        self._outcome.evaluator_restarts += 1
      node.restarts += 1
      self._start(node)
      return
    logging.error("%s died (%s); no restarts left (actor_restarts=%d)", node.name, how,
                  self._max_restarts)
    # A run goes on with some of its actors, but not with none (or with no
    # evaluator, the only one of its group: its evaluation was asked for).
    if not any(n.alive for n in self._nodes if n.group == node.group):
      lost = (f"every actor died (the last: {node.name}, {how})" if node.group == "actor"
              else f"{node.name} died ({how})")
      self._fail(node.group, f"{lost} and no restarts are left "
                 f"(actor_restarts={self._max_restarts})")

  def _fail(self, group: str, message: str) -> None:
    logging.error("%s; stopping the program", message)
    self._outcome.failed_node = group
    self._outcome.failure = message
    self._stop_requested = True


def this_runs_summary(run_dir: str, started_at: float) -> dict:
  """run_dir's summary.json if the run started at `started_at` wrote it, else {}."""
  path = os.path.join(run_dir, "summary.json")
  if not os.path.exists(path) or os.path.getmtime(path) < started_at:
    return {}  # none, or a previous run's
  with open(path) as f:
    return json.load(f)


def record_outcome(run_dir: str, outcome: Outcome, started_at: float) -> dict:
  """Adds the supervisor's outcome to the run's summary.json and returns it.

  A summary older than `started_at` is a previous run's: the learner of this
  one died before writing its own. Then the summary is made from the newest
  checkpoint's counters, which is what a resume continues from.
  """
  path = os.path.join(run_dir, "summary.json")
  summary = this_runs_summary(run_dir, started_at)
  if not summary and outcome.failure:
    summary = _summary_from_checkpoint(run_dir)
  if not summary and not outcome.failure:
    return summary
  summary.update(actors_lost=outcome.actors_lost, actor_restarts=outcome.actor_restarts,
                 evaluator_restarts=outcome.evaluator_restarts)
  if outcome.failure:
    summary.update(exit_reason=outcome.exit_reason, error=outcome.failure)
  if outcome.lost_process is not None:
    summary["lost_process"] = outcome.lost_process
  with open(path + ".tmp", "w") as f:
    json.dump(summary, f, indent=2)
  os.replace(path + ".tmp", path)
  return summary


def _summary_from_checkpoint(run_dir: str) -> dict:
  from podmeta import checkpointing
  directory = os.path.join(run_dir, "checkpoints")
  step, counters = checkpointing.read_latest_counters(directory)
  counters = counters or {}
  returns = counters.get("recent_returns") or []
  return {
      "env_steps": counters.get("env_steps", 0),
      "learner_steps": counters.get("learner_steps", 0),
      "episodes": counters.get("episodes", 0),
      "episode_return_mean": sum(returns) / len(returns) if returns else None,
      "eval_return_mean": counters.get("eval_return"),
      "wall_seconds_total": counters.get("wall_seconds_total", 0.0),
      "checkpoint_dir": directory if step is not None else None,
      "latest_checkpoint_step": step,
  }
