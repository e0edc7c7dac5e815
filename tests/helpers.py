"""Shared test utilities: batches, processes, launches."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import psutil

from podmeta import types
from podmeta.types import Trajectory

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def random_batch(spec, batch_size: int, unroll_length: int, seed: int,
                 state_size: int = 0) -> Trajectory:
  """A batch of plausible unrolls with episode ends in it (Gaussian ones where
  `spec.continuous`: actions near the behaviour mean, log stds near 0)."""
  rng = np.random.default_rng(seed)
  n = unroll_length + 1
  is_first = rng.random((batch_size, n)) < 0.1
  discount = np.where(np.roll(is_first, -1, axis=1) & (rng.random((batch_size, n)) < 0.7), 0.0, 1.0)
  if getattr(spec, "continuous", False):
    mean = rng.normal(size=(batch_size, n, spec.num_actions)) * 0.5
    log_std = rng.normal(size=(batch_size, n, spec.num_actions)) * 0.3
    action = (mean + np.exp(log_std) * rng.normal(size=mean.shape)).astype(np.float32)
    behaviour = np.concatenate([mean, log_std], -1).astype(np.float32)
  else:
    action = rng.integers(0, spec.num_actions, size=(batch_size, n)).astype(np.int32)
    behaviour = rng.normal(size=(batch_size, n, spec.num_actions)).astype(np.float32)
  return Trajectory(
      observation=rng.normal(size=(batch_size, n) + spec.obs_shape).astype(spec.obs_dtype),
      action=action,
      reward=rng.normal(size=(batch_size, n)).astype(np.float32),
      discount=discount.astype(np.float32),
      is_first=is_first,
      behaviour_logits=behaviour,
      policy_version=np.zeros((batch_size, n), np.int32),
      core_state=np.zeros((batch_size, 1, types.core_state_width(state_size)), np.float32))


def train_command(run_dir, *args):
  return [sys.executable, "-m", "launch.train", f"--run_dir={run_dir}", *args]


def start(cmd, env_overrides=None):
  """Starts a launcher in its own session so every descendant can be found."""
  env = dict(os.environ)
  env.update(env_overrides or {})
  # A file, not a pipe: a long run's output would fill a pipe nobody reads
  # until the end, and block the launcher writing to it.
  output = tempfile.TemporaryFile(mode="w+")
  proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT,
                          text=True, start_new_session=True)
  proc.output_file = output
  return proc


def session_processes(sid: int):
  procs = []
  for p in psutil.process_iter(["pid"]):
    try:
      if os.getsid(p.pid) == sid and p.status() != psutil.STATUS_ZOMBIE:
        procs.append(p)
    except (ProcessLookupError, psutil.NoSuchProcess, PermissionError):
      pass
  return procs


def finish(proc, timeout: float):
  """Waits for the launcher; returns (returncode, output, leftover processes)."""
  sid = proc.pid  # session id == pid of the session leader
  try:
    proc.wait(timeout=timeout)
  except subprocess.TimeoutExpired:
    os.killpg(sid, signal.SIGKILL)
    proc.wait()
    raise AssertionError(f"launcher did not exit within {timeout}s:\n{_output(proc)[-5000:]}")
  out = _output(proc)
  deadline = time.time() + 5
  left = session_processes(sid)
  while left and time.time() < deadline:
    time.sleep(0.2)
    left = session_processes(sid)
  for p in left:
    p.kill()
  return proc.returncode, out, left


def _output(proc) -> str:
  proc.output_file.seek(0)
  return proc.output_file.read()


def run(cmd, timeout: float, env_overrides=None):
  return finish(start(cmd, env_overrides), timeout)


def summary(run_dir):
  with open(os.path.join(run_dir, "summary.json")) as f:
    return json.load(f)


def wait_for_learner_steps(run_dir, min_steps: int, timeout: float, proc=None) -> bool:
  """Waits until the learner's CSV log shows at least `min_steps` learner steps."""
  from podmeta import loggers
  path = os.path.join(run_dir, "logs", "learner.csv")
  deadline = time.time() + timeout
  while time.time() < deadline:
    try:
      steps = loggers.read_csv(path).get("learner_steps")
    except (OSError, ValueError):
      steps = None  # the file is being rewritten
    if steps is not None and len(steps) and np.nanmax(steps) >= min_steps:
      return True
    if proc is not None and proc.poll() is not None:
      return False
    time.sleep(0.2)
  return False


def assert_trains(procs, run_dir, min_steps: int, timeout: float) -> None:
  """Waits for `min_steps` learner steps of the launch(es) `procs` (the first one
  writes `run_dir`); if they never come, kills every process of every launch
  (a failed test must leave none behind) and fails with the first one's output."""
  procs = list(procs) if isinstance(procs, (list, tuple)) else [procs]
  if wait_for_learner_steps(run_dir, min_steps, timeout, procs[0]):
    return
  for proc in procs:
    try:
      os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
      pass
    proc.wait()
  raise AssertionError(f"the learner never reached {min_steps} steps in {timeout:.0f}s:\n"
                       f"{_output(procs[0])[-5000:]}")
