r"""Time to solve CartPole: seconds from the launcher's process start until the
mean training return (the learner's mean over the last 100 finished episodes)
first reaches --target, per config and launch mode, for a few seeds.

This is what a user waits through: start-up (imports, building the nodes,
compiling) plus learning. Each run is a real `launch.train` with the learner
logging every half second; the learner's `seconds_since_launch` column dates
each row from the launcher's process start. Writes
benchmarks/results/time_to_return.json and the table in BENCHMARKS.md.

  python -m benchmarks.time_to_return
  python -m benchmarks.time_to_return --setups=envpool:local_mt --seeds=0,1,2
"""

import json
import os
import platform
import statistics
import sys
import time

from absl import app
from absl import flags

from benchmarks import markdown
from benchmarks import runs
from podmeta import loggers

# Each setup's config: the gymnasium one is the default CartPole config, the
# EnvPool one its lean variant (many envs per actor, large batches).
CONFIGS = {
    "gymnasium": "launch/configs/cartpole_impala.py",
    "envpool": "launch/configs/cartpole_envpool.py",
}
_SETUPS = flags.DEFINE_list(
    "setups", ["envpool:local_mt", "envpool:local_mp", "gymnasium:local_mt", "gymnasium:local_mp"],
    "config:launch-mode pairs (configs: " + ", ".join(CONFIGS) + ").")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1"], "Seeds per setup.")
_TARGET = flags.DEFINE_float("target", 475.0, "Mean training return to reach.")
_MAX_SECONDS = flags.DEFINE_float("max_seconds", 60.0, "Training budget of each run.")
_MAX_ENV_STEPS = flags.DEFINE_integer("max_env_steps", 3_000_000,
                                      "Env-step budget of each run (whichever comes first).")
_OUT = flags.DEFINE_string("out", "benchmarks/results", "Directory for the JSON.")
_MARKDOWN = flags.DEFINE_string("markdown", "BENCHMARKS.md", "File whose table is replaced.")

BEGIN, END = "<!-- time_to_return:begin -->", "<!-- time_to_return:end -->"
_MARKS = ("learner_built", "first_learner_step")


def run_one(config: str, mode: str, seed: int) -> dict:
  run = runs.train([f"--config={config}", f"--lp_launch_type={mode}", f"--config.seed={seed}",
                    f"--config.max_seconds={_MAX_SECONDS.value}",
                    f"--config.max_env_steps={_MAX_ENV_STEPS.value}",
                    "--config.log_every_seconds=0.5"],
                   timeout=_MAX_SECONDS.value + 240, devices=1)
  i = loggers.first_row_at_least(run.log, "episode_return_mean", _TARGET.value)
  return {"seed": seed,
          "seconds_to_target": None if i is None else float(run.log["seconds_since_launch"][i]),
          "env_steps_at_target": None if i is None else int(run.log["env_steps"][i]),
          "startup_seconds": run.summary.get("startup_seconds") or {},
          "env_steps_per_second": run.summary.get("env_steps_per_second"),
          "process_seconds": run.process_seconds}


def _seconds(seed_runs):
  return "/".join("never" if r["seconds_to_target"] is None else f"{r['seconds_to_target']:.1f}"
                  for r in seed_runs)


def write_outputs(results: dict) -> None:
  os.makedirs(_OUT.value, exist_ok=True)
  with open(os.path.join(_OUT.value, "time_to_return.json"), "w") as f:
    json.dump(results, f, indent=2)
  target = results["target"]
  lines = [
      f"Measured {results['date']} on {results['machine']} with `{results['command']}`: "
      f"seconds from the launcher's process start until the mean training return (last 100 "
      f"episodes) first reaches {target:g}, per seed ({', '.join(results['seeds'])}); "
      f"budget {results['max_seconds']:g} s or {results['max_env_steps']:,} env steps.",
      "",
      "| config | launch | seconds to " + f"{target:g} | median | env steps then "
      "| start-up s: learner built / first update | env steps/s |",
      "|---|---|---:|---:|---:|---|---:|",
  ]
  for row in results["setups"]:
    seed_runs = row["runs"]
    reached = [r["seconds_to_target"] for r in seed_runs if r["seconds_to_target"] is not None]
    median = f"{statistics.median(reached):.1f}" if len(reached) == len(seed_runs) else "-"
    steps = "/".join("-" if r["env_steps_at_target"] is None else f"{r['env_steps_at_target']:,}"
                     for r in seed_runs)
    startup = "; ".join(" / ".join(f"{r['startup_seconds'].get(k, float('nan')):.1f}"
                                   for k in _MARKS) for r in seed_runs)
    rate = "/".join(f"{r['env_steps_per_second'] or 0:,.0f}" for r in seed_runs)
    lines.append(f"| `{row['config']}` | {row['mode']} | {_seconds(seed_runs)} | {median} "
                 f"| {steps} | {startup} | {rate} |")
  markdown.replace_block(_MARKDOWN.value, BEGIN, END, "\n".join(lines), title="Benchmarks",
                         heading="## Time to a return of 475 (CartPole-v1)\n\n")


def main(argv):
  del argv
  setups = []
  for item in _SETUPS.value:
    name, _, mode = item.partition(":")
    if name not in CONFIGS or mode not in ("local_mt", "local_mp"):
      raise app.UsageError(f"--setups: {item!r} is not config:mode with a config in "
                           f"{sorted(CONFIGS)} and mode local_mt or local_mp")
    setups.append((CONFIGS[name], mode))
  results = {
      "date": time.strftime("%Y-%m-%d"),
      "machine": f"{os.cpu_count()} cores, {platform.machine()}",
      "command": "make bench-solve  # python -m benchmarks.time_to_return " + " ".join(sys.argv[1:]),
      "target": _TARGET.value, "seeds": list(_SEEDS.value), "max_seconds": _MAX_SECONDS.value,
      "max_env_steps": _MAX_ENV_STEPS.value, "setups": [],
  }
  for config, mode in setups:
    seed_runs = []
    for seed in _SEEDS.value:
      print(f"{config} {mode} seed {seed} ...", flush=True)
      seed_runs.append(run_one(config, mode, int(seed)))
      print(f"  {_seconds(seed_runs[-1:])} s to {_TARGET.value:g}", flush=True)
    results["setups"].append({"config": config, "mode": mode, "runs": seed_runs})
  write_outputs(results)
  print(f"wrote {_MARKDOWN.value} and {_OUT.value}/time_to_return.json")


if __name__ == "__main__":
  app.run(main)
