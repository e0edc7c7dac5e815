r"""Does the grid-world agent's policy saturate over long runs? A table per agent variant.

  python -m benchmarks.two_colours_saturation                # every row; RESULTS.md block
  python -m benchmarks.two_colours_saturation --rows=clip1 --steps=3000000
  python -m benchmarks.two_colours_saturation --replot

The best fixed agent (entropy cost 0.1) on the final runs' 10 seeds, one
vmapped program per row, each row changing the agent in one respect
(`ROWS`). "Saturated" is a curve point (10k env steps) whose mean policy
entropy is below 0.01: the policy repeats one action, and at a float32
one-hot softmax every gradient is 0. The row of the agent as it is (`clip2`)
is read from the first --steps of the final runs' shards when they exist
(the same program and seeds, so the same numbers); `clip5` was read from the
clip-5 agent's finals (benchmarks/results/two_colours/clip5/final/). Rows are saved to
benchmarks/results/two_colours/saturation/<row>.json as they finish.
"""

import os
from typing import Dict, List

from absl import app
from absl import flags
from absl import logging
import numpy as np

from benchmarks import markdown
from benchmarks import two_colours_lib as lib

ROWS: Dict[str, tuple] = {
    "clip5": ("global-norm clip 5 (the agent of stops 15-17)", (("max_grad_norm", 5.0),)),
    "clip2": ("the agent as it is: global-norm clip 2", ()),
    "clip1": ("global-norm clip 1 (the clip before stop 15)", (("max_grad_norm", 1.0),)),
}
SEEDS = tuple(range(lib.FINAL_SEED0, lib.FINAL_SEED0 + 10))
SATURATED = lib.SATURATED
BEGIN, END = "<!-- two_colours_saturation:begin -->", "<!-- two_colours_saturation:end -->"

_ROWS = flags.DEFINE_list("rows", None, "Rows to run (default: all).")
_STEPS = flags.DEFINE_integer("steps", 3_000_000, "Env steps per seed.")
_OUT = flags.DEFINE_string("out", "benchmarks/results/two_colours", "Shard directory (its "
                           "final/ holds the finals; rows go to saturation/).")
_RESULTS = flags.DEFINE_string("results_md", "RESULTS.md", "Markdown file to update.")
_REPLOT = flags.DEFINE_bool("replot", False, "Only rewrite the table from the saved rows.")


def setting(row: str) -> lib.Setting:
  return lib.Setting("fixed", entropy_cost=0.1, agent_extra=ROWS[row][1])


def _truncated(shard: dict, steps: int) -> dict:
  points = steps // shard["point_steps"]
  return {**shard, "env_steps": points * shard["point_steps"],
          **{k: shard[k][:points] for k in lib.CURVES}}


def row_path(out: str, row: str) -> str:
  return os.path.join(out, "saturation", f"{row}.json")


def run_row(row: str, steps: int, out: str) -> List[dict]:
  path = row_path(out, row)
  lanes = lib.saved_lanes(path, steps)
  if lanes is not None:
    return lanes
  st = setting(row)
  finals = [lib._read_shard(lib.shard_path(out, "final", st, seed)) for seed in SEEDS]
  if not st.agent_extra and all(f and f["env_steps"] >= steps for f in finals):
    logging.info("%s: from the final runs' first %d steps", row, steps)
    lanes = [_truncated(f, steps) for f in finals]
  else:
    lanes = lib.run_lanes([st] * len(SEEDS), list(SEEDS), steps, 10_000,
                          lib.two_colours.SWAP_EVERY)
  lib.save_lanes(path, lanes)
  return lanes


def table(results: Dict[str, List[dict]]) -> str:
  lines = ["| row | agent | reward per step (mean, min-max over seeds) | curve points saturated "
           "| seeds saturated at the end | updates clipped |", "|---|---|---|---|---|---|"]
  for row, lanes in results.items():
    rps = [lib.reward_per_step(r) for r in lanes]
    entropy = np.asarray([r["entropy"] for r in lanes])
    at_end = int(np.sum(np.all(entropy[:, -20:] < SATURATED, axis=1)))
    clipped = np.mean([np.mean(r["grad_clipped"]) for r in lanes])
    lines.append(f"| `{row}` | {ROWS[row][0]} | {np.mean(rps):.3f} ({min(rps):.3f}-"
                 f"{max(rps):.3f}) | {np.mean(entropy < SATURATED):.0%} | {at_end} of "
                 f"{len(lanes)} | {clipped:.1%} |")
  steps = next(iter(results.values()))[0]["env_steps"]
  lines += ["", f"Fixed entropy cost 0.1, seeds {SEEDS[0]}-{SEEDS[-1]}, {steps:,} env steps "
            "each; saturated: a 10k-step curve point with mean policy entropy below "
            f"{SATURATED}; at the end: the last 200k steps all saturated. Made by "
            "`python -m benchmarks.two_colours_saturation`."]
  return "\n".join(lines)


def main(argv):
  del argv
  try:
    results = lib.collect_rows(
        list(ROWS), _ROWS.value, lambda row: run_row(row, _STEPS.value, _OUT.value),
        lambda row: row_path(_OUT.value, row), _REPLOT.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  if results:
    markdown.replace_block(_RESULTS.value, BEGIN, END, table(results), title="Results")


if __name__ == "__main__":
  app.run(main)
