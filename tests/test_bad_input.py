"""Bad input: a one-line error naming the problem, a non-zero exit, nothing started or destroyed."""

import hashlib
import os

import jax
import pytest

import envs
from podmeta import builder
from podmeta.config import Config

from tests import helpers


def _run_and_check(cmd, must_mention, env_overrides=None):
  code, out, left = helpers.run(cmd, timeout=120, env_overrides=env_overrides)
  assert code == 2, out[-3000:]
  assert not left
  errors = [l for l in out.splitlines() if l.startswith("podmeta: error:")]
  assert len(errors) == 1, out[-3000:]
  assert must_mention in errors[0], errors[0]
  assert "Traceback" not in out
  # Nothing started: no node logged, no server came up.
  assert "Started replay server" not in out
  return errors[0]


@pytest.mark.parametrize("args, must_mention", [
    (["--config.env_id=NoSuchEnv-v9"], "NoSuchEnv-v9"),
    (["--num_actors=0"], "num_actors"),
    (["--num_actors=-3"], "num_actors"),
    (["--config.batch_size=12"], "batch_size"),
    (["--config.unroll_lenght=5"], "unroll_lenght"),
    (["--config=launch/configs/cartpole_impala.py", "--config.no_such_field=1"], "no_such_field"),
    (["--config=launch/configs/missing.py"], "missing.py"),
    (["--config.learning_rate=fast"], "learning_rate"),
    # Meta-learning: K < 1, bounds that exclude the initial value, an unknown
    # hyperparameter, a batch that does not split into the meta sub-batches.
    (["--config=launch/configs/cartpole_bmg.py", "--config.meta.inner_steps=0"],
     "'meta.inner_steps'"),
    (["--config=launch/configs/cartpole_bmg.py", "--config.meta.hyperparams.entropy_cost.init=0.5"],
     "'meta.hyperparams.entropy_cost.init'"),
    (["--config=launch/configs/cartpole_bmg.py", "--config.meta.hyperparams.entropy_costs.init=0.1"],
     "'entropy_costs'"),
    (["--config=launch/configs/cartpole_bmg.py", "--config.meta.target_data=last_inner",
      "--config.meta.inner_steps=3"], "batch_size"),
    # Pods.
    (["--pod_num_processes=2"], "--pod_coordinator"),
    (["--pod_num_processes=2", "--pod_process_id=2", "--pod_coordinator=localhost:1"],
     "--pod_process_id"),
    (["--pod_num_processes=2", "--pod_coordinator=localhost:1", "--lp_launch_type=local_mp"],
     "local_mt"),
])
def test_bad_flags_and_config(tmp_path, args, must_mention):
  run_dir = tmp_path / "run"
  _run_and_check(helpers.train_command(str(run_dir), *args), must_mention,
                 {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"})
  assert not run_dir.exists()


def _tree_digest(path):
  h = hashlib.sha256()
  for root, dirs, files in sorted(os.walk(path)):
    dirs.sort()
    for name in sorted(files):
      p = os.path.join(root, name)
      h.update(p.encode())
      with open(p, "rb") as f:
        h.update(f.read())
  return h.hexdigest()


def _write_checkpoint(run_dir, config):
  spec = envs.env_spec(config.env_id)
  learner = builder.make_learner(config, spec, devices=jax.devices()[:1])
  ckpt = builder.make_checkpointer(config, str(run_dir))
  ckpt.save(0, learner.save(), {"env_steps": 0})
  ckpt.close()
  return os.path.join(str(run_dir), "checkpoints", "0")


def test_unreadable_checkpoint_is_refused_and_kept(tmp_path):
  run_dir = tmp_path / "run"
  step_dir = _write_checkpoint(run_dir, Config())
  # Corrupt every array file of the saved state.
  for root, _, files in os.walk(os.path.join(step_dir, "state")):
    for name in files:
      if not name.startswith("_"):
        with open(os.path.join(root, name), "wb") as f:
          f.write(b"\x00garbage")
  before = _tree_digest(run_dir)
  error = _run_and_check(helpers.train_command(str(run_dir)), "checkpoint",
                         {"XLA_FLAGS": "--xla_force_host_platform_device_count=1"})
  assert "unreadable checkpoint" in error
  assert _tree_digest(run_dir) == before


def test_checkpoint_of_another_network_is_refused(tmp_path):
  run_dir = tmp_path / "run"
  _write_checkpoint(run_dir, Config(hidden_sizes=(8,)))
  before = _tree_digest(run_dir)
  _run_and_check(helpers.train_command(str(run_dir)), "does not match",
                 {"XLA_FLAGS": "--xla_force_host_platform_device_count=1"})
  assert _tree_digest(run_dir) == before
