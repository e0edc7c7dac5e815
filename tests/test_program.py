"""Real launches of the Launchpad program: budgets, signals, resume, bad input.

Each test runs `python -m launch.train` as a user would, in its own session,
and asserts that no process of that session is left when the launcher exits.
"""

import os
import signal

import numpy as np
import pytest

from tests import helpers

# Small, fast runs: these test plumbing, not learning.
FAST = ["--config.max_env_steps=40000", "--config.unroll_length=10", "--config.envs_per_actor=8", "--config.batch_size=16",
        "--config.eval_every_seconds=2", "--config.eval_episodes=2",
        "--config.log_every_seconds=1"]
ONE_DEVICE = {"XLA_FLAGS": "--xla_force_host_platform_device_count=1"}


# The last one's environment raises now and then (envs/faulty.py): the actors
# reset it, count it, and the run goes on.
@pytest.mark.parametrize("launch_type, replay, env_id", [
    ("local_mt", "queue", "CartPole-v1"), ("local_mp", "queue", "CartPole-v1"),
    ("local_mt", "uniform", "podmeta/FaultyCartPole-v1")])
def test_launch_reaches_budget_and_stops_cleanly(tmp_path, launch_type, replay, env_id):
  run_dir = str(tmp_path / "run")
  # In local_mp, actors 0 and 1 share a process (threads), actor 2 has its own.
  per_node = 2 if launch_type == "local_mp" else 1
  code, out, left = helpers.run(
      helpers.train_command(run_dir, f"--lp_launch_type={launch_type}", "--num_actors=3", *FAST,
                            f"--config.replay={replay}", "--config.samples_per_insert=2.0",
                            f"--config.actors_per_node={per_node}", f"--config.env_id={env_id}"),
      timeout=240, env_overrides=ONE_DEVICE)
  assert code == 0, out[-5000:]
  assert not left, f"processes left behind: {[p.cmdline() for p in left]}"
  s = helpers.summary(run_dir)
  assert s["exit_reason"] == "max_env_steps"
  assert s["env_steps"] >= 40000
  assert s["learner_steps"] > 0
  assert s["episode_return_mean"] > 0
  assert s["eval_return_mean"] > 0  # the learner waits for a first evaluation
  # 0.2% of 40,000 env steps: about 80 failures (none without injection).
  assert (s["env_errors"] > 10) if "Faulty" in env_id else (s["env_errors"] == 0), s["env_errors"]
  for name in ["config.json", "learning_curve.png", "logs/learner.csv", "logs/actor_0.csv",
               "logs/actor_2.csv", "logs/evaluator.csv"]:
    assert os.path.exists(os.path.join(run_dir, name)), name
  assert any(f.startswith("events.out") for f in os.listdir(os.path.join(run_dir, "tb", "learner")))
  assert s["latest_checkpoint_step"] == s["learner_steps"]
  assert f"results in {run_dir}" in out
  # The replay server's own counts: the queue hands out each unroll once,
  # uniform replay about samples_per_insert times.
  # Sampled but not yet trained on: at most the prefetch queue (2 batches),
  # one batch in the reader thread, one being assembled from items (the
  # reader's part-built batch and what tf.data buffers), and the dataset's
  # in-flight samples: 2 batches per Reverb worker, one worker for a queue,
  # one per CPU otherwise. (A clean-clone run saw 6 batches with a queue.)
  workers = 1 if replay == "queue" else os.cpu_count()
  in_flight = s["replay_sampled_unrolls"] - s["learner_steps"] * 16
  assert 0 <= in_flight <= (4 + 2 * workers) * 16, in_flight
  ratio = s["replay_sampled_unrolls"] / s["replay_inserted_unrolls"]
  if replay == "queue":
    assert 0.5 < ratio <= 1.0, ratio
  else:
    assert 1.5 < ratio < 2.3, ratio


def test_bmg_program_meta_learns_and_logs_its_hyperparameters(tmp_path):
  # local_mp only: the learner's meta-update is the same code in either launch type.
  from podmeta import loggers
  run_dir = str(tmp_path / "run")
  code, out, left = helpers.run(
      helpers.train_command(run_dir, "--config=launch/configs/cartpole_bmg.py",
                            "--lp_launch_type=local_mp", "--num_actors=2", *FAST,
                            "--config.max_env_steps=60000"),
      timeout=240, env_overrides={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
  assert code == 0, out[-5000:]
  assert not left, f"processes left behind: {[p.cmdline() for p in left]}"
  s = helpers.summary(run_dir)
  assert s["exit_reason"] == "max_env_steps" and s["learner_steps"] > 50
  log = loggers.read_csv(os.path.join(run_dir, "logs", "learner.csv"))
  trained = log["learner_steps"] > 0  # a row logged before the first step has no metrics
  log = {k: v[trained] for k, v in log.items()}
  for key in ["meta/entropy_cost", "meta/learning_rate_scale", "meta_loss", "meta_grad_norm"]:
    assert key in log and np.all(np.isfinite(log[key])), key
  assert np.all((log["meta/entropy_cost"] > 0) & (log["meta/entropy_cost"] < 0.05))
  assert np.all((log["meta/learning_rate_scale"] > 0.25) & (log["meta/learning_rate_scale"] < 2))
  final = s["meta_learned_hyperparameters"]
  assert set(final) == {"entropy_cost", "learning_rate_scale"}
  # Started at 0.01 and 1.0: the meta-gradient moved them.
  assert abs(final["learning_rate_scale"] - 1.0) > 1e-3 or abs(final["entropy_cost"] - 0.01) > 1e-4
  assert np.all(np.isfinite(log["loss"]))
  tb_dir = os.path.join(run_dir, "tb", "learner")
  events = b"".join(open(os.path.join(tb_dir, f), "rb").read() for f in os.listdir(tb_dir))
  assert b"meta/entropy_cost" in events and b"meta_loss" in events
  assert os.path.getsize(os.path.join(run_dir, "learning_curve.png")) > 10_000
  assert "meta/learning_rate_scale=" in out  # the progress line shows them too


@pytest.mark.parametrize("launch_type, sig", [("local_mt", signal.SIGTERM),
                                              ("local_mp", signal.SIGINT)])
def test_signal_stops_every_node_and_writes_final_checkpoint(tmp_path, launch_type, sig):
  run_dir = str(tmp_path / "run")
  proc = helpers.start(
      helpers.train_command(run_dir, f"--lp_launch_type={launch_type}", "--num_actors=2",
                            *FAST, "--config.max_env_steps=100000000"),
      env_overrides=ONE_DEVICE)
  helpers.assert_trains(proc, run_dir, 5, 180)
  # Signal the whole process group, as a terminal's Ctrl-C does.
  os.killpg(proc.pid, sig) if sig == signal.SIGINT else proc.send_signal(sig)
  code, out, left = helpers.finish(proc, timeout=60)
  assert not left, f"processes left behind: {[p.cmdline() for p in left]}"
  assert code == 0, out[-5000:]
  s = helpers.summary(run_dir)
  assert s["exit_reason"] == "stopped"
  assert s["latest_checkpoint_step"] == s["learner_steps"] > 0


def test_resume_continues_counters_and_parameters(tmp_path):
  import types
  import jax
  from podmeta import builder
  from podmeta.config import Config
  run_dir = str(tmp_path / "run")
  code, out, _ = helpers.run(helpers.train_command(run_dir, "--num_actors=1", *FAST),
                             timeout=240, env_overrides=ONE_DEVICE)
  assert code == 0, out[-5000:]
  first = helpers.summary(run_dir)
  ckpt_dir = os.path.join(run_dir, "checkpoints")
  saved_first = _params_at(ckpt_dir, first["latest_checkpoint_step"])

  # The learner node built for a resumed run holds the checkpoint's
  # parameters and counters.
  config = Config.from_mapping(_load_json(os.path.join(run_dir, "config.json")))
  node = builder.build_learner_node(config, run_dir,
                                    types.SimpleNamespace(server_address="unused"))
  version, params = node.get_variables()
  assert version == first["learner_steps"]
  for a, b in zip(jax.tree.leaves(saved_first["params"]), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)
  assert node._run.env_steps == first["env_steps"]
  del node

  code, out, _ = helpers.run(
      helpers.train_command(run_dir, "--num_actors=1", *FAST, "--config.max_env_steps=80000"),
      timeout=240, env_overrides=ONE_DEVICE)
  assert code == 0, out[-5000:]
  second = helpers.summary(run_dir)
  assert second["resumed_from_env_steps"] == first["env_steps"]
  assert second["resumed_from_learner_steps"] == first["learner_steps"]
  assert second["env_steps"] >= 80000
  assert second["learner_steps"] > first["learner_steps"]
  assert second["episodes"] > first["episodes"]
  # The resumed run kept the first run's final checkpoint intact.
  kept = _params_at(ckpt_dir, first["latest_checkpoint_step"])
  for a, b in zip(jax.tree.leaves(saved_first), jax.tree.leaves(kept)):
    np.testing.assert_array_equal(a, b)

  # max_seconds counts the whole run, as the step budgets do: a budget the
  # earlier launches have spent already ends this one before any update.
  assert second["wall_seconds_total"] > second["wall_seconds"] > 1.0
  code, out, _ = helpers.run(
      helpers.train_command(run_dir, "--num_actors=1", *FAST, "--config.max_env_steps=0",
                            "--config.max_seconds=1"),
      timeout=240, env_overrides=ONE_DEVICE)
  assert code == 0, out[-5000:]
  third = helpers.summary(run_dir)
  assert third["exit_reason"] == "max_seconds"
  assert third["learner_steps"] == second["learner_steps"]


def _load_json(path):
  import json
  with open(path) as f:
    return json.load(f)


def _params_at(ckpt_dir, step):
  import orbax.checkpoint as ocp
  with ocp.CheckpointManager(ckpt_dir, item_names=("state", "counters")) as mngr:
    restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  return restored["state"]


def test_local_mp_launchers_own_gpu_client_would_not_preallocate(monkeypatch):
  # The launcher's checks open a JAX backend in its own process; on a GPU host that
  # client must not reserve the memory the learner's process needs. What jaxlib
  # builds a GPU client from is checked here (no GPU in CI); the nodes started
  # afterwards see the environment as it was.
  from jaxlib import xla_client
  from podmeta import supervisor
  monkeypatch.delenv("XLA_PYTHON_CLIENT_PREALLOCATE", raising=False)
  assert "preallocate" not in xla_client.generate_pjrt_gpu_plugin_options()
  with supervisor.launcher_without_preallocation():
    assert xla_client.generate_pjrt_gpu_plugin_options()["preallocate"] is False
  assert "XLA_PYTHON_CLIENT_PREALLOCATE" not in os.environ
  monkeypatch.setenv("XLA_PYTHON_CLIENT_PREALLOCATE", "true")  # a user's own choice wins
  with supervisor.launcher_without_preallocation():
    assert xla_client.generate_pjrt_gpu_plugin_options()["preallocate"] is True
  assert os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] == "true"
