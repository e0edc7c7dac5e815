r"""BMG recovering a poor hyperparameter in the distributed trainer (CartPole).

  python -m benchmarks.cartpole_recovery              # `make recovery`; ~20 min on 2 cores

Three configurations, each a real `launch.train` run (local_mt, 2 actors) for
`--steps` env steps and `--seeds` seeds:

* tuned fixed: launch/configs/cartpole_impala.py as it is (learning rate 2e-3);
* poor fixed: the same with the learning rate scaled by `--poor_scale` (0.1);
* BMG from poor: launch/configs/cartpole_bmg_recovery.py, the same poor
  start, with online BMG meta-learning the learning-rate scale (sigmoid in
  [0.01, 2], from `--poor_scale`), K = 1, L = 4, KL matching, the
  meta-objective the policy gradient, meta learning rate 1e-2.

Runs are saved one by one to the json: a stopped benchmark continues.

Writes the table between the cartpole_recovery markers of RESULTS.md and
benchmarks/results/cartpole_recovery.{json,png}.
"""

import json
import os
from typing import Dict, List

from absl import app
from absl import flags
import numpy as np

from benchmarks import markdown
from benchmarks import runs

_STEPS = flags.DEFINE_integer("steps", 1_000_000, "Env steps per run.")
_SEEDS = flags.DEFINE_integer("seeds", 2, "Seeds per configuration.")
_POOR = flags.DEFINE_float("poor_scale", 0.1, "The poor start: this times the tuned learning rate.")
_OUT = flags.DEFINE_string("out", "benchmarks/results", "Directory for json and plot.")
_RESULTS = flags.DEFINE_string("results_md", "RESULTS.md", "Markdown file to update.")
_REPLOT = flags.DEFINE_bool("replot", False, "Only redraw from the saved json.")

BEGIN, END = "<!-- cartpole_recovery:begin -->", "<!-- cartpole_recovery:end -->"
TUNED_LR = 2e-3  # launch/configs/cartpole_impala.py
THRESHOLD = 400.0


def configurations(poor: float) -> Dict[str, List[str]]:
  """Label -> launch.train arguments."""
  base = ["--config=launch/configs/cartpole_impala.py"]
  bmg = ["--config=launch/configs/cartpole_bmg_recovery.py",
         f"--config.meta.hyperparams.learning_rate_scale.init={poor}"]
  return {
      "tuned fixed (lr 2e-3)": base,
      f"poor fixed (lr x{poor:g})": base + [f"--config.learning_rate={TUNED_LR * poor}"],
      f"BMG from poor (lr scale {poor:g}, meta-learned)": bmg,
  }


def run_one(args: List[str], seed: int, steps: int) -> Dict[str, list]:
  # The config file (first in args) must precede every --config.<field>.
  run = runs.train(["--num_actors=2", *args, f"--config.seed={seed}",
                    f"--config.max_env_steps={steps}", "--config.eval_episodes=0",
                    "--config.log_every_seconds=1"], timeout=3600)
  keep = {k: np.nan_to_num(run.log[k], nan=-1.0).tolist() for k in
          ("env_steps", "episode_return_mean", "meta/learning_rate_scale") if k in run.log}
  keep["final_return"] = run.summary["episode_return_mean"]
  keep["wall_seconds"] = run.summary["wall_seconds"]
  return keep


def table(results: Dict[str, List[dict]], steps: int) -> str:
  rows = [f"| configuration | seeds | final return (last 100 episodes) | best logged return | "
          f"env steps to a return of {THRESHOLD:.0f} | final learning-rate scale |",
          "|---|---|---|---|---|---|"]
  for label, seeds in results.items():
    final = [r["final_return"] for r in seeds]
    cross = [runs.first_crossing(r, THRESHOLD) for r in seeds]
    reached = [c for c in cross if np.isfinite(c)]
    cross_text = (f"{np.mean(reached):,.0f} ({len(reached)} of {len(seeds)} seeds)" if reached
                  else f"not within {steps:,}")
    scale = [r["meta/learning_rate_scale"][-1] for r in seeds if "meta/learning_rate_scale" in r]
    scale_text = " / ".join(f"{s:.2f}" for s in scale) if scale else "(fixed)"
    best = [max(r["episode_return_mean"]) for r in seeds]
    rows.append(f"| {label} | {len(seeds)} | {' / '.join(f'{f:.0f}' for f in final)} | "
                f"{' / '.join(f'{b:.0f}' for b in best)} | {cross_text} | {scale_text} |")
  return "\n".join(rows)


def plot(results: Dict[str, List[dict]], path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  for i, (label, seeds) in enumerate(results.items()):
    for j, r in enumerate(seeds):
      x = np.asarray(r["env_steps"])
      y = np.asarray(r["episode_return_mean"], float)
      y[y < 0] = np.nan
      axes[0].plot(x, y, color=f"C{i}", lw=1, label=label if j == 0 else None)
      if "meta/learning_rate_scale" in r:
        scale = np.asarray(r["meta/learning_rate_scale"], float)
        scale[scale < 0] = np.nan  # rows logged before the first update
        axes[1].plot(x, scale, color=f"C{i}", lw=1, label=label if j == 0 else None)
  axes[0].set_xlabel("env steps")
  axes[0].set_ylabel("training return (mean of last 100 episodes)")
  axes[1].set_xlabel("env steps")
  axes[1].set_ylabel("meta-learned learning-rate scale")
  axes[1].axhline(1.0, color="k", lw=0.6, ls="--")
  for ax in axes:
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv):
  del argv
  json_path = os.path.join(_OUT.value, "cartpole_recovery.json")
  if _REPLOT.value:
    with open(json_path) as f:
      saved = json.load(f)
  else:
    saved = runs.load_matching(json_path, steps=_STEPS.value, poor_scale=_POOR.value)
    results = saved["results"]
    for label, args in configurations(_POOR.value).items():
      done = results.setdefault(label, [])
      for seed in range(len(done), _SEEDS.value):
        done.append(run_one(args, seed, _STEPS.value))
        runs.save(saved, json_path)  # after every run: a stopped benchmark continues
  png = os.path.join(_OUT.value, "cartpole_recovery.png")
  plot(saved["results"], png)
  text = (table(saved["results"], saved["steps"])
          + f"\n\nMade by `python -m benchmarks.cartpole_recovery --steps={saved['steps']} "
          f"--seeds={len(next(iter(saved['results'].values())))} "
          f"--poor_scale={saved['poor_scale']:g}` (`make recovery`).\n\n![{os.path.basename(png)}]({png})")
  markdown.replace_block(_RESULTS.value, BEGIN, END, text, title="Results",
                         heading="## BMG recovering a poor learning rate (CartPole, distributed)\n\n")
  print(table(saved["results"], saved["steps"]))


if __name__ == "__main__":
  app.run(main)
