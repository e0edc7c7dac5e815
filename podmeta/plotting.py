"""Learning-curve plots written into the run directory."""

import os

import matplotlib
matplotlib.use("Agg")  # no display on training machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from podmeta import loggers  # noqa: E402


def plot_run(run_dir: str, path: str = None) -> str:
  """Writes learning_curve.png: training and evaluation return against env steps."""
  path = path or os.path.join(run_dir, "learning_curve.png")
  learner = loggers.read_csv(os.path.join(run_dir, "logs", "learner.csv"))
  evaluator = loggers.read_csv(os.path.join(run_dir, "logs", "evaluator.csv"))
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  ax = axes[0]
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
  ax.legend(loc="lower right", fontsize=8)
  ax = axes[1]
  if "env_steps_per_second" in learner:
    ax.plot(learner["env_steps"], learner["env_steps_per_second"], label="env steps/s")
  ax.set_xlabel("environment steps")
  ax.set_ylabel("steps per second")
  ax.set_title("Throughput")
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path
