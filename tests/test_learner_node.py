"""The learner node's small parts: its metrics window, checkpoint schedule and counters."""

import jax.numpy as jnp
import numpy as np

from podmeta.learner_node import CheckpointSchedule, MetricsWindow, RunCounters


def test_metrics_window_means_lags_and_throughputs_over_its_interval():
  window = MetricsWindow(now=100.0, learner_steps=10, env_steps=1000)
  assert window.empty and not window.due(104.9, 5.0) and window.due(105.0, 5.0)
  # Device metrics arrive with a leading device axis; the first device's are logged.
  for loss, lag in [(1.0, 0), (2.0, 3), (6.0, 1)]:
    window.add({"loss": jnp.asarray([loss, 99.0])}, lag)
  row = window.close(now=104.0, learner_steps=13, env_steps=1600, env_steps_per_batch=50)
  assert row["loss"] == 3.0
  assert row["policy_lag"] == 4 / 3 and row["policy_lag_max"] == 3
  assert row["env_steps_per_second"] == 600 / 4
  assert row["learner_steps_per_second"] == 3 / 4
  assert row["consumed_env_steps_per_second"] == 3 * 50 / 4
  # Closing opens the next window where this one ended.
  assert window.empty and not window.due(108.9, 5.0) and window.due(109.0, 5.0)
  row = window.close(now=106.0, learner_steps=13, env_steps=1700, env_steps_per_batch=50)
  assert "loss" not in row and "policy_lag" not in row
  assert row["env_steps_per_second"] == 50.0 and row["learner_steps_per_second"] == 0.0


def test_metrics_window_mean_spans_its_batched_fetches():
  """More steps than one fetch holds: the mean is still over every step of the window."""
  window = MetricsWindow(now=0.0, learner_steps=0, env_steps=0)
  losses = np.arange(3 * MetricsWindow.FETCH_EVERY + 5, dtype=np.float32)
  for loss in losses:
    window.add({"loss": jnp.asarray([loss, -1.0])}, 0)
  row = window.close(now=1.0, learner_steps=len(losses), env_steps=0, env_steps_per_batch=1)
  assert row["loss"] == float(losses.mean())
  window.add({"loss": jnp.asarray([7.0, 0.0])}, 0)
  assert window.close(now=2.0, learner_steps=0, env_steps=0, env_steps_per_batch=1)["loss"] == 7.0


def test_checkpoint_schedule_saves_early_then_every_interval():
  schedule = CheckpointSchedule(now=0.0, every_seconds=60.0, first_seconds=10.0)
  due = [t for t in np.arange(0.0, 200.0, 1.0) if schedule.due(float(t))]
  assert due == [10.0, 70.0, 130.0, 190.0]
  # An interval shorter than the first delay wins.
  schedule = CheckpointSchedule(now=5.0, every_seconds=3.0, first_seconds=10.0)
  assert [t for t in range(5, 15) if schedule.due(float(t))] == [8, 11, 14]


def test_run_counters_round_trip_through_save_and_restore():
  counters = RunCounters(recent_episodes=3)
  counters.add_actor_report(500, [1.0, 2.0], env_errors=1)
  counters.add_actor_report(300, [3.0, 4.0], env_errors=0)
  assert counters.set_eval_return(7.5, learner_steps=12) == 800
  saved = counters.save()
  assert saved == {"env_steps": 800, "episodes": 4, "env_errors": 1,
                   "recent_returns": [2.0, 3.0, 4.0], "eval_return": 7.5,
                   "eval_learner_steps": 12}
  resumed = RunCounters(recent_episodes=3)
  resumed.restore(saved)
  assert resumed.save() == saved and resumed.has_eval
  assert resumed.log_fields() == {"env_steps": 800, "episodes": 4, "env_errors": 1,
                                  "episode_return_mean": 3.0, "eval_return": 7.5}


def test_progress_is_the_budget_nearest_its_limit_and_extrapolates_an_eta():
  from podmeta.learner_node import Budget, Progress
  from podmeta.loggers import progress_text
  # Resumed at 20% of the env-step budget; the learner-step budget is further off.
  progress = Progress(Budget(max_env_steps=1000, max_learner_steps=100), env_steps=200,
                      learner_steps=10, now=50.0)
  assert progress.fields(200, 10, now=50.0) == {"progress": 0.2}  # no rate yet
  row = progress.fields(600, 30, now=60.0)
  assert row["progress"] == 0.6
  assert abs(row["eta_seconds"] - 10.0 * 0.4 / 0.4) < 1e-9  # 40% more at 40% per 10 s
  assert progress.fields(600, 90, now=60.0)["progress"] == 0.9  # learner steps lead now
  timed = Progress(Budget(max_seconds=200.0), 0, 0, now=0.0)
  assert timed.fields(0, 0, now=50.0) == {"progress": 0.25, "eta_seconds": 150.0}
  # Resumed 100 s into its time: the seconds, like the steps, count the whole run.
  resumed = Progress(Budget(max_seconds=200.0), 0, 0, now=0.0, seconds_before=100.0)
  assert resumed.fields(0, 0, now=50.0) == {"progress": 0.75, "eta_seconds": 50.0}
  assert progress_text(0.25, 150.0) == " 25% ETA 0:02:30"
  assert progress_text(0.5, None, bar=True, width=10) == "[#####-----]  50%"
