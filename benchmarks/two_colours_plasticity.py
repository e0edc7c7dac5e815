r"""Why the grid-world agent earns less late in a 10M-step run: its networks probed.

  python -m benchmarks.two_colours_plasticity                         # best fixed agent, 100-101
  python -m benchmarks.two_colours_plasticity --variant=layer_norm    # with LayerNorm torsos
  python -m benchmarks.two_colours_plasticity --variant=l2_init_1e-04 # with L2 towards init
  python -m benchmarks.two_colours_plasticity --replot                # tables and plot again

Every final run, fixed or meta, earns less over its last 3M steps than over
its first 3M while, at a constant entropy cost, its policy's entropy rises
(RESULTS.md). This reruns the best fixed agent's final lanes (the same
program and seeds; its reward is reported beside the committed shards') and
every `--probe_every` env steps probes its networks on all 13,800 states of
the world (the observation carries no colour):

* the policy's entropy and its largest-minus-smallest logit, averaged over states;
* dormant units per hidden layer: units with zero activation on every state,
  and tau-dormant units (Sokar et al. 2023, "The Dormant Neuron Phenomenon in
  Deep RL"): mean |activation| below tau = 0.1 of the layer's mean;
* the effective rank of each torso's last features (srank_0.01, Kumar et al.
  2021, "Implicit Under-Parameterization");
* the norm of each torso's weights.

`--variant=layer_norm` runs the same agent with its torsos' layers normalised
before their ReLUs (`torso_norm="layer"`, not the paper's agent), to test
whether keeping the units alive keeps the reward up. `--variant=l2_init_1e-03`
and `l2_init_1e-04` add an L2 penalty of that strength towards the initial
parameters (`weight_decay`, `weight_decay_towards="init"`: "L2 Init", Kumar
et al. 2023), against the weight norms' growth; not the paper's agent either.
Under SGD 0.1 a strength of 1e-3 pulls back with a time constant of 10k
updates (160k env steps, 1.6 colour periods), 1e-4 ten times slower,
where the paper agent's torso norms doubled over 10M steps.

Writes benchmarks/results/two_colours/plasticity-<variant>.json, the plot
plasticity.png beside them and a table per variant in RESULTS.md.
"""

import json
import os
import time
from typing import Dict, List

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np

from benchmarks import markdown
from benchmarks import two_colours_lib as lib
from benchmarks import two_colours_probes as probes

# Config fields over the paper's agent (lib.AGENT).
VARIANTS = {"paper": (), "layer_norm": (("torso_norm", "layer"),),
            **{f"l2_init_{strength:.0e}": (("weight_decay", strength),
                                           ("weight_decay_towards", "init"))
               for strength in (1e-3, 1e-4)}}

_STEPS = flags.DEFINE_integer("steps", 10_000_000, "Env steps per lane.")
_PROBE_EVERY = flags.DEFINE_integer("probe_every", 500_000, "Env steps between probes.")
_SEEDS = flags.DEFINE_list("seeds", ["100", "101"], "Lanes (the final runs' seeds).")
_ENTROPY_COST = flags.DEFINE_float("entropy_cost", 0.1, "The fixed agent's entropy cost.")
_VARIANT = flags.DEFINE_enum("variant", "paper", list(VARIANTS), "The agent probed.")
_OUT = flags.DEFINE_string("out", "benchmarks/results/two_colours",
                           "Where the probes (plasticity-<variant>.json) and the plot go.")
_RESULTS = flags.DEFINE_string("results_md", "RESULTS.md", "Markdown file to update.")
_REPLOT = flags.DEFINE_bool("replot", False, "Only rewrite the table from the saved probes.")

BEGIN, END = "<!-- two_colours_plasticity:begin -->", "<!-- two_colours_plasticity:end -->"


def run(steps: int, probe_every: int, seeds: List[int], entropy_cost: float,
        variant: str) -> dict:
  setting = lib.Setting("fixed", entropy_cost=entropy_cost, agent_extra=VARIANTS[variant])
  settings = [setting] * len(seeds)
  runner, values, point_steps = lib._program(settings, 10_000, lib.two_colours.SWAP_EVERY)
  carry = lib.initial_carry(settings, seeds)
  obs = probes.all_observations()
  saved_probes: List[dict] = []
  reward: List[np.ndarray] = []
  per_probe = max(1, probe_every // point_steps)

  def take_probe(done_points):
    params = carry[2].params
    lanes = [jax.device_get(probes.probe(jax.tree.map(lambda x: x[i], params), obs))
             for i in range(len(seeds))]
    saved_probes.append({"env_steps": done_points * point_steps,
                         **{k: [float(p[k]) for p in lanes] for k in lanes[0]}})

  take_probe(0)
  start = time.time()
  for point in range(1, steps // point_steps + 1):
    carry, out = runner(carry, values)
    reward.append(np.asarray(jax.device_get(out["reward"])))
    if point % per_probe == 0:
      take_probe(point)
      logging.info("%d/%d env steps per lane (%.0f steps/s summed), entropy %.3f, "
                   "policy tau-dormant %.3f", point * point_steps, steps,
                   point * point_steps * len(seeds) / (time.time() - start),
                   np.mean(saved_probes[-1]["entropy"]),
                   np.mean(saved_probes[-1]["policy_dormant2"]))
  return {"setting": setting.name, "variant": variant, "entropy_cost": entropy_cost,
          "seeds": seeds, "point_steps": point_steps,
          "agent": lib.agent_digest(setting.agent_extra), "probes": saved_probes,
          "reward": np.stack(reward, axis=1).tolist()}


def reward_per_seed(saved: dict, shard_dir: str) -> str:
  """Each seed's reward per step over the rerun; for the paper's agent, beside
  its committed final shard's over the same steps. Not equal to the letter:
  the finals ran as one 10-lane program, and a program of another width
  rounds differently, so the sampled trajectories part after the first few
  curve points."""
  n = len(saved["reward"][0])
  steps = n * saved["point_steps"]
  mine = np.sum(saved["reward"], axis=1) / steps
  finals = [None] * len(saved["seeds"])
  if saved["variant"] == "paper":
    setting = lib.Setting("fixed", entropy_cost=saved["entropy_cost"])
    finals = [lib._read_shard(lib.shard_path(shard_dir, "final", setting, seed))
              for seed in saved["seeds"]]
  return f"reward per step over these {steps:,} steps: " + ", ".join(
      f"seed {seed} {r:.3f}" + (f" (final run {np.sum(f['reward'][:n]) / steps:.3f})" if f else "")
      for seed, r, f in zip(saved["seeds"], mine, finals))


def table(saved: dict, shard_dir: str) -> str:
  point_steps = saved["point_steps"]
  reward = np.asarray(saved["reward"])
  cols = [("entropy", "policy entropy"), ("logit_gap", "logit max-min"),
          ("policy_dormant1", "policy tau-dormant L1"), ("policy_dormant2", "L2"),
          ("policy_dead2", "policy dead L2"), ("policy_srank", "policy srank"),
          ("policy_weight_norm", "policy torso norm"), ("value_dormant2", "value tau-dormant L2"),
          ("value_srank", "value srank"), ("value_weight_norm", "value torso norm")]
  lines = ["| env steps | reward per step (previous 1M) | " + " | ".join(c[1] for c in cols) + " |",
           "|---" * (len(cols) + 2) + "|"]
  per_million = 1_000_000 // point_steps
  for p in saved["probes"]:
    if p["env_steps"] % 1_000_000:
      continue
    end = p["env_steps"] // point_steps
    r = (f"{reward[:, end - per_million:end].sum(axis=1).mean() / 1e6:.3f}"
         if end >= per_million else "")
    lines.append(f"| {p['env_steps']:,} | {r} | "
                 + " | ".join(f"{np.mean(p[k]):.3f}" if "norm" not in k and "srank" not in k
                              else f"{np.mean(p[k]):.1f}" for k, _ in cols) + " |")
  return "\n".join(lines) + (
      f"\n\n`{saved['setting']}` ({saved['variant']}), seeds "
      f"{', '.join(map(str, saved['seeds']))} (the final runs' first lanes), mean over seeds; "
      f"probes over all 13,800 states. {reward_per_seed(saved, shard_dir)}.")


def plot(saves: Dict[str, dict], path: str) -> None:
  """Reward per step against the probes, per seed, over the run; a row per variant."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  panels = [("reward per step (previous probe period)", None),
            ("tau-dormant units, last layer", ("policy_dormant2", "value_dormant2")),
            ("effective rank of the last features", ("policy_srank", "value_srank")),
            ("torso weight norm", ("policy_weight_norm", "value_weight_norm"))]
  fig, axes = plt.subplots(len(saves), len(panels), figsize=(4 * len(panels), 3.2 * len(saves)),
                           squeeze=False, sharex=True, sharey="col")
  for row, (variant, saved) in zip(axes, saves.items()):
    reward = np.asarray(saved["reward"])
    per = saved["probes"][1]["env_steps"] // saved["point_steps"]
    x = np.array([p["env_steps"] for p in saved["probes"]]) / 1e6
    for ax, (title, keys) in zip(row, panels):
      for i, seed in enumerate(saved["seeds"]):
        if keys is None:
          n = reward.shape[1] // per
          r = reward[i, :n * per].reshape(n, per).sum(axis=1) / (per * saved["point_steps"])
          ax.plot(x[1:n + 1], r, color=f"C{i}", lw=1, label=f"seed {seed}")
          continue
        for key, ls in zip(keys, ("-", "--")):
          ax.plot(x, [p[key][i] for p in saved["probes"]], color=f"C{i}", ls=ls, lw=1,
                  label=f"{key.split('_')[0]}, seed {seed}")
      ax.set_title(f"{variant}: {title}", fontsize=9)
      ax.set_xlabel("env steps (M)")
      ax.grid(alpha=0.3)
      ax.legend(fontsize=6)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv):
  del argv
  lib.use_classic_cpu_runtime()
  out = _OUT.value
  if not _REPLOT.value:
    saved = run(_STEPS.value, _PROBE_EVERY.value, [int(s) for s in _SEEDS.value],
                _ENTROPY_COST.value, _VARIANT.value)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"plasticity-{_VARIANT.value}.json"), "w") as f:
      json.dump(saved, f)
  saves = {}
  for variant in VARIANTS:
    path = os.path.join(out, f"plasticity-{variant}.json")
    if os.path.exists(path):
      with open(path) as f:
        saves[variant] = json.load(f)
  if not saves:
    raise app.UsageError(f"no saved probes in {out}: run without --replot first")
  png = os.path.join(out, "plasticity.png")
  plot(saves, png)
  body = "\n\n".join(table(saved, out) for saved in saves.values()) + (
      f"\n\nMade by `python -m benchmarks.two_colours_plasticity [--variant=...]`."
      f"\n\n![plasticity.png]({png})")
  markdown.replace_block(_RESULTS.value, BEGIN, END, body, title="Results",
                         heading="### Where the late decline comes from (probes)\n\n")


if __name__ == "__main__":
  app.run(main)
