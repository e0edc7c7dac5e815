"""The run's learning-curve plot, for runs that ended before they had much to show."""

import os
import warnings

from podmeta import plotting


def test_a_run_without_episodes_still_gets_its_plot_and_no_legend_warning(tmp_path):
  logs = tmp_path / "logs"
  logs.mkdir()
  # A learner that failed before any episode ended: throughput but no return.
  (logs / "learner.csv").write_text("env_steps,env_steps_per_second\n160,80.0\n320,95.5\n")
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    path = plotting.plot_run(str(tmp_path))
  assert os.path.getsize(path) > 5_000
