"""Bad input: a one-line error naming the problem, a non-zero exit, nothing started or destroyed."""

import hashlib
import os

import jax
import numpy as np
import pytest

import envs
from podmeta import builder
from podmeta import checkpointing
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
    # A torso that cannot take the env's observations (CartPole's are vectors).
    (["--config.torso=conv"], "'torso'"),
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
    (["--pod_tpu", "--lp_launch_type=local_mp"], "no TPU pod found"),
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


def test_a_refused_checkpoint_names_the_config_fields_changed_since_the_run_began(tmp_path):
  """L2 Init adds an anchor to the optimiser state; resuming without it names weight_decay."""
  run_dir = str(tmp_path / "run")
  config = Config(hidden_sizes=(8,), weight_decay=1e-4, weight_decay_towards="init")
  builder.write_config(config, run_dir)
  _write_checkpoint(run_dir, config)
  builder.preflight(config, run_dir, num_devices=1)
  with pytest.raises(ValueError) as e:
    builder.preflight(config.replace(weight_decay=0.0, seed=3), run_dir, num_devices=1)
  message = str(e.value)
  assert "does not match" in message and "\n" not in message
  assert message.endswith("changed since this run began (was -> now): "
                          "seed (0 -> 3), weight_decay (0.0001 -> 0.0)"), message
  assert isinstance(e.value.__cause__, checkpointing.CheckpointMismatch)
  # Without the run's config.json the error is the checkpoint's alone.
  os.remove(os.path.join(run_dir, "config.json"))
  with pytest.raises(checkpointing.CheckpointMismatch, match="does not match") as e:
    builder.preflight(config.replace(weight_decay=0.0), run_dir, num_devices=1)
  assert "changed since" not in str(e.value)


@pytest.mark.parametrize("args, must_mention", [
    (["--config.env_id=nosuchpkg.envs:Corridor-v0"],
     "config field 'env_id': cannot import module 'nosuchpkg.envs'"),
    (["--config.env_id=mypkg.envs:Hallway-v0"],
     "config field 'env_id': unknown env id 'mypkg.envs:Hallway-v0'"),
    (["--config.env_id=mypkg.envs:Corridor-v0", '--config.env_kwargs={"width": 3}'],
     "config field 'env_kwargs': gym.make('mypkg.envs:Corridor-v0') with {\"width\": 3} failed "
     "(TypeError"),
    (["--config.env_id=mypkg.envs:Corridor-v0", '--config.env_kwargs={"length": 1}'],
     "failed (ValueError: length must be at least 2"),
    (['--config.env_kwargs={"length": 8'], "config field 'env_kwargs' is not valid JSON"),
    (["--config.env_kwargs=[8]"], "config field 'env_kwargs' must be a JSON object"),
    (["--config.env_wrappers=('gymnasium.wrappers:NoSuchWrapper',)"],
     "config field 'env_wrappers': cannot load 'gymnasium.wrappers:NoSuchWrapper'"),
])
def test_bad_user_env(tmp_path, args, must_mention):
  """A user's env named module:EnvId (examples/mypkg on the PYTHONPATH)."""
  run_dir = tmp_path / "run"
  _run_and_check(helpers.train_command(str(run_dir), *args), must_mention,
                 {"XLA_FLAGS": "--xla_force_host_platform_device_count=1",
                  "PYTHONPATH": "examples"})
  assert not run_dir.exists()


def test_a_dict_observation_space_is_refused_with_the_wrapper_to_use():
  with pytest.raises(ValueError, match="FlattenObservation"):
    envs.env_spec(_dict_env_id())
  # With the wrapper it names, the same env works.
  spec = envs.env_spec(_dict_env_id(), wrappers=("gymnasium.wrappers:FlattenObservation",))
  assert spec.obs_shape == (5,) and spec.num_actions == 2


def _dict_env_id() -> str:
  import gymnasium as gym
  import numpy as np

  class DictObs(gym.Env):
    observation_space = gym.spaces.Dict({"a": gym.spaces.Box(0, 1, (3,), np.float32),
                                         "b": gym.spaces.Discrete(2)})
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
      return self.observation_space.sample(), {}

  if "test/DictObs-v0" not in gym.registry:
    gym.register("test/DictObs-v0", entry_point=DictObs)
  return "test/DictObs-v0"


@pytest.mark.parametrize("action_space, must_mention", [
    ("multi_discrete", "needs a Discrete or Box action space"),
    ("unbounded_box", "needs finite Box action bounds"),
    ("matrix_box", "needs a Box action space of rank 1"),
])
def test_action_spaces_podmeta_cannot_act_in_are_refused(action_space, must_mention):
  import gymnasium as gym
  import numpy as np
  spaces = {"multi_discrete": gym.spaces.MultiDiscrete([2, 3]),
            "unbounded_box": gym.spaces.Box(-np.inf, np.inf, (2,), np.float32),
            "matrix_box": gym.spaces.Box(-1.0, 1.0, (2, 2), np.float32)}

  class Env(gym.Env):
    observation_space = gym.spaces.Box(0, 1, (3,), np.float32)

    def __init__(self, kind):
      self.action_space = spaces[kind]

  env_id = "test/ActionSpaces-v0"
  if env_id not in gym.registry:
    gym.register(env_id, entry_point=Env)
  with pytest.raises(ValueError, match=must_mention) as raised:
    envs.env_spec(env_id, {"kind": action_space})
  assert env_id in str(raised.value)


def test_a_pods_meta_checkpoint_is_checked_against_the_pods_batch(tmp_path):
  """An online BMG checkpoint's meta ring holds the whole pod's batch: a local_mp
  launcher (which never joins the pod) and `evaluate` size it by the pod, not by
  this process's jax.process_count() of 1."""
  from launch import evaluate
  from launch.configs import cartpole_bmg
  config = Config.from_mapping(cartpole_bmg.get_config().to_dict())
  assert config.meta.target_data == "online"
  spec = envs.env_spec(config.env_id)
  _, state = builder.make_update_and_state(config, spec, axis_name=None, num_processes=2)
  _, one_host = builder.make_update_and_state(config, spec, axis_name=None, num_processes=1)
  shapes = lambda tree: [np.shape(x) for x in jax.tree.leaves(tree)]
  assert shapes(state.meta.ring) != shapes(one_host.meta.ring)
  run_dir = str(tmp_path / "run")
  builder.write_config(config, run_dir)
  ckpt = builder.make_checkpointer(config, run_dir)
  ckpt.save(7, state, {"env_steps": 0, "learner_steps": 7, "num_processes": 2})
  ckpt.close()
  before = _tree_digest(run_dir)
  builder.preflight(config, run_dir, num_devices=1, num_processes=2)
  with pytest.raises(ValueError, match="does not match"):
    builder.preflight(config, run_dir, num_devices=1, num_processes=1)
  _, params, step = evaluate.load(run_dir)
  assert step == 7
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(a, b)
  assert _tree_digest(run_dir) == before
