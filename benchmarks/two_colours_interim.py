r"""What a grid-world run still in progress shows so far, from its saved state.

  python -m benchmarks.two_colours_interim                       # the final phase's programs
  python -m benchmarks.two_colours_interim --partial_dir=DIR --every=500000

A final run writes its shards only when its program ends (10M steps, hours on
2 cores), but it saves its lanes' curves with its state every few minutes
(`two_colours_lib.run_lanes`). This prints, per setting (the lanes of its
programs side by side), per lane and per stretch of `--every` env steps, the
reward per step, the meta-learned entropy cost and the fraction of saturated
curve points (policy entropy below `two_colours_lib.SATURATED`, as in
`two_colours_saturation`), and then where each lane's first lasting
saturation (`--lasting` consecutive saturated points) began, counted from
the colour swap before it. Not a result: the runs are unfinished.
"""

import glob
import os
import pickle
from typing import Dict, List, Optional

from absl import app
from absl import flags
import numpy as np

from benchmarks import two_colours_lib as lib
from envs import two_colours

_PARTIAL = flags.DEFINE_string(
    "partial_dir", "benchmarks/results/two_colours/_resume/final",
    "Directory of the programs' saved state: their portable state (the default) "
    "or their whole state (two_colours --partial_dir, then /final).")
_POINT_STEPS = flags.DEFINE_integer("log_every", 10_000, "Env steps per curve point.")
_EVERY = flags.DEFINE_integer("every", 1_000_000, "Env steps per stretch of the table.")
_LASTING = flags.DEFINE_integer("lasting", 20, "Consecutive saturated points that count.")

SATURATED = lib.SATURATED


def lasting_saturation_onset(entropy: np.ndarray, lasting: int,
                             threshold: float = SATURATED) -> Optional[int]:
  """Index of the first point that starts `lasting` consecutive points of
  entropy below `threshold`, or None."""
  low = np.asarray(entropy) < threshold
  run = 0
  for t, is_low in enumerate(low):
    run = run + 1 if is_low else 0
    if run == lasting:
      return t - lasting + 1
  return None


def load_lanes(partial_dir: str) -> Dict[str, dict]:
  """Curves of the saved programs' lanes, by setting: name -> curve -> [points, lanes],
  side by side and cut to the shortest lane of that setting. A lane saved by
  two programs (a program and a part split off it, see two_colours_lib.plan)
  counts once, from the one that got further. Programs saved before their
  lanes were named are grouped by file."""
  lanes: Dict[tuple, dict] = {}
  for path in sorted(glob.glob(os.path.join(partial_dir, "*.pkl"))):
    with open(path, "rb") as f:
      saved = pickle.load(f)
    named = saved.get("lanes")
    entries = ([((name, seed), i) for i, (name, seed) in enumerate(named)] if named
               else [((f"unnamed ({os.path.basename(path)})", 0), slice(None))])
    for key, i in entries:
      curves = {k: [np.asarray(v)[i] for v in saved["curves"][k]]
                for k in ("reward", "entropy", "entropy_cost")}
      if key not in lanes or len(curves["reward"]) > len(lanes[key]["reward"]):
        lanes[key] = curves
  if not lanes:
    raise ValueError(f"no saved program state in {partial_dir}")
  out = {}
  for name in sorted({name for name, _ in lanes}):
    mine = [lanes[key] for key in sorted(key for key in lanes if key[0] == name)]
    points = min(len(c["reward"]) for c in mine)
    out[name] = {k: np.concatenate([np.stack(c[k][:points]).reshape(points, -1) for c in mine],
                                   axis=1) for k in ("reward", "entropy", "entropy_cost")}
  return out


def report(curves: dict, point_steps: int, every: int, lasting: int) -> List[str]:
  reward_per_step = curves["reward"] / point_steps  # each point sums its steps' rewards
  points, lanes = reward_per_step.shape
  per = max(1, every // point_steps)
  lines = [f"{lanes} lanes, {points * point_steps:,} env steps each", "",
           "| env steps | reward per step, per lane | mean | entropy cost, mean | "
           "saturated points |", "|---|---|---:|---:|---:|"]
  for lo in range(0, points, per):
    hi = min(points, lo + per)
    r = reward_per_step[lo:hi].mean(0)
    lines.append(
        f"| {lo * point_steps / 1e6:.1f}-{hi * point_steps / 1e6:.1f}M | "
        f"{' '.join(f'{x:.3f}' for x in r)} | {r.mean():.3f} | "
        f"{curves['entropy_cost'][lo:hi].mean():.3f} | "
        f"{(curves['entropy'][lo:hi] < SATURATED).mean():.0%} |")
  swap_points = two_colours.SWAP_EVERY // point_steps
  lines += ["", f"Lasting saturation ({lasting} points in a row, entropy < {SATURATED}):"]
  for j in range(lanes):
    start = lasting_saturation_onset(curves["entropy"][:, j], lasting)
    if start is None:
      lines.append(f"  lane {j}: none")
      continue
    cost_before = curves["entropy_cost"][max(0, start - swap_points):start, j]
    later = curves["entropy"][start + lasting:, j]
    lines.append(
        f"  lane {j}: from {start * point_steps:,} env steps, "
        f"{(start % swap_points) * point_steps:,} after a colour swap; entropy cost over the "
        f"swap period before: mean {cost_before.mean():.3f}, lowest {cost_before.min():.3f}; "
        f"reward per step from then on {reward_per_step[start:, j].mean():.3f}; "
        f"unsaturated on {(later >= SATURATED).mean():.0%} of later points")
  return lines


def main(argv):
  del argv
  for name, curves in load_lanes(_PARTIAL.value).items():
    print("\n".join([f"## {name}", ""] + report(curves, _POINT_STEPS.value, _EVERY.value,
                                                _LASTING.value) + [""]))


if __name__ == "__main__":
  app.run(main)
