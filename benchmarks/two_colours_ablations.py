r"""Why BMG raises the entropy cost in the two-colours world: short ablations.

  python -m benchmarks.two_colours_ablations              # every row; RESULTS.md block
  python -m benchmarks.two_colours_ablations --rows=default,kl_reverse
  python -m benchmarks.two_colours_ablations --replot     # the table from the saved rows

Each row is BMG without context (the last rows: with it), K = 1, changed in
one respect from the protocol's setting (`ROWS`), run at meta learning rates
1e-3 and 1e-4 x seeds 0 and 1 (four vmapped lanes of one program) for
--steps env steps.
The table gives the meta-learned entropy cost at the start, middle and end
(mean over the two seeds) and the reward per step. Each row's lanes are
saved to benchmarks/results/two_colours/ablations/<row>.json when it
finishes, so a stopped run continues with the rows it has not done.
"""

import os
from typing import Dict, List

from absl import app
from absl import flags
from absl import logging
import numpy as np

from benchmarks import markdown
from benchmarks import two_colours_lib as lib

# name -> (what differs from the protocol's BMG, Setting fields).
ROWS: Dict[str, tuple] = {
    "default": ("the protocol's BMG: L = 8, KL with the target first, outer step with the "
                "agent's SGD 0.1", dict(l=8)),
    "L1": ("L = 1: the target is the K-step agent plus the outer step (no real steps ahead)",
           dict(l=1)),
    "L2": ("L = 2", dict(l=2)),
    "L4": ("L = 4", dict(l=4)),
    "kl_reverse": ("KL with pi_K first (mode-seeking) instead of the target first",
                   dict(l=8, meta_extra=(("matching", "kl_reverse"),))),
    "no_outer_step": ("target without the outer step: the agent's own parameters L - 1 "
                      "updates ahead", dict(l=8, meta_extra=(("target_outer_step", False),))),
    "outer_sgd1": ("the outer step a plain SGD step of 1.0 (10x the agent's)",
                   dict(l=8, meta_extra=(("target_update", "sgd"),
                                         ("target_learning_rate", 1.0)))),
    "outer_sgd3": ("the outer step a plain SGD step of 3.0 (30x)",
                   dict(l=8, meta_extra=(("target_update", "sgd"),
                                         ("target_learning_rate", 3.0)))),
    "outer_sgd10": ("the outer step a plain SGD step of 10.0 (100x)",
                    dict(l=8, meta_extra=(("target_update", "sgd"),
                                          ("target_learning_rate", 10.0)))),
    "init0.1": ("the entropy cost starts at 0.1 (the best fixed value) instead of 0.5",
                dict(l=8, init_entropy_cost=0.1)),
    "batch4": ("each agent update on 4 consecutive 16-step rollouts (64 steps) instead of 1",
               dict(l=8, agent_extra=(("batch_size", 4),))),
    "step_reward": ("the world pays -0.04 on every step that collects nothing",
                    dict(l=8, step_reward=-0.04)),
    "clip5_L8": ("the protocol's BMG with the agent's clip at global norm 5 (the agent of "
                 "stops 15-17, whose policy saturates over long runs)",
                 dict(l=8, agent_extra=(("max_grad_norm", 5.0),))),
    "clip5_L1": ("L = 1, the agent's clip at global norm 5",
                 dict(l=1, agent_extra=(("max_grad_norm", 5.0),))),
    "ctx_L8": ("BMG + reward context (the protocol's meta-network), L = 8",
               dict(method="bmg_ctx", l=8)),
    "ctx_L1": ("BMG + reward context, L = 1", dict(method="bmg_ctx", l=1)),
}
LRS = (1e-3, 1e-4)
SEEDS = (0, 1)
BEGIN, END = "<!-- two_colours_ablations:begin -->", "<!-- two_colours_ablations:end -->"

_ROWS = flags.DEFINE_list("rows", None, "Rows to run (default: all).")
_STEPS = flags.DEFINE_integer("steps", 300_000, "Env steps per lane.")
_OUT = flags.DEFINE_string("out", "benchmarks/results/two_colours/ablations", "Row directory.")
_RESULTS = flags.DEFINE_string("results_md", "RESULTS.md", "Markdown file to update.")
_REPLOT = flags.DEFINE_bool("replot", False, "Only rewrite the table from the saved rows.")


def settings(row: str) -> List[lib.Setting]:
  fields = dict(ROWS[row][1])
  method = fields.pop("method", "bmg")
  return [lib.Setting(method, meta_lr=lr, k=1, **fields) for lr in LRS for _ in SEEDS]


def row_path(out: str, row: str) -> str:
  return os.path.join(out, f"{row}.json")


def run_row(row: str, steps: int, out: str) -> List[dict]:
  path = row_path(out, row)
  lanes = lib.saved_lanes(path, steps)
  if lanes is None:
    lanes = lib.run_lanes(settings(row), list(SEEDS) * len(LRS), steps, 10_000,
                          lib.two_colours.SWAP_EVERY)
    lib.save_lanes(path, lanes)
  return lanes


def table(results: Dict[str, List[dict]]) -> str:
  lines = ["| row | what differs | entropy cost, meta lr 1e-3: start -> middle -> end "
           "(reward per step) | meta lr 1e-4 |", "|---|---|---|---|"]
  for row, lanes in results.items():
    cells = []
    for lr in LRS:
      mine = [r for r in lanes if r["spec"]["meta_lr"] == lr]
      ec = np.mean([r["entropy_cost"] for r in mine], axis=0)
      rps = np.mean([lib.reward_per_step(r) for r in mine])
      cells.append(f"{ec[0]:.2f} -> {ec[len(ec) // 2]:.2f} -> {ec[-1]:.2f} ({rps:.3f})")
    # A row saved with an earlier agent stays in the table until it is rerun, marked.
    stale = "" if lib.made_with_this_agent(lanes[0]) else " (an earlier agent's run; stale)"
    lines.append(f"| `{row}` | {ROWS[row][0]}{stale} | {cells[0]} | {cells[1]} |")
  steps = next(iter(results.values()))[0]["env_steps"]
  lines += ["", "BMG without context unless the row says so, K = 1; each cell the mean of "
            f"seeds 0 and 1 over {steps:,} env steps (colour swaps every 100,000). Made by "
            "`python -m benchmarks.two_colours_ablations`."]
  return "\n".join(lines)


def main(argv):
  del argv

  def run(row):
    logging.info("ablation %s: %s", row, ROWS[row][0])
    return run_row(row, _STEPS.value, _OUT.value)
  try:
    results = lib.collect_rows(list(ROWS), _ROWS.value, run,
                               lambda row: row_path(_OUT.value, row), _REPLOT.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  markdown.replace_block(_RESULTS.value, BEGIN, END, table(results), title="Results")


if __name__ == "__main__":
  app.run(main)
