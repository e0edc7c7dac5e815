"""Learning: the distributed program trains CartPole-v1 to a mean return of at least 400."""

import os

from tests import helpers


def test_cartpole_reaches_return_400_within_600k_steps(tmp_path):
  run_dir = str(tmp_path / "run")
  code, out, left = helpers.run(
      helpers.train_command(run_dir, "--config=launch/configs/cartpole_impala.py",
                            "--config.max_env_steps=600000", "--config.eval_every_seconds=10"),
      timeout=600, env_overrides={"XLA_FLAGS": "--xla_force_host_platform_device_count=1"})
  assert code == 0, out[-5000:]
  assert not left
  s = helpers.summary(run_dir)
  assert s["exit_reason"] == "max_env_steps"
  assert s["env_steps"] < 700000
  # Mean of the last 100 finished training episodes (stochastic policy).
  assert s["episode_return_mean"] >= 400, s
  assert os.path.getsize(os.path.join(run_dir, "learning_curve.png")) > 10_000
