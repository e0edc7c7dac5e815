r"""Soak: a long local_mp run whose actors are killed now and then (issue 12).

  python -m benchmarks.soak                 # `make soak`: 8 actors, 30 min, a kill every 3 min
  python -m benchmarks.soak --minutes=5 --kill_every_seconds=60

Runs `launch.train --lp_launch_type=local_mp` for `--minutes` (its max_seconds
budget), SIGKILLs a random actor process every `--kill_every_seconds`, and
samples every node's resident memory and the learner's env steps/s. It then
checks what a user relies on: the run ended by its budget with exit code 0,
every kill was noticed and restarted (summary.json's actors_lost and
actor_restarts equal the kills), the counters agree (summary env steps >= the
learner log's last row, learner steps == the final checkpoint's step), and no
node's memory grew by more than 10% between the end of warm-up and the end.
Writes a table to BENCHMARKS.md and benchmarks/results/soak.{json,png}.
"""

import json
import os
import random
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np
import psutil

from benchmarks import markdown
from podmeta import loggers

_MINUTES = flags.DEFINE_float("minutes", 30.0, "Length of the run.")
_ACTORS = flags.DEFINE_integer("num_actors", 8, "Actor processes.")
_KILL_EVERY = flags.DEFINE_float("kill_every_seconds", 180.0, "Seconds between actor kills.")
_WARMUP = flags.DEFINE_float("warmup_seconds", 90.0, "Memory is compared from here on.")
_SEED = flags.DEFINE_integer("seed", 0, "Which actors get killed.")
_OUT = flags.DEFINE_string("out", "benchmarks/results", "Directory for json and plot.")
_MD = flags.DEFINE_string("benchmarks_md", "BENCHMARKS.md", "Markdown file to update.")

BEGIN, END = "<!-- soak:begin -->", "<!-- soak:end -->"
_SAMPLE_SECONDS = 10.0
_MAX_GROWTH = 0.10


def _nodes(run_dir):
  try:
    with open(os.path.join(run_dir, "nodes.json")) as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}


def _rss_mb(pid):
  try:
    return psutil.Process(pid).memory_info().rss / 2**20
  except psutil.NoSuchProcess:
    return None


def soak(run_dir: str) -> dict:
  cmd = [sys.executable, "-m", "launch.train", f"--run_dir={run_dir}", "--lp_launch_type=local_mp",
         f"--num_actors={_ACTORS.value}", f"--config.max_seconds={_MINUTES.value * 60}",
         "--config.max_env_steps=0", "--config.actor_restarts=100000",
         "--config.log_every_seconds=5"]
  log = open(os.path.join(os.path.dirname(run_dir), "launcher.log"), "w")
  proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
  rng = random.Random(_SEED.value)
  start = time.monotonic()
  next_kill = start + _KILL_EVERY.value
  kills, samples = [], []  # samples: (seconds, {node: rss MB, by pid})
  while proc.poll() is None:
    time.sleep(1.0)
    now = time.monotonic()
    nodes = _nodes(run_dir)
    if not samples or now - start - samples[-1][0] >= _SAMPLE_SECONDS:
      samples.append((now - start, {f"{name}@{pid}": _rss_mb(pid) for name, pid in nodes.items()}))
    actors = [n for n in nodes if n.startswith("actor")]
    if now >= next_kill and actors and now - start < _MINUTES.value * 60 - 30:
      victim = rng.choice(actors)
      try:
        os.kill(nodes[victim], 9)
        kills.append((now - start, victim))
        logging.info("killed %s (pid %d) at %.0f s", victim, nodes[victim], now - start)
      except ProcessLookupError:
        pass
      next_kill = now + _KILL_EVERY.value
  log.close()
  left = [p.pid for p in psutil.process_iter() if _session(p) == proc.pid]
  return {"returncode": proc.returncode, "kills": kills, "samples": samples, "left": left,
          "wall_seconds": time.monotonic() - start}


def _session(p):
  try:
    return os.getsid(p.pid)
  except (ProcessLookupError, PermissionError):
    return None


def _memory(samples, warmup):
  """node@pid -> (MB `warmup` s after that process appeared, MB at its last sample,
  seconds between the two). Start-up (imports, compiles) is not growth."""
  seen, first, last = {}, {}, {}
  for t, rss in samples:
    for key, mb in rss.items():
      if mb is None:
        continue
      seen.setdefault(key, t)
      if key not in first and t >= seen[key] + warmup:
        first[key] = (t, mb)
      last[key] = (t, mb)
  return {k: (first[k][1], last[k][1], last[k][0] - first[k][0]) for k in first}


def report(result: dict, run_dir: str):
  """(markdown, whether every check passed)."""
  with open(os.path.join(run_dir, "summary.json")) as f:
    summary = json.load(f)
  curve = loggers.read_csv(os.path.join(run_dir, "logs", "learner.csv"))
  memory = _memory(result["samples"], _WARMUP.value)
  # Only processes that lived through a real stretch after warm-up.
  long_lived = {k: v for k, v in memory.items() if v[2] >= 0.5 * _MINUTES.value * 60}
  growth = {k: (end - begin) / begin for k, (begin, end, _) in long_lived.items()}
  rate = curve["env_steps_per_second"][np.isfinite(curve["env_steps_per_second"])]
  quarters = np.array_split(rate[len(rate) // 10:], 4)  # the first tenth is start-up
  checks = {
      "exit code 0": result["returncode"] == 0,
      "ended by its budget (max_seconds)": summary.get("exit_reason") == "max_seconds",
      "no process left behind": not result["left"],
      f"every kill noticed: actors_lost == {len(result['kills'])}":
          summary.get("actors_lost") == len(result["kills"]),
      f"every kill restarted: actor_restarts == {len(result['kills'])}":
          summary.get("actor_restarts") == len(result["kills"]),
      "summary env steps >= the learner log's last row":
          summary["env_steps"] >= np.nanmax(curve["env_steps"]),
      "final checkpoint at the last learner step":
          summary.get("latest_checkpoint_step") == summary["learner_steps"],
      f"no long-lived node's memory grew by more than {_MAX_GROWTH:.0%}":
          bool(growth) and max(growth.values()) <= _MAX_GROWTH,
  }
  lines = [f"{_ACTORS.value} actors, local_mp, {_MINUTES.value:g} min, an actor SIGKILLed every "
           f"{_KILL_EVERY.value:g} s ({len(result['kills'])} kills).", "",
           "| check | result |", "|---|---|"]
  lines += [f"| {name} | {'yes' if ok else '**no**'} |" for name, ok in checks.items()]
  lines += ["", "| quarter of the run (after start-up) | learner env steps/s (mean of log rows) |",
            "|---|---|"]
  lines += [f"| {i + 1} | {np.mean(q):,.0f} |" for i, q in enumerate(quarters) if len(q)]
  lines += ["", "| node (pid) | MB after warm-up | MB at the end | growth |", "|---|---|---|---|"]
  lines += [f"| {k} | {b:,.0f} | {e:,.0f} | {growth[k]:+.1%} |"
            for k, (b, e, _) in sorted(long_lived.items())]
  lines += ["", f"Env steps {summary['env_steps']:,}, learner steps {summary['learner_steps']:,}, "
            f"restarted actors {summary.get('actor_restarts')}. Made by `python -m benchmarks.soak "
            f"--minutes={_MINUTES.value:g} --num_actors={_ACTORS.value} "
            f"--kill_every_seconds={_KILL_EVERY.value:g}` (`make soak`).", "",
            "![soak.png](benchmarks/results/soak.png)"]
  _plot(result, curve, memory, os.path.join(_OUT.value, "soak.png"))
  return "\n".join(lines), all(checks.values())


def _plot(result, curve, memory, path):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  axes[0].plot(curve["wall_seconds"], curve["env_steps_per_second"], lw=1)
  for t, _ in result["kills"]:
    axes[0].axvline(t, color="r", lw=0.6, ls="--")
  axes[0].set_xlabel("seconds (red: an actor killed)")
  axes[0].set_ylabel("env steps/s reaching the learner")
  for key in sorted(memory):
    t = [s for s, rss in result["samples"] if rss.get(key) is not None]
    mb = [rss[key] for _, rss in result["samples"] if rss.get(key) is not None]
    axes[1].plot(t, mb, lw=1, label=key.split("@")[0] if key.startswith(("learner", "replay"))
                 else None)
  axes[1].set_xlabel("seconds")
  axes[1].set_ylabel("resident memory per node process (MB)")
  axes[1].legend(fontsize=7)
  for ax in axes:
    ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv):
  del argv
  os.makedirs(_OUT.value, exist_ok=True)
  with tempfile.TemporaryDirectory() as tmp:
    run_dir = os.path.join(tmp, "run")
    result = soak(run_dir)
    text, ok = report(result, run_dir)
  with open(os.path.join(_OUT.value, "soak.json"), "w") as f:
    json.dump(result, f)
  markdown.replace_block(_MD.value, BEGIN, END, text, title="Benchmarks",
                         heading="## Soak: actors killed during a long local_mp run\n\n")
  print(text)
  if not ok:
    sys.exit("soak: a check failed (see the table)")


if __name__ == "__main__":
  app.run(main)
