"""Learning-curve plots written into the run directory."""

import os

import numpy as np

from podmeta import loggers


def plot_run(run_dir: str, path: str = None) -> str:
  """Writes learning_curve.png: return and throughput against env steps and,
  when hyperparameters are meta-learned, one panel per meta-parameter trace
  plus the meta-loss."""
  # Imported here: matplotlib costs the learner process half a second at
  # start-up, and the plot is only drawn when the run ends.
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")  # no display on training machines
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  path = path or os.path.join(run_dir, "learning_curve.png")
  learner = loggers.read_csv(os.path.join(run_dir, "logs", "learner.csv"))
  evaluator = loggers.read_csv(os.path.join(run_dir, "logs", "evaluator.csv"))
  meta_keys = sorted(k for k in learner if k.startswith("meta/"))
  if meta_keys:
    meta_keys.append("meta_loss")
  rows = 1 + (len(meta_keys) + 1) // 2
  fig, axes = plt.subplots(rows, 2, figsize=(11, 4 * rows), squeeze=False)
  ax = axes[0, 0]
  if "episode_return_mean" in learner:
    ok = ~np.isnan(learner["episode_return_mean"])
    ax.plot(learner["env_steps"][ok], learner["episode_return_mean"][ok],
            label="training (mean of last 100 episodes)")
  if "eval_return" in evaluator and "eval_env_steps" in evaluator:
    ax.plot(evaluator["eval_env_steps"], evaluator["eval_return"], "o-", ms=3,
            label="evaluation (greedy)")
  ax.set_xlabel("environment steps")
  ax.set_ylabel("episode return")
  ax.set_title("Return")
  ax.grid(alpha=0.3)
  if ax.get_legend_handles_labels()[0]:  # a run that ended before its first episode has none
    ax.legend(loc="lower right", fontsize=8)
  ax = axes[0, 1]
  if "env_steps_per_second" in learner:
    ax.plot(learner["env_steps"], learner["env_steps_per_second"], label="env steps/s")
  ax.set_xlabel("environment steps")
  ax.set_ylabel("steps per second")
  ax.set_title("Throughput")
  ax.grid(alpha=0.3)
  for i, key in enumerate(meta_keys):
    ax = axes[1 + i // 2, i % 2]
    if key in learner:
      ok = ~np.isnan(learner[key])
      ax.plot(learner["env_steps"][ok], learner[key][ok], color="tab:purple")
    ax.set_xlabel("environment steps")
    ax.set_title(key.replace("meta/", "meta-learned ") if key != "meta_loss" else "meta-loss")
    ax.grid(alpha=0.3)
  for j in range(len(meta_keys), 2 * (rows - 1)):
    axes[1 + j // 2, j % 2].axis("off")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path
