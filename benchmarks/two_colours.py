r"""The BMG paper's grid-world experiment, with the paper's protocol: writes RESULTS.md.

  python -m benchmarks.two_colours                    # tune, then the final runs (hours)
  python -m benchmarks.two_colours --phase=tune --methods=mg_ctx --max_minutes=60
  python -m benchmarks.two_colours --phase=tune --methods=mg,bmg --ks=1   # part of a grid
  python -m benchmarks.two_colours --replot           # the table and plots from the shards
  python -m benchmarks.two_colours --speed            # steps/s per method -> BENCHMARKS.md

The protocol (Luketina et al. 2022, App. A; Flennerhag et al. 2021, Sec. 5.1):

* tune: every setting of each method's grid (`grid`) runs `--tune_seeds` seeds
  for `--tune_steps` env steps; a method's best setting is the one with the
  highest mean reward per step over its tuning seeds.
* final: each method's best setting runs on fresh seeds (from FINAL_SEED0) for
  `--final_steps`: `--final_seeds` seeds for the headline methods (the best
  fixed entropy cost, MG + context, BMG + context), `--minor_seeds` for the
  others.

The agent is the distributed learner's own update (`podmeta.learning`,
`podmeta.meta.update`, built as `podmeta.builder` builds them) run with the
JAX grid world inside one jitted `lax.scan`. Settings that share a network
shape (method, context, K, L, MG's outer entropy weight) share one program:
their seeds and their values (fixed entropy cost, meta learning rate) are
vmapped together as "lanes".

Resumable: each (setting, seed) writes a shard
benchmarks/results/two_colours/<phase>/<setting>/seed<k>.json when it
finishes (committed). A running program saves its lanes' state every
`--save_every_minutes` and when --max_minutes ends it, twice: whole under
`--partial_dir` (~/.cache/podmeta/two_colours; tens of MB per meta program,
outside the repository), and without the meta ring buffer under
benchmarks/results/two_colours/_resume/ (a few MB; commit it: a 10M-step
program takes longer than one working session, and ~/.cache does not outlive
the machine). Ctrl-C or SIGTERM stops it the same way: each program saves
its state after the curve point it is on, and the command exits non-zero;
so does a worker that crashes or is killed or stopped on its own (the others
are stopped and save), with one line naming it. A saved state resumes only a
run with the same curve points and colour swaps (--log_every, --swap_every).
A stopped run continues from the shards and whichever saved state got
further; a resume from _resume/ refills the ring before the next
meta-update (K+L-1 learner steps, recorded in the shards as `ring_refills`).
Lanes that have run stay with their saved state whatever --max_lanes the
next run has; when one program is far behind the others (a final whose
programs started sessions apart), it is cut in two and each part starts from
its lanes of the saved state, so that no core waits (two_colours_lib.plan).
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import List, Optional, Sequence, Tuple

from absl import app
from absl import flags
from absl import logging

from benchmarks import markdown
from benchmarks import two_colours_lib as lib
from benchmarks import two_colours_report as report
from envs import two_colours

_PHASE = flags.DEFINE_enum("phase", "all", ["tune", "final", "all"], "Which part of the protocol.")
_METHODS = flags.DEFINE_list("methods", None, "Subset of methods (default: all).")
_KS = flags.DEFINE_list(
    "ks", None, "Tune only these inner-step counts K of the meta grids now (default: all); "
    "a method's final run waits until its whole grid is tuned.")
_TUNE_STEPS = flags.DEFINE_integer("tune_steps", 1_000_000, "Env steps per tuning run.")
_TUNE_SEEDS = flags.DEFINE_integer("tune_seeds", 2, "Seeds per tuning setting.")
_FINAL_STEPS = flags.DEFINE_integer("final_steps", 10_000_000, "Env steps per final run.")
_FINAL_SEEDS = flags.DEFINE_integer("final_seeds", 10, "Seeds of the headline methods.")
_MINOR_SEEDS = flags.DEFINE_integer("minor_seeds", 3, "Seeds of the other methods.")
_LOG_EVERY = flags.DEFINE_integer("log_every", 10_000, "Env steps per point of the curves.")
_SWAP_EVERY = flags.DEFINE_integer("swap_every", two_colours.SWAP_EVERY,
                                   "Steps between colour swaps.")
_MAX_MINUTES = flags.DEFINE_float("max_minutes", 0.0,
                                  "Stop (resumably) after this long; 0: run to the end.")
_DEADLINE = flags.DEFINE_float("deadline_unix", 0.0, "Internal: the parent's --max_minutes.")
_SAVE_EVERY = flags.DEFINE_float("save_every_minutes", 10.0, "Partial-state save interval.")
_OUT = flags.DEFINE_string("out", "benchmarks/results/two_colours", "Shard directory.")
_PARTIAL = flags.DEFINE_string(
    "partial_dir", os.path.join(os.path.expanduser("~"), ".cache", "podmeta", "two_colours"),
    "Where running programs save their lanes' state (large; outside the repository).")
_RESULTS = flags.DEFINE_string("results_md", "RESULTS.md", "Markdown file to update.")
_REPLOT = flags.DEFINE_bool("replot", False, "Only redraw the table and plots from the shards.")
_WORKERS = flags.DEFINE_integer("workers", 2, "Processes sharing the programs (one per core).")
_MAX_LANES = flags.DEFINE_integer(
    "max_lanes", 8, "Most lanes (vmapped seeds and values) in one program: larger groups "
    "are split evenly (a final's 10 seeds run as 2 x 5); 0: no limit.")
_WORKER_INDEX = flags.DEFINE_integer("worker_index", -1, "Internal: this process's share.")
_SPEED = flags.DEFINE_bool("speed", False, "Only measure each method's steps/s (BENCHMARKS.md).")
_SPEED_LANES = flags.DEFINE_integer("speed_lanes", 8, "Vmapped seeds per --speed program.")
_SPEED_POINTS = flags.DEFINE_integer("speed_points", 3, "Timed curve points per --speed program.")
_BENCHMARKS = flags.DEFINE_string("benchmarks_md", "BENCHMARKS.md", "--speed writes here.")

# A worker's exit codes besides 0 (finished) and 1 (failed): stopped by the
# deadline, which is the plan, or by a signal, which the run must report.
EXIT_DEADLINE, EXIT_STOPPED = 3, 4
SPEED_BEGIN, SPEED_END = "<!-- two_colours_speed:begin -->", "<!-- two_colours_speed:end -->"
# One setting per program shape the protocol runs (K = 1, 3, 6).
SPEED_SETTINGS = (
    lib.Setting("fixed", entropy_cost=0.1),
    lib.Setting("mg_ctx", meta_lr=1e-4, k=1, outer_entropy=0.1),
    lib.Setting("bmg_ctx", meta_lr=1e-4, k=1, l=8),
    lib.Setting("mg_ctx", meta_lr=1e-4, k=3, outer_entropy=0.1),
    lib.Setting("bmg_ctx", meta_lr=1e-4, k=3, l=8),
    lib.Setting("bmg_ctx", meta_lr=1e-4, k=6, l=8),
)

def phase_jobs(phase: str, methods: Sequence[str], out: str) -> List[Tuple]:
  """(phase, setting, seed, steps) for every run of the phase."""
  if phase == "tune":
    ks = {int(k) for k in _KS.value} if _KS.value else set(lib.KS)
    return [("tune", st, seed, _TUNE_STEPS.value) for m in methods for st in lib.grid(m)
            if m == "fixed" or st.k in ks for seed in range(_TUNE_SEEDS.value)]
  best = lib.best_settings(out, methods)
  missing = [m for m in methods if m not in best]
  if missing:
    logging.warning("no final runs for %s: its tuning is incomplete", ", ".join(missing))
  jobs = []
  for m in sorted(best, key=lambda m: m not in lib.HEADLINE):  # headline methods first
    n = _FINAL_SEEDS.value if m in lib.HEADLINE else _MINOR_SEEDS.value
    jobs += [("final", best[m], lib.FINAL_SEED0 + i, _FINAL_STEPS.value) for i in range(n)]
  return jobs


def _wait_for_workers(procs: List[subprocess.Popen]) -> Tuple[List[int], Optional[int]]:
  """The workers' exit codes, and which ended first other than finished or at
  the deadline (a crash, a kill, a signal of its own), if one did: then the
  others are stopped too, so they save their programs and the run reports
  the fault now rather than when the last program ends hours later."""
  while True:
    codes = [p.poll() for p in procs]
    if None not in codes and all(c in (0, EXIT_DEADLINE) for c in codes):
      return codes, None
    culprit = next((i for i, c in enumerate(codes) if c not in (None, 0, EXIT_DEADLINE)), None)
    if culprit is not None:
      for p, c in zip(procs, codes):
        if c is None:
          p.terminate()
      return [p.wait() for p in procs], culprit
    time.sleep(1.0)


def _signal_name(number: int) -> str:
  try:
    return signal.Signals(number).name
  except ValueError:  # a real-time signal has no name
    return f"signal {number}"


def _run_phase_in_workers(phase: str, deadline: Optional[float]) -> bool:
  """Runs `phase` in --workers processes (each its share); True if all finished,
  False if the deadline stopped them; raises SystemExit (one line) otherwise."""
  argv = [a for a in sys.argv[1:]
          if not a.startswith(("--phase", "--worker_index", "--deadline_unix"))]
  procs = []
  try:
    for i in range(_WORKERS.value):
      procs.append(subprocess.Popen([sys.executable, "-m", "benchmarks.two_colours", *argv,
                                     f"--phase={phase}", f"--worker_index={i}",
                                     f"--deadline_unix={deadline or 0}"]))
    codes, culprit = _wait_for_workers(procs)
  except KeyboardInterrupt:
    # A second Ctrl-C must not leave the workers running unwatched while they
    # save (seconds: each stops after the curve point it is on).
    for sig in (signal.SIGINT, signal.SIGTERM):
      signal.signal(sig, signal.SIG_IGN)
    for p in procs:
      p.terminate()
    codes = [p.wait() for p in procs]
    culprit = next((i for i, c in enumerate(codes) if c not in (0, EXIT_DEADLINE, EXIT_STOPPED)),
                   None)
    if culprit is None:
      raise SystemExit(f"two_colours: stopped by a signal during the {phase} phase; the "
                       "programs saved their state: run the same command again to continue")
  if culprit is None:
    return all(c == 0 for c in codes)
  code = codes[culprit]
  if code == EXIT_STOPPED:
    raise SystemExit(f"two_colours: {phase} worker {culprit} was stopped by a signal; the "
                     "programs saved their state: run the same command again to continue")
  how = f"killed by {_signal_name(-code)}" if code < 0 else f"exit code {code}"
  raise SystemExit(f"two_colours: {phase} worker {culprit} failed ({how}); its program "
                   "resumes from its last save and the others saved theirs: run the same "
                   "command again to continue")


def measure_speed() -> None:
  """Each program shape's steps/s in one run, the ratio to the fixed agent, and
  what the whole protocol then costs on this machine."""
  rows = []
  for setting in SPEED_SETTINGS:
    rows.append(lib.measure_throughput(setting, _SPEED_LANES.value, _SPEED_POINTS.value))
    logging.info("%s: %.0f env steps/s summed over %d lanes", setting.name,
                 rows[-1]["steps_per_second"], rows[-1]["lanes"])
  fixed = rows[0]["steps_per_second"]
  rate = {(st.method, st.k): r["steps_per_second"] for st, r in zip(SPEED_SETTINGS, rows)}
  lines = [f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} cores by "
           f"`python -m benchmarks.two_colours --speed` (one process, {_SPEED_LANES.value} "
           f"vmapped seeds per program, {_SPEED_POINTS.value} x {_LOG_EVERY.value:,} env steps "
           "per seed timed after compilation; `make results` runs one such process per core).",
           "", "| program | env steps/s summed over seeds | cost per env step vs fixed "
           "| compile s |", "|---|---:|---:|---:|"]
  for r in rows:
    lines.append(f"| `{r['setting']}` | {r['steps_per_second']:,.0f} | "
                 f"{fixed / r['steps_per_second']:.1f}x | {r['compile_seconds']:.0f} |")

  def seconds_per_step(method: str, k: int) -> float:
    if method == "fixed":
      return 1.0 / rate[("fixed", 1)]
    # With or without context, MG or BMG: the cost is the K differentiated updates.
    kind = "bmg_ctx" if method.startswith("bmg") else "mg_ctx"
    return 1.0 / rate.get((kind, k), rate[("bmg_ctx", k)])

  seconds = sum(_TUNE_SEEDS.value * _TUNE_STEPS.value * seconds_per_step(m, st.k)
                for m in lib.METHODS for st in lib.grid(m))
  seconds += sum((_FINAL_SEEDS.value if m in lib.HEADLINE else _MINOR_SEEDS.value)
                 * _FINAL_STEPS.value * seconds_per_step(m, 1) for m in lib.METHODS)
  lines += ["", f"At these rates the whole protocol (tuning {_TUNE_SEEDS.value} seeds x "
            f"{_TUNE_STEPS.value:,} steps over every grid, final runs at K = 1 for the meta "
            f"methods) is about {seconds / 3600 / os.cpu_count():,.0f} hours on "
            f"{os.cpu_count()} cores."]
  with open(os.path.join(os.path.dirname(_OUT.value), "two_colours_speed.json"), "w") as f:
    json.dump(rows, f, indent=1)
  markdown.replace_block(_BENCHMARKS.value, SPEED_BEGIN, SPEED_END, "\n".join(lines),
                         title="Benchmarks",
                         heading="## Grid-world experiment throughput (two colours)\n\n")


def main(argv):
  del argv
  methods = _METHODS.value or list(lib.METHODS)
  unknown = [m for m in methods if m not in lib.METHODS]
  if unknown:
    raise app.UsageError(f"unknown method {unknown[0]!r} (known: {', '.join(lib.METHODS)})")
  bad_ks = [k for k in _KS.value or () if not k.isdigit() or int(k) not in lib.KS]
  if bad_ks:
    raise app.UsageError(f"--ks: {bad_ks[0]!r} is not one of the grid's K "
                         f"({', '.join(map(str, lib.KS))})")
  if _WORKERS.value < 1:
    raise app.UsageError("--workers must be at least 1")
  if _MAX_LANES.value < 0:
    raise app.UsageError("--max_lanes must be 0 (no limit) or more")
  lib.use_classic_cpu_runtime()
  if _SPEED.value:
    measure_speed()
    return
  out = _OUT.value
  if _WORKER_INDEX.value >= 0:  # one worker's share of one phase
    deadline = _DEADLINE.value or None
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
      signal.signal(sig, lambda *_: stop.set())
    finished = lib.run_jobs(phase_jobs(_PHASE.value, methods, out), out, _LOG_EVERY.value,
                            _SWAP_EVERY.value, 60 * _SAVE_EVERY.value, deadline,
                            (_WORKER_INDEX.value, _WORKERS.value), partial_dir=_PARTIAL.value,
                            max_lanes=_MAX_LANES.value, stop=stop)
    sys.exit(0 if finished else EXIT_STOPPED if stop.is_set() else EXIT_DEADLINE)
  signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops as Ctrl-C does
  deadline = time.time() + 60 * _MAX_MINUTES.value if _MAX_MINUTES.value else None
  if not _REPLOT.value:
    for phase in (("tune", "final") if _PHASE.value == "all" else (_PHASE.value,)):
      finished = _run_phase_in_workers(phase, deadline)
      if not finished:
        logging.info("stopped at --max_minutes; run the same command again to continue")
        break
  report.write(out, _RESULTS.value)


if __name__ == "__main__":
  app.run(main)
