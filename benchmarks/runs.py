"""Running the trainer from a benchmark, and keeping its results across stops.

Benchmarks launch the real trainer (`python -m launch.train`) as a child
process in a temporary run directory and read back what a user would: the
learner's CSV log and `summary.json`. Results are saved to JSON after every
run, so a stopped benchmark continues where it was. No absl flags here:
benchmark scripts define their own, and two of them in one process collide.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, Mapping, NamedTuple, Optional, Sequence

from absl import logging
import numpy as np

from podmeta import loggers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Run(NamedTuple):
  log: Dict[str, np.ndarray]  # the learner's CSV, column -> values
  summary: Dict[str, Any]
  process_seconds: float  # the launcher's wall time, start-up included


def train(args: Sequence[str], timeout: float, devices: Optional[int] = None) -> Run:
  """One `launch.train` run with `args` (a --config=... first, then
  --config.<field> overrides); `devices` forces that many CPU devices."""
  env = dict(os.environ)
  if devices:
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  with tempfile.TemporaryDirectory() as tmp:
    run_dir = os.path.join(tmp, "run")
    cmd = [sys.executable, "-m", "launch.train", f"--run_dir={run_dir}", *args]
    logging.info("running %s", " ".join(cmd[2:]))
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
      raise RuntimeError(f"{' '.join(cmd[2:])} failed ({proc.returncode}):\n"
                         f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    log = loggers.read_csv(os.path.join(run_dir, "logs", "learner.csv"))
    with open(os.path.join(run_dir, "summary.json")) as f:
      summary = json.load(f)
  return Run(log, summary, seconds)


def first_crossing(result: Mapping[str, Sequence[float]], threshold: float,
                   column: str = "episode_return_mean") -> float:
  """Env steps of the first logged row whose `column` reaches `threshold`, else NaN."""
  i = loggers.first_row_at_least(result, column, threshold)
  return float("nan") if i is None else float(result["env_steps"][i])


def load_matching(json_path: str, **settings) -> dict:
  """The saved {"results": ..., **settings} if made with these settings, else a fresh one."""
  fresh = {"results": {}, **settings}
  try:
    with open(json_path) as f:
      saved = json.load(f)
  except (OSError, ValueError):
    return fresh
  if any(saved.get(k) != v for k, v in settings.items()):
    logging.info("%s was made with other settings; starting again", json_path)
    return fresh
  return saved


def save(saved: dict, json_path: str) -> None:
  """Atomically: a benchmark stopped mid-write keeps its previous file."""
  os.makedirs(os.path.dirname(json_path) or ".", exist_ok=True)
  with open(json_path + ".tmp", "w") as f:
    json.dump(saved, f)
  os.replace(json_path + ".tmp", json_path)
