r"""Learning results of the distributed trainer on control tasks, per config and seed.

  python -m benchmarks.control --task=pendulum        # ~4 min per seed on 2 cores
  python -m benchmarks.control --task=pendulum --replot

Each run is a real `launch.train` run (local_mt, the config's actors) to the
task's env-step budget. For each configuration and seed the json keeps the
learner's logged training return (mean of the last 100 episodes) against env
steps, the final training and evaluation (greedy) returns and the wall time;
it is saved after every run, so a stopped benchmark continues. Writes the
table between the task's markers in RESULTS.md and
benchmarks/results/<task>.{json,png}.

Tasks:
* pendulum: launch/configs/pendulum_impala.py (a Gaussian policy) on
  Pendulum-v1 for 3M env steps; random play scores about -1200 per episode,
  a solved agent about -150; the threshold is -300.
* cartpole_no_velocity: launch/configs/cartpole_no_velocity_lstm.py (an LSTM
  core) and the same agent without it on podmeta/CartPoleNoVelocity-v1
  (position and angle only) for 2M env steps; the threshold is 400 (of 500).
"""

import os
from typing import Dict, List, NamedTuple

from absl import app
from absl import flags
import numpy as np

from benchmarks import markdown
from benchmarks import runs


class Task(NamedTuple):
  title: str
  configs: Dict[str, List[str]]  # label -> launch.train arguments (config file first)
  steps: int
  threshold: float


TASKS = {
    "pendulum": Task(
        title="Continuous actions: Pendulum-v1 (Gaussian policy, distributed)",
        configs={"IMPALA, Gaussian policy (pendulum_impala.py)":
                 ["--config=launch/configs/pendulum_impala.py"]},
        steps=3_000_000, threshold=-300.0),
    "cartpole_no_velocity": Task(
        title="Memory: CartPole without velocities, LSTM against MLP (distributed)",
        configs={"LSTM core (cartpole_no_velocity_lstm.py)":
                 ["--config=launch/configs/cartpole_no_velocity_lstm.py"],
                 "MLP, the same agent without the LSTM":
                 ["--config=launch/configs/cartpole_no_velocity_lstm.py", "--config.core=none"]},
        steps=2_000_000, threshold=400.0),
}

_TASK = flags.DEFINE_enum("task", "pendulum", list(TASKS), "Which task.")
_SEEDS = flags.DEFINE_integer("seeds", 3, "Seeds per configuration.")
_OUT = flags.DEFINE_string("out", "benchmarks/results", "Directory for json and plot.")
_RESULTS = flags.DEFINE_string("results_md", "RESULTS.md", "Markdown file to update.")
_REPLOT = flags.DEFINE_bool("replot", False, "Only redraw from the saved json.")


def run_one(args: List[str], seed: int, steps: int) -> dict:
  """What the table and plot need of one finished run."""
  run = runs.train([*args, f"--config.seed={seed}", f"--config.max_env_steps={steps}"],
                   timeout=7200)
  summary = run.summary
  return {"env_steps": np.asarray(run.log["env_steps"]).tolist(),
          "episode_return_mean": np.asarray(run.log["episode_return_mean"]).tolist(),
          "final_return": summary["episode_return_mean"],
          "final_eval_return": summary.get("eval_return_mean"),
          "final_env_steps": summary["env_steps"], "wall_seconds": summary["wall_seconds"],
          "exit_reason": summary["exit_reason"]}


def table(results: Dict[str, List[dict]], task: Task) -> str:
  rows = [f"| configuration | seed | env steps | final training return (last 100 episodes) | "
          f"final evaluation return (greedy) | env steps to a training return of "
          f"{task.threshold:g} | wall s |", "|---|---|---|---|---|---|---|"]
  for label, seeds in results.items():
    for seed, r in enumerate(seeds):
      cross = runs.first_crossing(r, task.threshold)
      ev = r["final_eval_return"]
      rows.append(f"| {label} | {seed} | {r['final_env_steps']:,} | {r['final_return']:.0f} | "
                  f"{'' if ev is None else f'{ev:.0f}'} | "
                  f"{'not reached' if np.isnan(cross) else f'{cross:,.0f}'} | "
                  f"{r['wall_seconds']:.0f} |")
  return "\n".join(rows)


def plot(results: Dict[str, List[dict]], task: Task, path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(7, 4))
  for i, (label, seeds) in enumerate(results.items()):
    for j, r in enumerate(seeds):
      ax.plot(r["env_steps"], r["episode_return_mean"], color=f"C{i}", lw=1,
              label=label if j == 0 else None)
  ax.axhline(task.threshold, color="k", lw=0.6, ls="--")
  ax.set_xlabel("env steps")
  ax.set_ylabel("training return (mean of last 100 episodes)")
  ax.set_title(task.title, fontsize=9)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv):
  del argv
  name, task = _TASK.value, TASKS[_TASK.value]
  json_path = os.path.join(_OUT.value, f"{name}.json")
  saved = runs.load_matching(json_path, steps=task.steps)
  if not _REPLOT.value:
    for label, args in task.configs.items():
      done = saved["results"].setdefault(label, [])
      for seed in range(len(done), _SEEDS.value):
        done.append(run_one(args, seed, task.steps))
        runs.save(saved, json_path)  # after every run: a stopped benchmark continues
  png = os.path.join(_OUT.value, f"{name}.png")
  plot(saved["results"], task, png)
  text = (table(saved["results"], task)
          + f"\n\nMade by `python -m benchmarks.control --task={name} --seeds="
          f"{max(len(s) for s in saved['results'].values())}`.\n\n"
          f"![{os.path.basename(png)}]({png})")
  markdown.replace_block(_RESULTS.value, f"<!-- {name}:begin -->", f"<!-- {name}:end -->", text,
                         title="Results", heading=f"## {task.title}\n\n")
  print(table(saved["results"], task))


if __name__ == "__main__":
  app.run(main)
