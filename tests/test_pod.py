"""A 2-host pod simulated on this machine: two processes, 2 CPU devices each, gloo collectives.

Each process runs `python -m launch.train --pod_*` as a pod host would: its own
actors and replay, one learner pmapped over all 4 devices. Identical parameter
digests after training prove the gradients were averaged across the hosts
(the hosts see different data).
"""

import os
import socket

import numpy as np

from tests import helpers

TWO_DEVICES = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
SMALL = ["--num_actors=1", "--config.envs_per_actor=8", "--config.batch_size=16",
         "--config.unroll_length=10", "--config.max_env_steps=0", "--config.eval_episodes=2",
         "--config.eval_every_seconds=2", "--config.log_every_seconds=1"]
# The local_mp pod's learning run: pod-wide env steps, and the mean training return both
# hosts' logs must reach in that time (random play: ~22; measured: 278 and 278 in the run
# whose end is described in the test).
_LEARN_STEPS, _LEARN_RETURN = 400_000, 150


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


def _start_long_pod(run_dir, launch_types=("local_mt", "local_mt")):
  """Two hosts training with no budget in sight, once the learner has stepped."""
  port = _free_port()
  procs = [helpers.start(helpers.train_command(
      run_dir, f"--pod_coordinator=localhost:{port}", "--pod_num_processes=2",
      f"--pod_process_id={i}", f"--lp_launch_type={launch_type}", *SMALL,
      "--config.max_learner_steps=100000"),
      env_overrides=TWO_DEVICES) for i, launch_type in enumerate(launch_types)]
  helpers.assert_trains(procs, run_dir, 5, 180)
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
    # Each host's replay was fed by its own actors (seeded apart: actor ids are
    # unique across the pod), so the hosts' learners saw different data.
    assert s["replay_inserted_unrolls"] > 0 and s["replay_sampled_unrolls"] > 0
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
  """The survivor runs local_mp: its learner's process finds the host lost and
  ends; its launcher reports that verdict (podmeta.pod_host.explain_learner_failure)."""
  import signal
  import time
  run_dir = str(tmp_path / "run")
  procs = _start_long_pod(run_dir, ("local_mp", "local_mt"))
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


def _environ(pid: int) -> dict:
  with open(f"/proc/{pid}/environ", "rb") as f:
    pairs = [item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item]
  return {k.decode(): v.decode(errors="replace") for k, v in pairs}


def test_two_local_mp_hosts_learn_cartpole_with_the_pods_counters(tmp_path):
  """Each host runs its learner in the process that joins the pod and its
  actors as processes of their own, on the CPU."""
  import json
  run_dir = str(tmp_path / "run")
  port = _free_port()
  procs = [helpers.start(helpers.train_command(
      run_dir, "--config=launch/configs/cartpole_impala.py", "--lp_launch_type=local_mp",
      f"--pod_coordinator=localhost:{port}", "--pod_num_processes=2", f"--pod_process_id={i}",
      "--num_actors=1", "--config.batch_size=16", f"--config.max_env_steps={_LEARN_STEPS}",
      "--config.eval_every_seconds=5"),
      # JAX's own platform choice (the suite's conftest pins cpu), which the
      # learner keeps and the other nodes do not.
      env_overrides={"XLA_FLAGS": "--xla_force_host_platform_device_count=1",
                     "JAX_PLATFORMS": ""})
      for i in range(2)]
  host_dirs = [run_dir, os.path.join(run_dir, "hosts", "1")]
  helpers.assert_trains(procs, run_dir, 5, 180)
  for host_dir in host_dirs:
    with open(os.path.join(host_dir, "nodes.json")) as f:
      pids = json.load(f)
    assert {"learner", "replay", "actor"} <= set(pids), pids
    assert _environ(pids["learner"]).get("JAX_PLATFORMS") == ""
    assert _environ(pids["actor"]).get("JAX_PLATFORMS") == "cpu"
  results = [helpers.finish(p, timeout=300) for p in procs]
  for code, out, left in results:
    assert code == 0, out[-5000:]
    assert not left, f"processes left behind: {[p.cmdline() for p in left]}"
  from podmeta import loggers
  host0, host1 = [helpers.summary(d) for d in host_dirs]
  for s, host_dir in zip((host0, host1), host_dirs):
    assert s["exit_reason"] == "max_env_steps"
    assert s["pod"]["num_processes"] == 2
    # Each host's actors learn from the pod's one policy. The best logged row, not
    # the last: with this config's entropy cost of 0 one clean-clone run learned to
    # 278 on both hosts and then collapsed (policy entropy 0.05) in its last 20k
    # steps per host, ending at 13.
    returns = loggers.read_csv(os.path.join(host_dir, "logs", "learner.csv"))[
        "episode_return_mean"]
    assert np.nanmax(returns) >= _LEARN_RETURN, returns
  # One set of counters: the budget is the pod's env steps, reached at the same step.
  assert host0["learner_steps"] == host1["learner_steps"]
  assert host0["env_steps"] == host1["env_steps"] == host0["pod"]["env_steps"] >= _LEARN_STEPS
  assert host0["params_sha256"] == host1["params_sha256"]
  assert host0["latest_checkpoint_step"] == host0["learner_steps"]
  assert host1["latest_checkpoint_step"] is None
  assert not os.path.exists(os.path.join(host_dirs[1], "checkpoints"))


def test_a_local_mp_hosts_launcher_names_the_lost_host_from_its_learners_death(tmp_path):
  """local_mp: the launcher outlives its learner's process, the one in the pod."""
  import json
  import time
  from podmeta import pod_host
  from podmeta import supervisor
  from podmeta.pod import PodSpec
  started_at = time.time() - 1.0  # file times are coarser than time.time()
  died = supervisor.Outcome(failed_node="learner", failure="learner died (killed by SIGABRT)",
                            actor_restarts=1)
  nobody = f"localhost:{_free_port()}"  # nothing listens there: process 0 is gone
  host1 = PodSpec(coordinator_address=nobody, num_processes=2, process_id=1)
  verdict = pod_host.explain_learner_failure(died, str(tmp_path), host1, started_at)
  assert (verdict.exit_reason, verdict.lost_process, verdict.actor_restarts) == (
      "pod_host_lost", 0, 1)
  assert verdict.failure == (f"pod process 0 lost (its coordinator {nobody} does not answer; "
                             "JAX's runtime ended this host's learner: learner died (killed by "
                             "SIGABRT))")
  # Process 0 itself: its learner died, whatever the coordinator says.
  host0 = PodSpec(coordinator_address=nobody, num_processes=2, process_id=0)
  assert pod_host.explain_learner_failure(died, str(tmp_path), host0, started_at) == died
  # The learner's own watchdog named the lost host in this run's summary.json.
  exited = supervisor.Outcome(failed_node="learner", failure="learner died (exit code 1)")
  with open(tmp_path / "summary.json", "w") as f:
    json.dump({"exit_reason": "pod_host_lost", "lost_process": 1,
               "error": "pod process 1 lost (no heartbeat for 20 s)"}, f)
  verdict = pod_host.explain_learner_failure(exited, str(tmp_path), host0, started_at)
  assert (verdict.exit_reason, verdict.lost_process, verdict.failure) == (
      "pod_host_lost", 1, "pod process 1 lost (no heartbeat for 20 s)")
  # A previous run's summary says nothing about this one.
  os.utime(tmp_path / "summary.json", (started_at - 60, started_at - 60))
  assert pod_host.explain_learner_failure(exited, str(tmp_path), host0, started_at) == exited
