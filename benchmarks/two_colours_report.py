"""The grid-world experiment's report: tables, tests and plots from the shards.

`write(out, results_md)` reads benchmarks/results/two_colours/{tune,final}/
and rewrites the block between the two_colours markers in RESULTS.md and the
plots beside the shards. It works on whatever shards exist, so a partial run
reports what it has and says what is missing.
"""

import os
from typing import Dict, List, Sequence

import numpy as np
from scipy import stats

from benchmarks import markdown
from benchmarks import two_colours_lib as exp

LABELS = {"fixed": "best fixed entropy cost", "mg": "MG", "bmg": "BMG",
          "mg_ctx": "MG + reward context", "bmg_ctx": "BMG + reward context"}
# Luketina et al. 2022, Table 1: total reward over 10M steps in millions? see UNIT_NOTE.
PUBLISHED = {"fixed": (1.24, 0.09), "mg": (1.29, 0.08), "bmg": (1.32, 0.08),
             "mg_ctx": (1.58, 0.06), "bmg_ctx": (1.74, 0.03)}
PAPER_STEPS = 10_000_000
BEGIN, END = "<!-- two_colours:begin -->", "<!-- two_colours:end -->"


def mean_ci(x: Sequence[float]):
  """Mean and the half-width of its 95% t confidence interval (nan for one value)."""
  x = np.asarray(x, np.float64)
  if len(x) < 2:
    return float(x.mean()), float("nan")
  return float(x.mean()), float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))


def _with_ci(mean_half, digits: int) -> str:
  mean, half = mean_half
  if np.isnan(half):
    return f"{mean:.{digits}f} (one seed: no CI)"
  return f"{mean:.{digits}f} ± {half:.{digits}f}"


def welch(a: Sequence[float], b: Sequence[float]):
  """Welch's t statistic, its degrees of freedom and the two-sided p-value."""
  t, p = stats.ttest_ind(a, b, equal_var=False)
  va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
  df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
  return float(t), float(df), float(p)


def total_millions(shard: dict) -> float:
  """The paper's unit: total reward over 10M steps, in millions (scaled if shorter)."""
  return exp.reward_per_step(shard) * PAPER_STEPS / 1e6


def _group(shards: List[dict], key: str) -> Dict[str, List[dict]]:
  out: Dict[str, List[dict]] = {}
  for s in shards:
    out.setdefault(s[key], []).append(s)
  return out


def final_table(final: Dict[str, List[dict]]) -> str:
  rows = ["| method | setting (tuned) | seeds | env steps per seed | reward per step (95% CI) "
          "| total reward, M per 10M steps (95% CI) | published (Luketina et al. Table 1) "
          "| agent updates clipped |",
          "|---|---|---|---|---|---|---|---|"]
  for method in exp.METHODS:
    shards = final.get(method)
    if not shards:
      rows.append(f"| {LABELS[method]} | (pending) | 0 | | | | "
                  f"{PUBLISHED[method][0]:.2f} ± {PUBLISHED[method][1]:.2f} | |")
      continue
    per_step = mean_ci([exp.reward_per_step(s) for s in shards])
    total = mean_ci([total_millions(s) for s in shards])
    clipped = np.mean([np.mean(s["grad_clipped"]) for s in shards])
    steps = sorted({s["env_steps"] for s in shards})
    rows.append(f"| {LABELS[method]} | `{shards[0]['setting']}` | {len(shards)} | "
                f"{', '.join(f'{n:,}' for n in steps)} | {_with_ci(per_step, 4)} | "
                f"{_with_ci(total, 2)} | "
                f"{PUBLISHED[method][0]:.2f} ± {PUBLISHED[method][1]:.2f} | {clipped:.1%} |")
  return "\n".join(rows)


def welch_lines(final: Dict[str, List[dict]]) -> List[str]:
  lines = []
  for a, b in (("bmg_ctx", "mg_ctx"), ("bmg_ctx", "fixed"), ("mg_ctx", "fixed"),
               ("bmg", "mg"), ("bmg", "fixed"), ("mg", "fixed")):
    if len(final.get(a, [])) >= 2 and len(final.get(b, [])) >= 2:
      t, df, p = welch([total_millions(s) for s in final[a]],
                       [total_millions(s) for s in final[b]])
      lines.append(f"* {LABELS[a]} vs {LABELS[b]}: Welch t = {t:.2f} (df {df:.1f}), "
                   f"two-sided p = {p:.3g}")
  return lines


def _ranked(tune: Dict[str, List[dict]], method: str) -> List[tuple]:
  """(mean reward per step over its seeds, setting name, shards) of the
  method's tuned settings, best first."""
  return sorted(((np.mean([exp.reward_per_step(s) for s in tune[st.name]]), st.name,
                  tune[st.name]) for st in exp.grid(method) if st.name in tune), reverse=True)


def swap_profile(shards: List[dict], key: str) -> np.ndarray:
  """A curve (key: "entropy_cost", "reward", ...) averaged over colour periods
  and seeds, one value per curve point since the last swap; every period but
  the first (initial learning) and the last incomplete one. Rewards become
  reward per step. Empty if the run holds fewer than two periods."""
  r = shards[0]
  per = r["swap_every"] // r["point_steps"]
  x = np.asarray([s[key] for s in shards], np.float64)
  if key == "reward":
    x = x / r["point_steps"]
  periods = x.shape[1] // per if per >= 2 else 0
  if periods < 2:
    return np.zeros(0)
  return x[:, :periods * per].reshape(len(shards), periods, per)[:, 1:].mean(axis=(0, 1))


def swap_jumps(shard: dict, key: str = "entropy_cost") -> np.ndarray:
  """For each colour swap inside the run, the curve's first point after it
  minus its last point before it: > 0 where the swap raised the value."""
  per = shard["swap_every"] // shard["point_steps"]
  x = np.asarray(shard[key], np.float64)
  after = np.arange(per, len(x), per)
  return x[after] - x[after - 1]


def swap_table(tune: Dict[str, List[dict]]) -> str:
  """How each method's best tuning setting responds to a colour swap."""
  rows = ["| method | setting | entropy cost: rise at a swap (10k steps after minus 10k "
          "before) | first 10k after | lowest in the period | reward per step: first 10k "
          "after | last 10k before the next |", "|---|---|---|---|---|---|---|"]
  for method in exp.METHODS:
    scored = _ranked(tune, method)
    if not scored:
      continue
    shards = scored[0][2]
    ec, rew = swap_profile(shards, "entropy_cost"), swap_profile(shards, "reward")
    if not len(ec):
      continue
    jumps = np.concatenate([swap_jumps(s)[1:] for s in shards])  # after initial learning
    rise = jumps.mean() if len(jumps) else float("nan")
    rows.append(f"| {LABELS[method]} | `{scored[0][1]}` | {rise:+.3f} | {ec[0]:.3f} | "
                f"{ec.min():.3f} | {rew[0]:.3f} | {rew[-1]:.3f} |")
  return "\n".join(rows)


def tuning_table(tune: Dict[str, List[dict]]) -> str:
  rows = ["| method | settings tuned | seeds x env steps | best setting | its reward per step "
          "| second best | worst |", "|---|---|---|---|---|---|---|"]
  for method in exp.METHODS:
    grid = exp.grid(method)
    scored = _ranked(tune, method)
    if not scored:
      rows.append(f"| {LABELS[method]} | 0 of {len(grid)} | | | | | |")
      continue
    shape = f"{len(scored[0][2])} x {scored[0][2][0]['env_steps']:,}"
    second = f"`{scored[1][1]}` {scored[1][0]:.4f}" if len(scored) > 1 else ""
    rows.append(f"| {LABELS[method]} | {len(scored)} of {len(grid)} | {shape} | "
                f"`{scored[0][1]}` | {scored[0][0]:.4f} | {second} | "
                f"`{scored[-1][1]}` {scored[-1][0]:.4f} |")
  return "\n".join(rows)


def plot(final: Dict[str, List[dict]], out_dir: str) -> List[str]:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  paths = []
  if not final:
    return paths
  fig, ax = plt.subplots(figsize=(9, 4.5))
  for method, shards in final.items():
    r = shards[0]
    swap = r["swap_every"]
    rew = np.asarray([s["reward"] for s in shards]) / r["point_steps"]
    window = max(1, (2 * swap) // r["point_steps"])  # a full colour cycle
    kernel = np.ones(window) / window
    curves = np.stack([np.convolve(x, kernel, mode="valid") for x in rew])
    x = (np.arange(curves.shape[1]) + window) * r["point_steps"]
    mean = curves.mean(0)
    ax.plot(x, mean, ":" if method == "fixed" else "-", lw=1.2,
            label=f"{LABELS[method]} ({len(shards)} seed{'s' if len(shards) > 1 else ''})")
    if len(shards) > 1:
      sem = curves.std(0, ddof=1) / np.sqrt(len(shards))
      ax.fill_between(x, mean - 2 * sem, mean + 2 * sem, alpha=0.15)
  ax.set_xlabel("environment steps")
  ax.set_ylabel("reward per step (mean over seeds, one swap cycle window)")
  ax.set_title("Two-colours grid world: each method's tuned setting")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  paths.append(os.path.join(out_dir, "final.png"))
  fig.savefig(paths[-1], dpi=110)
  plt.close(fig)

  meta = {m: s for m, s in final.items() if m != "fixed"}
  if meta:
    fig, axes = plt.subplots(2, 1, figsize=(9, 7))
    for method, shards in meta.items():
      ec, rew = swap_profile(shards, "entropy_cost"), swap_profile(shards, "reward")
      if not len(ec):
        continue
      x = (np.arange(len(ec)) + 0.5) * shards[0]["point_steps"]
      axes[0].plot(x, ec, "o-", ms=2, label=LABELS[method])
      axes[1].plot(x, rew, "o-", ms=2, label=LABELS[method])
    axes[0].set_ylabel("meta-learned entropy cost")
    axes[0].set_title("Aligned on colour swaps (all swaps but the first, all seeds)")
    axes[1].set_ylabel("reward per step")
    for ax in axes:
      ax.set_xlabel("environment steps since the last colour swap")
      ax.grid(alpha=0.3)
      ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(os.path.join(out_dir, "entropy_cost_swaps.png"))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
  return paths


def body(out: str) -> str:
  tune = _group(exp.load_shards(out, "tune"), "setting")
  final = _group(exp.load_shards(out, "final"), "method")
  parts = ["#### Final runs (each method's tuned setting, fresh seeds)", "", final_table(final), ""]
  welch_text = welch_lines(final)
  if welch_text:
    parts += ["Welch tests on the total reward:", ""] + welch_text + [""]
  parts += ["#### Tuning (the paper's grids, equal budgets)", "", tuning_table(tune), ""]
  if tune:
    parts += ["Response to a colour swap (each method's best tuning setting; every swap but "
              "the first, both tuning seeds):", "", swap_table(tune), ""]
  paths = plot(final, out)
  parts += [f"![{os.path.basename(p)}]({p})" for p in paths]
  return "\n".join(parts).rstrip()


def write(out: str, results_md: str) -> None:
  markdown.replace_block(results_md, BEGIN, END, body(out), title="Results")
