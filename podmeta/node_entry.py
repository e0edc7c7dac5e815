"""Entry point of a `local_mp` node process started by `podmeta.supervisor`.

  python -m podmeta.node_entry <launchpad process_entry.py> <its flags...>

Before handing over to Launchpad's own entry script it asks the kernel to send
this process SIGTERM when the launcher dies (by any signal, SIGKILL included),
so that no node outlives its launcher holding ports, memory or an
accelerator. SIGTERM, not SIGKILL: the node stops as on Ctrl-C, and the
learner writes its final checkpoint.

(Run with -m, not by path: a path would put podmeta/ first on sys.path, where
podmeta/types.py shadows the standard library's.)
"""

import ctypes
import os
import runpy
import signal
import sys

_PR_SET_PDEATHSIG = 1
LAUNCHER_PID_ENV = "PODMETA_LAUNCHER_PID"
# How many times the supervisor has started this node again after it died.
RESTARTS_ENV = "PODMETA_NODE_RESTARTS"


def die_with_launcher() -> None:
  """SIGTERM to this process when its launcher (LAUNCHER_PID_ENV, the parent) dies."""
  libc = ctypes.CDLL(None, use_errno=True)
  if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
    raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
  # The launcher may have died between fork and prctl: then no signal comes.
  expected = os.environ.get(LAUNCHER_PID_ENV)
  if expected and os.getppid() != int(expected):
    sys.exit(f"podmeta: launcher {expected} is gone; node not started")


def main() -> None:
  die_with_launcher()
  entry = sys.argv[1]
  sys.argv = sys.argv[1:]
  runpy.run_path(entry, run_name="__main__")


if __name__ == "__main__":
  main()
