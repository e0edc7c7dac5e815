"""Inference on acting devices (Podracer's Sebulba): actor threads in the learner's process.

On the suite's 8 forced CPU devices the same code path runs as on an
accelerator: the policy on the actors' devices, the learner pmapped over its
own, parameters copied device to device.
"""

import json
import os

import jax
import pytest
import reverb

from podmeta import builder
from podmeta.config import Config, device_assignment
from tests import helpers


def test_devices_are_split_between_acting_and_learning():
  # Defaults: the actors take the last device, the learner the rest.
  assert device_assignment("accelerator", (), (), 8) == ((7,), tuple(range(7)))
  # One device: they share it.
  assert device_assignment("accelerator", (), (), 1) == ((0,), (0,))
  assert device_assignment("accelerator", (6, 7), (0, 1), 8) == ((6, 7), (0, 1))
  assert device_assignment("accelerator", (2,), (), 4) == ((2,), (0, 1, 3))
  # CPU inference: the learner has them all.
  assert device_assignment("cpu", (), (), 8) == ((), tuple(range(8)))
  with pytest.raises(ValueError, match="'actor_device_ids' names a device this process does "
                                       r"not have \(it has 8; got \(8,\)\)"):
    device_assignment("accelerator", (8,), (), 8)
  with pytest.raises(ValueError, match="'learner_device_ids'"):
    Config(inference="cpu", learner_device_ids=(0,))
  with pytest.raises(ValueError, match="'actor_device_ids' must be distinct"):
    Config(inference="accelerator", actor_device_ids=(1, 1))
  with pytest.raises(ValueError, match="'inference' must be one of"):
    Config(inference="gpu")


def test_actor_threads_act_on_their_devices_and_feed_the_learner(tmp_path):
  assert jax.local_device_count() == 8, "needs XLA_FLAGS=--xla_force_host_platform_device_count=8"
  devices = jax.local_devices()
  # A queue of 8 unrolls for 20 steps: the actors must act (and refresh) after
  # the learner's first steps, not only fill the queue before them.
  config = Config(num_actors=3, envs_per_actor=4, unroll_length=5, batch_size=4,
                  replay_max_size=8, min_replay_size=4, max_learner_steps=20, eval_episodes=0,
                  log_every_seconds=1.0, variable_update_period=2, inference="accelerator",
                  actor_device_ids=(6, 7), learner_device_ids=(0, 1))
  server = reverb.Server(builder.make_tables(config, builder.env_spec(config)), port=None)
  try:
    node = builder.build_learner_node(config, str(tmp_path),
                                      reverb.Client(f"localhost:{server.port}"))
    assert node._learner.devices == devices[:2]
    actors = node._actor_threads._actors
    # Built, they have asked for nothing yet: each fetches its first
    # parameters when it runs (onto its device, checked below).
    assert all(a._variables.params is None for a in actors)
    node.run()
    assert not node._actor_threads.running  # stopped with the learner's loop
  finally:
    server.stop()
  with open(tmp_path / "summary.json") as f:
    s = json.load(f)
  assert s["exit_reason"] == "max_learner_steps" and s["learner_steps"] == 20
  # The steps trained on the actors' unrolls (20 x 4 unrolls x 5 steps; the
  # actors report every 0.5 s, so the last reports may miss the count).
  assert s["env_steps"] >= 10 * 4 * 5
  # Spread over the acting devices (6, 7, 6): each actor's parameters, refreshed
  # to a later version, are on its own.
  for a, device in zip(actors, [devices[6], devices[7], devices[6]]):
    assert {d for leaf in jax.tree.leaves(a._variables.params) for d in leaf.devices()} == {device}
    assert a._variables.version > 0
  for i in range(3):
    assert os.path.exists(tmp_path / "logs" / f"actor_{i}.csv")


def test_envpool_cartpole_learns_with_inference_on_an_acting_device(tmp_path):
  """Sebulba's arrangement end to end: EnvPool stepped by actor threads of the
  learner's process, the policy on device 7, the learner on device 0."""
  run_dir = str(tmp_path / "run")
  code, out, left = helpers.run(
      helpers.train_command(run_dir, "--config=launch/configs/cartpole_impala.py",
                            "--config.env_backend=envpool", "--config.inference=accelerator",
                            "--config.actor_device_ids=(7,)", "--config.learner_device_ids=(0,)",
                            "--config.max_env_steps=300000", "--config.eval_every_seconds=5"),
      timeout=300)
  assert code == 0, out[-5000:]
  assert not left, f"processes left behind: {[p.cmdline() for p in left]}"
  s = helpers.summary(run_dir)
  assert s["exit_reason"] == "max_env_steps"
  assert s["episode_return_mean"] >= 150, s
  with open(os.path.join(run_dir, "config.json")) as f:
    assert json.load(f)["inference"] == "accelerator"
