"""Injected faults end in a clear state (issue 12).

Each test launches `python -m launch.train --lp_launch_type=local_mp` as a
user would, kills a process of it with SIGKILL, and asserts the exit code,
the one error line, summary.json and that no process is left behind.
"""

import json
import os
import signal
import time

import jax
import pytest

from tests import helpers

FAST = ["--lp_launch_type=local_mp", "--config.unroll_length=10", "--config.envs_per_actor=8",
        "--config.batch_size=16", "--config.eval_every_seconds=2", "--config.eval_episodes=2",
        "--config.log_every_seconds=1"]
ONE_DEVICE = {"XLA_FLAGS": "--xla_force_host_platform_device_count=1"}


def _node_pids(run_dir, timeout=120.0):
  path = os.path.join(run_dir, "nodes.json")
  deadline = time.time() + timeout
  while time.time() < deadline:
    try:
      with open(path) as f:
        return json.load(f)
    except (OSError, ValueError):
      time.sleep(0.2)
  raise AssertionError(f"no {path}")


def _wait_for_checkpoint(run_dir, proc, timeout=180.0):
  ckpt_dir = os.path.join(run_dir, "checkpoints")
  deadline = time.time() + timeout
  while time.time() < deadline and proc.poll() is None:
    if os.path.isdir(ckpt_dir) and any(d.isdigit() for d in os.listdir(ckpt_dir)):
      return
    time.sleep(0.2)
  raise AssertionError("no checkpoint was written")


def _start_long_run(run_dir, *args):
  proc = helpers.start(helpers.train_command(run_dir, "--num_actors=2", *FAST,
                                             "--config.max_env_steps=100000000", *args),
                       env_overrides=ONE_DEVICE)
  helpers.assert_trains(proc, run_dir, 3, 180)
  return proc


def _restorable(run_dir, step):
  from podmeta import builder
  import envs
  from podmeta.config import Config
  with open(os.path.join(run_dir, "config.json")) as f:
    config = Config.from_mapping(json.load(f))
  _, template = builder.make_update_and_state(config, envs.env_spec(config.env_id))
  checkpointer = builder.make_checkpointer(config, run_dir)
  try:
    state, counters = checkpointer.restore_latest(template)
  finally:
    checkpointer.close()
  assert checkpointer.latest_step() == step
  assert counters["learner_steps"] == step
  assert jax.tree.structure(state) == jax.tree.structure(template)


@pytest.mark.parametrize("node", ["learner", "replay"])
def test_a_killed_learner_or_replay_stops_the_program_with_an_error(tmp_path, node):
  run_dir = str(tmp_path / "run")
  proc = _start_long_run(run_dir)
  _wait_for_checkpoint(run_dir, proc)
  os.kill(_node_pids(run_dir)[node], signal.SIGKILL)
  killed_at = time.time()
  code, out, left = helpers.finish(proc, timeout=90)
  assert time.time() - killed_at < 30 + 5, "the program took too long to stop"
  assert not left, f"processes left behind: {[p.cmdline() for p in left]}"
  assert code == 1, out[-5000:]
  assert f"podmeta: error: {node} died (killed by SIGKILL)" in out
  assert "run finished" not in out
  s = helpers.summary(run_dir)
  assert s["exit_reason"] == f"{node}_failed"
  assert s["error"] == f"{node} died (killed by SIGKILL)"
  assert s["latest_checkpoint_step"] is not None and s["env_steps"] > 0
  _restorable(run_dir, s["latest_checkpoint_step"])


def test_a_killed_actor_is_restarted_and_counted(tmp_path):
  run_dir = str(tmp_path / "run")
  # A budget that outlasts the kill and the restart on a fast machine too.
  proc = helpers.start(helpers.train_command(run_dir, "--num_actors=2", *FAST,
                                             "--config.max_env_steps=150000"),
                       env_overrides=ONE_DEVICE)
  helpers.assert_trains(proc, run_dir, 3, 180)
  first_pid = _node_pids(run_dir)["actor_0"]
  os.kill(first_pid, signal.SIGKILL)
  code, out, left = helpers.finish(proc, timeout=240)
  assert not left, f"processes left behind: {[p.cmdline() for p in left]}"
  assert code == 0, out[-5000:]
  assert "actor_0 died (killed by SIGKILL); restarting it (restart 1 of at most 10)" in out
  s = helpers.summary(run_dir)
  assert s["exit_reason"] == "max_env_steps" and s["env_steps"] >= 150000
  assert s["actors_lost"] == 1 and s["actor_restarts"] == 1
  assert _node_pids(run_dir)["actor_0"] != first_pid


@pytest.mark.parametrize("node, error", [
    ("actor", "every actor died (the last: actor, killed by SIGKILL) and no restarts are left"),
    ("evaluator", "evaluator died (killed by SIGKILL) and no restarts are left"),
])
def test_losing_every_node_of_a_group_with_no_restarts_left_is_an_error(tmp_path, node, error):
  run_dir = str(tmp_path / "run")
  proc = helpers.start(helpers.train_command(run_dir, "--num_actors=1", *FAST,
                                             "--config.max_env_steps=100000000",
                                             "--config.actor_restarts=0"),
                       env_overrides=ONE_DEVICE)
  helpers.assert_trains(proc, run_dir, 3, 180)
  os.kill(_node_pids(run_dir)[node], signal.SIGKILL)
  code, out, left = helpers.finish(proc, timeout=90)
  assert not left, f"processes left behind: {[p.cmdline() for p in left]}"
  assert code == 1, out[-5000:]
  assert f"podmeta: error: {error}" in out
  assert "run finished" not in out
  s = helpers.summary(run_dir)
  # The learner was stopped, wrote its summary and final checkpoint; the
  # supervisor's verdict replaced its exit reason.
  assert s["exit_reason"] == f"{node}_failed"
  assert s["actors_lost"] == (node == "actor")
  assert s["latest_checkpoint_step"] == s["learner_steps"] > 0


def test_a_failing_node_ends_a_local_mt_run_with_an_error_naming_it(tmp_path):
  """local_mt: nodes are threads; an actor whose environment keeps failing
  raises, and the launcher ends the run with its one line."""
  run_dir = str(tmp_path / "run")
  code, out, left = helpers.run(helpers.train_command(
      run_dir, "--num_actors=1", "--lp_launch_type=local_mt", *FAST[1:],
      "--config.env_id=podmeta/BrokenCartPole-v1", "--config.max_consecutive_env_errors=3"),
      timeout=180, env_overrides=ONE_DEVICE)
  assert not left, f"processes left behind: {[p.cmdline() for p in left]}"
  assert code == 1, out[-5000:]
  assert ("podmeta: error: actor failed (RuntimeError: the environment failed 3 times in a "
          "row (max_consecutive_env_errors=3); the last: EnvCrash: injected") in out
  assert "EnvCrash" in out.split("podmeta: error:")[0]  # the env's traceback came first
  assert "run finished" not in out
  s = helpers.summary(run_dir)
  assert s["exit_reason"] == "actor_failed" and s["error"].startswith("actor failed")


@pytest.mark.parametrize("build, role", [("build_actor", "actor"),
                                         ("build_evaluator", "evaluator")])
def test_a_node_that_fails_while_it_is_built_is_named_too(build, role):
  """local_mt re-raises a node's first failure and names the node by the
  exception's `podmeta_node`: one raised while building the node (here, a
  learner handle without the calls the node reports through) carries it too."""
  from podmeta import builder
  from podmeta.config import Config
  args = (Config(), 0, None, None, object()) if role == "actor" else (Config(), None, object())
  with pytest.raises(AttributeError) as e:
    getattr(builder, build)(*args)
  assert e.value.podmeta_node == role


def test_the_listening_sockets_of_a_local_run_are_one_per_server_node(tmp_path):
  """What a local run opens to the network, as README's "Open ports" says: one
  port per node with a server (Reverb for the replay, Courier for the others),
  on the wildcard address (neither library takes an address to bind), and
  nothing else, the launcher included."""
  import psutil
  run_dir = str(tmp_path / "run")
  proc = _start_long_run(run_dir)
  try:
    nodes = _node_pids(run_dir)
    assert set(nodes) == {"replay", "learner", "actor_0", "actor_1", "evaluator"}, nodes

    def listening(pid):
      return [(c.laddr.ip, c.laddr.port) for c in psutil.Process(pid).net_connections("inet")
              if c.status == psutil.CONN_LISTEN]
    assert listening(proc.pid) == []
    # Training needs only one actor's data, so on a loaded machine another node
    # can still be importing when the learner steps: wait for each to listen.
    deadline = time.time() + 90
    while True:
      ports = {name: listening(pid) for name, pid in nodes.items()}
      if all(ports.values()) or time.time() > deadline:
        break
      time.sleep(0.5)
    for name, sockets in ports.items():
      assert len(sockets) == 1 and sockets[0][0] in ("::", "0.0.0.0"), (name, sockets)
    others = [c for c in psutil.Process(proc.pid).children(recursive=True)
              if c.pid not in nodes.values()]
    for child in others:  # anything else the launcher started must not listen
      assert listening(child.pid) == [], child.cmdline()
    assert len({s[0][1] for s in ports.values()}) == len(nodes)
  finally:
    proc.send_signal(signal.SIGTERM)
    code, out, left = helpers.finish(proc, timeout=120)
  assert code == 0 and not left, out[-3000:]


def test_no_node_outlives_a_killed_launcher(tmp_path):
  run_dir = str(tmp_path / "run")
  proc = _start_long_run(run_dir)
  nodes = _node_pids(run_dir)
  assert set(nodes) == {"replay", "learner", "actor_0", "actor_1", "evaluator"}
  proc.kill()  # SIGKILL: what the OOM killer or a lost ssh session does
  proc.wait()
  deadline = time.time() + 30
  left = helpers.session_processes(proc.pid)
  while left and time.time() < deadline:
    time.sleep(0.5)
    left = helpers.session_processes(proc.pid)
  for p in left:
    p.kill()
  assert not left, f"processes outlived the launcher: {[p.cmdline() for p in left]}"
  # The nodes were told to stop (SIGTERM), not killed: the learner wrote its
  # final checkpoint and summary.
  s = helpers.summary(run_dir)
  assert s["exit_reason"] == "stopped"
  assert s["latest_checkpoint_step"] == s["learner_steps"] > 0


class _FullDisk(Exception):
  pass


def test_a_failing_final_save_does_not_hide_the_error_that_ended_the_learner(tmp_path, caplog):
  """In-process: a learner step that raises, then a final checkpoint that cannot be written."""
  import threading
  import envs
  from podmeta import builder
  from podmeta import checkpointing
  from podmeta.config import Config
  from podmeta.learner_node import Budget, LearnerNode

  class Checkpointer(checkpointing.Checkpointer):
    def save(self, *args, **kwargs):
      raise _FullDisk("no space left on device")

  class Prefetcher:  # hands out a batch of the wrong shape: the update raises
    def get(self, timeout):
      del timeout
      return helpers.random_batch(spec, 4, 3, seed=0), 0

    def close(self):
      pass

  config = Config(batch_size=8, unroll_length=5)
  spec = envs.env_spec(config.env_id)
  node = LearnerNode(builder.make_learner(config, spec, devices=jax.devices()[:1]), Prefetcher,
                     Checkpointer(str(tmp_path / "ckpt")), str(tmp_path), Budget(max_env_steps=10),
                     env_steps_per_batch=40, stop_event=threading.Event())
  # The update's own error reaches the caller, not the failed save's.
  with caplog.at_level("ERROR"), pytest.raises(ValueError, match="inconsistent sizes"):
    node.run()
  assert "could not write the final checkpoint" in caplog.text
  assert helpers.summary(str(tmp_path))["exit_reason"] == "error"


def test_after_a_sigkill_of_the_whole_program_a_resume_continues_from_the_checkpoint(tmp_path):
  from podmeta import checkpointing
  run_dir = str(tmp_path / "run")
  # local_mt: every node is a thread of the launcher, so one SIGKILL takes all.
  proc = helpers.start(helpers.train_command(
      run_dir, "--num_actors=1", *FAST[1:], "--lp_launch_type=local_mt",
      "--config.max_env_steps=100000000"), env_overrides=ONE_DEVICE)
  _wait_for_checkpoint(run_dir, proc)
  proc.kill()
  proc.wait()
  step, counters = checkpointing.read_latest_counters(os.path.join(run_dir, "checkpoints"))
  assert step is not None and counters["env_steps"] > 0
  code, out, left = helpers.run(helpers.train_command(
      run_dir, "--num_actors=1", *FAST[1:], "--lp_launch_type=local_mt",
      f"--config.max_env_steps={counters['env_steps'] + 20000}"), timeout=240,
      env_overrides=ONE_DEVICE)
  assert code == 0, out[-5000:]
  s = helpers.summary(run_dir)
  assert s["resumed_from_learner_steps"] == step
  assert s["resumed_from_env_steps"] == counters["env_steps"]
  assert s["learner_steps"] > step and s["env_steps"] >= counters["env_steps"] + 20000
  assert s["episodes"] > counters["episodes"]
