"""A 2-host pod simulated on this machine: two processes, 2 CPU devices each, gloo collectives.

Each process runs `python -m launch.train --pod_*` as a pod host would: its own
actors and replay, one learner pmapped over all 4 devices. Identical parameter
digests after training prove the gradients were averaged across the hosts
(the hosts see different data).
"""

import os
import socket

from tests import helpers

TWO_DEVICES = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
SMALL = ["--num_actors=1", "--config.envs_per_actor=8", "--config.batch_size=16",
         "--config.unroll_length=10", "--config.max_env_steps=0", "--config.eval_episodes=2",
         "--config.eval_every_seconds=2", "--config.log_every_seconds=1"]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _run_pod(run_dir, learner_steps):
  port = _free_port()
  procs = [helpers.start(helpers.train_command(
      run_dir, f"--pod_coordinator=localhost:{port}", "--pod_num_processes=2",
      f"--pod_process_id={i}", *SMALL, f"--config.max_learner_steps={learner_steps}"),
      env_overrides=TWO_DEVICES) for i in range(2)]
  results = [helpers.finish(p, timeout=240) for p in procs]
  for code, out, left in results:
    assert code == 0, out[-5000:]
    assert not left, f"processes left behind: {[p.cmdline() for p in left]}"
  return [helpers.summary(run_dir), helpers.summary(os.path.join(run_dir, "hosts", "1"))]


def _start_long_pod(run_dir):
  """Two hosts training with no budget in sight, once the learner has stepped."""
  port = _free_port()
  procs = [helpers.start(helpers.train_command(
      run_dir, f"--pod_coordinator=localhost:{port}", "--pod_num_processes=2",
      f"--pod_process_id={i}", *SMALL, "--config.max_learner_steps=100000"),
      env_overrides=TWO_DEVICES) for i in range(2)]
  assert helpers.wait_for_learner_steps(run_dir, 5, 180, procs[0]), "the pod never trained"
  return procs


def _wait_for_checkpoint(run_dir, timeout=60.0):
  """Process 0's early checkpoint (10 s into training): what a lost host leaves."""
  import time
  checkpoints = os.path.join(run_dir, "checkpoints")
  deadline = time.time() + timeout
  while time.time() < deadline and not (
      os.path.isdir(checkpoints) and any(d.isdigit() for d in os.listdir(checkpoints))):
    time.sleep(0.2)
  return checkpoints


def test_two_host_pod_trains_identical_parameters_and_resumes(tmp_path):
  run_dir = str(tmp_path / "run")
  host0, host1 = _run_pod(run_dir, 20)
  for s in (host0, host1):
    assert s["exit_reason"] == "max_learner_steps"
    assert s["learner_steps"] == 20
    assert s["pod"]["num_processes"] == 2
    assert s["env_steps"] > 0  # each host's own actors fed its own learner
  assert host0["params_sha256"] == host1["params_sha256"]
  assert {host0["pod"]["process_id"], host1["pod"]["process_id"]} == {0, 1}
  # Checkpoints: written once, by process 0.
  assert host0["latest_checkpoint_step"] == 20 and host1["latest_checkpoint_step"] is None
  assert not os.path.exists(os.path.join(run_dir, "hosts", "1", "checkpoints"))
  # Evaluation runs on process 0 only.
  assert host0["eval_return_mean"] is not None and host1["eval_return_mean"] is None

  # Resume: process 0 restores and hands the state to host 1.
  first_digest = host0["params_sha256"]
  host0, host1 = _run_pod(run_dir, 30)
  for s in (host0, host1):
    assert s["resumed_from_learner_steps"] == 20 and s["learner_steps"] == 30
  # Every host reports the pod's counters, resumed from the same point.
  assert host0["resumed_from_env_steps"] == host1["resumed_from_env_steps"] > 0
  assert host0["env_steps"] == host1["env_steps"] == host0["pod"]["env_steps"]
  assert host0["params_sha256"] == host1["params_sha256"] != first_digest
  assert host0["pod"]["env_steps"] >= host0["resumed_from_env_steps"]


def test_sigterm_on_one_host_stops_the_whole_pod(tmp_path):
  import signal
  run_dir = str(tmp_path / "run")
  procs = _start_long_pod(run_dir)
  procs[1].send_signal(signal.SIGTERM)
  results = [helpers.finish(p, timeout=120) for p in procs]
  for code, out, left in results:
    assert code == 0, out[-5000:]
    assert not left, f"processes left behind: {[p.cmdline() for p in left]}"
  host0 = helpers.summary(run_dir)
  host1 = helpers.summary(os.path.join(run_dir, "hosts", "1"))
  assert host1["exit_reason"] == "stopped"
  assert host0["exit_reason"] == "stopped_by_another_host"
  assert host0["learner_steps"] == host1["learner_steps"] >= 5
  assert host0["params_sha256"] == host1["params_sha256"]
  assert host0["latest_checkpoint_step"] == host0["learner_steps"]  # final checkpoint written


def test_a_killed_host_ends_the_others_with_an_error_naming_it(tmp_path):
  import signal
  import time
  run_dir = str(tmp_path / "run")
  procs = _start_long_pod(run_dir)
  _wait_for_checkpoint(run_dir)
  os.killpg(procs[1].pid, signal.SIGKILL)  # host 1 and everything on it
  killed_at = time.time()
  code, out, left = helpers.finish(procs[0], timeout=120)
  assert time.time() - killed_at < 60, "the surviving host took too long to stop"
  assert not left, f"processes left behind: {[p.cmdline() for p in left]}"
  assert code == 1, out[-5000:]
  assert "podmeta: error: pod process 1 lost (no heartbeat for 20 s)" in out
  assert "run finished" not in out
  s = helpers.summary(run_dir)
  assert s["exit_reason"] == "pod_host_lost" and s["lost_process"] == 1
  assert s["latest_checkpoint_step"] is not None  # the early checkpoint at least
  helpers.finish(procs[1], timeout=10)


def test_a_killed_process_0_ends_the_others_with_an_error_naming_it(tmp_path):
  """Process 0 hosts jax.distributed's coordination service: when it goes, JAX's
  client aborts every other host's program within a second, unnamed; the
  launcher watching that program names the lost host (podmeta.pod_host)."""
  import signal
  import time
  run_dir = str(tmp_path / "run")
  procs = _start_long_pod(run_dir)
  checkpoints = _wait_for_checkpoint(run_dir)
  os.killpg(procs[0].pid, signal.SIGKILL)
  killed_at = time.time()
  code, out, left = helpers.finish(procs[1], timeout=120)
  assert time.time() - killed_at < 60, "the surviving host took too long to stop"
  assert not left, f"processes left behind: {[p.cmdline() for p in left]}"
  assert code == 1, out[-5000:]
  last = out.strip().splitlines()[-1]
  assert last.startswith("podmeta: error: pod process 0 lost (its coordinator localhost:"), last
  assert "run finished" not in out
  s = helpers.summary(os.path.join(run_dir, "hosts", "1"))
  assert s["exit_reason"] == "pod_host_lost" and s["lost_process"] == 0
  # Process 0's newest checkpoint, written before it died, is what a resume uses.
  helpers.finish(procs[0], timeout=10)
  assert any(d.isdigit() for d in os.listdir(checkpoints))
