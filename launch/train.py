r"""Trains podmeta: flags -> Config -> Launchpad program -> launch.

  python -m launch.train --config=launch/configs/cartpole_impala.py \
      --num_actors=4 --lp_launch_type=local_mt --run_dir=runs/cartpole \
      --config.unroll_length=40

Any config field can be overridden with --config.<field>=<value>. Re-running
with the same --run_dir resumes from its latest checkpoint.
"""

import atexit
import json
import os
import re
import sys
import tempfile
import time

from absl import app
from absl import flags
from absl import logging
import launchpad as lp  # defines --lp_launch_type and --lp_termination_notice_secs
from ml_collections import config_flags

from podmeta import supervisor

_DEFAULT_CONFIG = "launch/configs/cartpole_impala.py"
_CONFIG = None  # defined by run()
_NUM_ACTORS = flags.DEFINE_integer("num_actors", None, "Number of actors (overrides the config).")
_RUN_DIR = flags.DEFINE_string("run_dir", None,
                               "Run directory (default: runs/<config>-<time>). Reused to resume.")
_POD_COORDINATOR = flags.DEFINE_string(
    "pod_coordinator", None, "host:port of process 0, for a learner spread over several hosts.")
_POD_NUM_PROCESSES = flags.DEFINE_integer("pod_num_processes", 1,
                                          "Number of hosts (processes) in the pod.")
_POD_PROCESS_ID = flags.DEFINE_integer("pod_process_id", 0, "This host's index in the pod.")
_COMPILATION_CACHE = flags.DEFINE_string(
    "compilation_cache_dir", os.path.join(os.path.expanduser("~"), ".cache", "podmeta", "jax"),
    "JAX's persistent compilation cache, shared by every node process: a repeated run with "
    "the same shapes loads the compiled update and policy instead of compiling them; '' "
    "turns it off.")
_POD_TPU = flags.DEFINE_bool("pod_tpu", False,
                             "Join the TPU pod this VM belongs to (the TPU runtime provides "
                             "the coordinator, process count and index).")


def _fail(message: str) -> None:
  print(f"podmeta: error: {message}", file=sys.stderr)
  sys.exit(2)


def _parse_flags(argv):
  """absl flag parsing with a failure turned into one line and exit code 2."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    _fail(str(e).splitlines()[0])
  except Exception as e:  # pylint: disable=broad-except
    _config_error(e)


def _config_error(e: Exception) -> None:
  """Exits with one line for a config file or --config.<field> override that fails."""
  if isinstance(e, (AttributeError, KeyError)):
    # An unknown --config.<field> arrives as AttributeError("'field' Did you mean ...").
    text = str(e).replace("\\'", "'")
    name = re.search(r"'([A-Za-z0-9_.]+)'", text)
    hint = re.search(r'Did you mean "([A-Za-z0-9_.]+)"', text)
    message = f"unknown config field {name.group(1)!r}" if name else f"bad config override: {text}"
    _fail(message + (f" (did you mean {hint.group(1)!r}?)" if hint else ""))
  lines = [l.strip() for l in str(e).splitlines() if l.strip()]
  _fail(f"cannot load the config: {lines[-1] if lines else type(e).__name__}")


def _pod_spec():
  from podmeta.pod import PodSpec
  n, i = _POD_NUM_PROCESSES.value, _POD_PROCESS_ID.value
  if n < 1:
    raise ValueError(f"--pod_num_processes must be at least 1 (got {n})")
  if not 0 <= i < n:
    raise ValueError(f"--pod_process_id must be in [0, {n}) (got {i})")
  if n > 1 and not _POD_TPU.value and not _POD_COORDINATOR.value:
    raise ValueError("--pod_num_processes > 1 needs --pod_coordinator=host:port of process 0")
  return PodSpec(coordinator_address=_POD_COORDINATOR.value, num_processes=n, process_id=i,
                 tpu=_POD_TPU.value)


def _config_values() -> dict:
  # config_flags loads the file and applies overrides lazily, on first access.
  try:
    return _CONFIG.value.to_dict()
  except Exception as e:  # pylint: disable=broad-except
    _config_error(e)


def main(argv):
  if len(argv) > 1:
    _fail(f"unexpected arguments: {' '.join(argv[1:])}")
  # Start-up is measured from this process's start (the learner reports it);
  # a host process relaunched by pod_host keeps its parent's.
  import psutil  # pylint: disable=g-import-not-at-top
  from podmeta.core import LAUNCH_TIME_ENV  # pylint: disable=g-import-not-at-top
  os.environ.setdefault(LAUNCH_TIME_ENV, str(psutil.Process().create_time()))
  if _COMPILATION_CACHE.value:
    # Through the environment, so local_mp's node processes use it too (JAX
    # reads these when it is imported); a user's own settings win.
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _COMPILATION_CACHE.value)
    # The default (1 s) would leave out the policy, which compiles faster.
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
  from podmeta import builder
  from podmeta.config import Config
  from podmeta.logging_setup import quiet_third_party_logs

  quiet_third_party_logs()

  import jax
  from podmeta import pod as pod_lib
  from podmeta import pod_host

  try:
    values = _config_values()
    if _NUM_ACTORS.value is not None:
      values["num_actors"] = _NUM_ACTORS.value
    config = Config.from_mapping(values)
    pod = _pod_spec()
    launch_type = FLAGS.lp_launch_type or "local_mt"
    if launch_type not in ("local_mt", "local_mp"):
      raise ValueError(f"--lp_launch_type={launch_type} is not supported (use local_mt or local_mp)")
    if pod.tpu and launch_type == "local_mp":
      pod = pod_lib.resolve_tpu(pod)  # this launcher never joins: it asks the TPU runtime
    if pod.enabled and config.inference == "accelerator":
      # Its learner would pmap over this host's learner devices only.
      raise ValueError("config field 'inference' = 'accelerator' runs on one host; a pod "
                       "uses inference='cpu'")
    if pod.enabled and not _RUN_DIR.value:
      raise ValueError("a pod needs --run_dir, the same (shared) directory on every host")
    run_dir = _RUN_DIR.value or os.path.join(
        "runs", f"{os.path.splitext(os.path.basename(config_flags.get_config_filename(FLAGS['config']) or _DEFAULT_CONFIG))[0]}"
                f"-{time.strftime('%Y%m%d-%H%M%S')}")
    run_dir = os.path.abspath(run_dir)
    # In local_mp only the learner node's process joins the pod (so a lost
    # process 0 aborts that process, not this one, which reports it).
    joins_here = pod.enabled and launch_type == "local_mt"
    if joins_here and not pod_host.is_child():
      # The host's program runs in a child this process watches: see podmeta.pod_host.
      info = os.path.join(tempfile.gettempdir(), f"podmeta-pod-host-{os.getpid()}.json")
      try:
        code, error = pod_host.run([sys.executable, "-m", "launch.train", *sys.argv[1:]], info)
        if error:
          # A child killed mid-write (JAX's abort dumps every thread's stack)
          # can leave its last line unfinished: ours starts on a line of its own.
          print(f"\npodmeta: error: {error}", file=sys.stderr)
      finally:
        if os.path.exists(info):
          os.remove(info)
      _exit_now(code, run_atexit=False)
    if joins_here:
      pod_host.start_child()
      # Before anything touches a JAX backend.
      try:
        pod_lib.initialize(pod)
      except RuntimeError as e:  # jax.distributed could not join the pod
        raise ValueError(f"cannot join the pod: {str(e).strip().splitlines()[0]}") from e
    # A checkpoint's meta ring holds the whole pod's batch.
    num_processes = None if pod_lib.joined() else pod.num_processes
    if launch_type == "local_mp":
      with supervisor.launcher_without_preallocation():
        builder.preflight(config, run_dir, num_processes=num_processes)
    else:  # this process is the learner's: its client must preallocate as usual
      builder.preflight(config, run_dir, num_processes=num_processes)
  except ValueError as e:
    _fail(str(e))

  process_id = pod_lib.process_index(pod) if pod.enabled else 0
  host_dir = builder.host_run_dir(run_dir, process_id)
  if joins_here:
    from jax._src import distributed  # pylint: disable=g-import-not-at-top
    pod_host.write_info(pod_host.HostInfo(
        process_id=process_id, num_processes=jax.process_count(),
        coordinator_address=distributed.global_state.coordinator_address or "",
        host_dir=host_dir))
  builder.write_config(config, host_dir)
  logging.info("run directory: %s", host_dir)
  program = builder.make_program(config, run_dir, pod=pod if pod.enabled else None)
  started_at = time.time()
  if launch_type == "local_mp":
    outcome = _run_supervised(program, config, host_dir)
    if pod.enabled and outcome.failed_node == "learner":
      outcome = pod_host.explain_learner_failure(outcome, host_dir, pod, started_at)
  else:
    outcome = _run_threads(program)
  summary = supervisor.record_outcome(host_dir, outcome, started_at)
  if outcome.failure:
    print(f"podmeta: error: {outcome.failure}", file=sys.stderr)
    # Not jax.distributed's shutdown: its barrier waits ~100 s for a lost host, then aborts.
    _exit_now(1, run_atexit=not joins_here)
  if not summary:
    print(f"podmeta: error: the learner ended without writing {host_dir}/summary.json",
          file=sys.stderr)
    _exit_now(1)
  print(json.dumps(summary, indent=2))
  if summary.get("exit_reason") == "error":
    print(f"podmeta: error: the learner failed; see {host_dir}", file=sys.stderr)
    _exit_now(1)
  print(f"podmeta: run finished; results in {host_dir}")
  _exit_now(0)


def _run_supervised(program, config, host_dir: str) -> "supervisor.Outcome":
  """local_mp: every node a child process of this one, watched (podmeta.supervisor)."""
  commands = supervisor.local_mp_commands(program)
  return supervisor.Supervisor(commands, max_restarts=config.actor_restarts,
                               termination_notice_secs=FLAGS.lp_termination_notice_secs,
                               log_dir=os.path.join(host_dir, "logs"),
                               pid_file=os.path.join(host_dir, "nodes.json")).run()


def _run_threads(program) -> "supervisor.Outcome":
  """local_mt: Launchpad runs the nodes as threads and re-raises the first failure."""
  manager = lp.launch(program, launch_type="local_mt")
  try:
    manager.wait()
  except Exception as e:  # pylint: disable=broad-except
    node = getattr(e, "podmeta_node", "node")
    text = str(e).strip().splitlines()
    return supervisor.Outcome(
        failed_node=node, failure=f"{node} failed ({type(e).__name__}: {text[0] if text else ''})")
  return supervisor.Outcome()


def _exit_now(code: int, run_atexit: bool = True) -> None:
  """Exits without interpreter finalization.

  In local_mt the nodes' C++ threads (Reverb server and clients, TF's
  tf.data workers) can still be alive when `wait()` returns; finalizing the
  interpreter under them sometimes aborts the process (SIGABRT, "FATAL:
  exception not rethrown") after a run that finished well. Everything the run
  writes is closed by its nodes before this point.
  """
  if run_atexit:
    atexit._run_exitfuncs()  # pylint: disable=protected-access  (Launchpad's temp files)
  logging.flush()
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code)  # pylint: disable=protected-access


FLAGS = flags.FLAGS


def run() -> None:
  """Parses sys.argv and trains (`python -m launch.train`, `podmeta train`)."""
  global _CONFIG
  try:
    # Defined here, not at import: with a default file, defining it applies overrides.
    _CONFIG = config_flags.DEFINE_config_file(
        "config", _DEFAULT_CONFIG, "Path to a config file (get_config()).", lock_config=True)
  except Exception as e:  # pylint: disable=broad-except
    _config_error(e)
  app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  run()
