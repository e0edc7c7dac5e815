r"""The BMG paper's grid-world comparison, on this machine: writes RESULTS.md.

  python -m benchmarks.two_colours                     # the full table (long)
  python -m benchmarks.two_colours --steps=1000000 --seeds=2 --methods=bmg_ctx

Methods (Flennerhag et al. 2021, arXiv 2109.04504; Luketina et al. 2022):
a fixed entropy cost in {0, 0.1, 0.2, 0.4, 0.8}; MG and BMG meta-learning the
entropy cost, each without and with reward context. The agent is the
distributed learner's own update (`podmeta.builder.make_update_and_state`,
the same loss and meta-update code), here with `axis_name=None` and run with
the JAX-native two-colours env inside one jitted `lax.scan`, vmapped over
seeds. Every learner step acts `unroll_length` steps per sub-batch with the
current parameters, then applies the update.

Outputs: RESULTS.md (the table between its markers), and
benchmarks/results/two_colours.{json,png} (learning curves) and
two_colours_entropy.png (the learned entropy cost around colour swaps).
"""

import functools
import json
import os
import time
from typing import Dict, List

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

import envs
from benchmarks import markdown
from envs import two_colours
from podmeta import builder
from podmeta.config import Config
from podmeta.replay import Trajectory

_STEPS = flags.DEFINE_integer("steps", 1_000_000, "Environment steps per seed.")
_SEEDS = flags.DEFINE_integer("seeds", 3, "Seeds per method (vmapped).")
_METHODS = flags.DEFINE_list("methods", None, "Subset of methods to run (default: all).")
_LOG_EVERY = flags.DEFINE_integer("log_every", 10_000, "Env steps per point of the curves.")
_SWAP_EVERY = flags.DEFINE_integer("swap_every", two_colours.SWAP_EVERY,
                                   "Steps between colour swaps.")
_OUT = flags.DEFINE_string("out", "benchmarks/results", "Directory for json and plots.")
_RESULTS = flags.DEFINE_string("results_md", "RESULTS.md", "Markdown file to update.")
_REPLOT = flags.DEFINE_bool("replot", False,
                            "Only redraw the table and plots from the saved json.")

# The agent of Luketina et al. 2022 (Table 3): separate 2x256 ReLU policy and
# value MLPs, SGD at 0.1, an update every 16 steps, discount 0.99.
AGENT = dict(
    env_id=two_colours.ENV_ID, hidden_sizes=(256, 256), shared_torso=False, optimizer="sgd",
    learning_rate=0.1, max_grad_norm=1.0, unroll_length=16, batch_size=1, discount=0.99,
    vtrace_lambda=1.0, baseline_cost=1.0, entropy_cost=0.0,
    # Unused here (no actors, replay or launch) but must validate.
    replay_max_size=64, min_replay_size=1, max_env_steps=1)

ENTROPY = {"entropy_cost": {"init": 0.1, "low": 0.0, "high": 1.0}}
META_COMMON = dict(hyperparams=ENTROPY, inner_steps=1, target_data="last_inner",
                   learning_rate=3e-4, adam_eps=1e-4, max_grad_norm=1.0,
                   outer_entropy_cost=0.1, meta_hidden_size=32, context_window=10)


def methods() -> Dict[str, dict]:
  out = {f"fixed_{e}": dict(entropy_cost=e) for e in (0.0, 0.1, 0.2, 0.4, 0.8)}
  for ctx in ("none", "reward"):
    suffix = "" if ctx == "none" else "_ctx"
    out["mg" + suffix] = dict(meta=dict(META_COMMON, method="mg", context=ctx))
    out["bmg" + suffix] = dict(meta=dict(META_COMMON, method="bmg", context=ctx, target_steps=4,
                                         matching="kl", target_update="agent"))
  # BMG with a one-step target (only the outer step): without the meta-learned
  # rule inside the bootstrap it cannot reward itself for larger entropy
  # costs (see RESULTS.md).
  for ctx in ("none", "reward"):
    suffix = "" if ctx == "none" else "_ctx"
    out["bmg_l1" + suffix] = dict(meta=dict(META_COMMON, method="bmg", context=ctx,
                                            target_steps=1, matching="kl",
                                            target_update="agent"))
  return out


LABELS = {"fixed": "fixed entropy cost", "mg": "MG", "mg_ctx": "MG + reward context",
          "bmg_l1": "BMG, L = 1", "bmg_l1_ctx": "BMG, L = 1, + reward context",
          "bmg": "BMG, L = 4", "bmg_ctx": "BMG, L = 4, + reward context"}
PUBLISHED = {"fixed": "1.24 ± 0.09", "mg": "1.29 ± 0.08", "bmg": "1.32 ± 0.08",
             "mg_ctx": "1.58 ± 0.06", "bmg_ctx": "1.74 ± 0.03"}


def make_config(overrides: dict, seed: int) -> Config:
  return Config.from_mapping({**AGENT, **overrides, "seed": seed})


def make_runner(config: Config, swap_every: int, learner_steps_per_point: int):
  """jit(vmap(run)): advances every seed by one curve point of learner steps."""
  spec = envs.env_spec(config.env_id)
  network = builder.make_network(config, spec)
  update, _ = builder.make_update_and_state(config, spec, axis_name=None)
  n_chunks, t = config.batch_size, config.unroll_length
  env_step = functools.partial(two_colours.step, swap_every=swap_every)

  def act(carry, _):
    env_state, obs, params, key = carry
    key, k_act, k_env = jax.random.split(key, 3)
    logits, _ = network.apply(params, obs[None])
    action = jax.random.categorical(k_act, logits[0]).astype(jnp.int32)
    env_state, next_obs, reward = env_step(env_state, action, k_env)
    return (env_state, next_obs, params, key), (obs, action, logits[0], reward)

  def learner_step(carry, _):
    env_state, obs, learner_state, key = carry
    (env_state, last_obs, _, key), (o, a, lg, r) = jax.lax.scan(
        act, (env_state, obs, learner_state.params, key), None, length=n_chunks * t)
    # One continuing stream cut into n_chunks unrolls of t transitions that
    # share their boundary observations; reward_t arrives with x_t.
    obs_all = jnp.concatenate([o, last_obs[None]])
    act_all = jnp.concatenate([a, jnp.zeros((1,), jnp.int32)])
    logits_all = jnp.concatenate([lg, lg[-1:]])
    rew_all = jnp.concatenate([jnp.zeros((1,), jnp.float32), r])
    idx = jnp.arange(n_chunks)[:, None] * t + jnp.arange(t + 1)[None]
    batch = Trajectory(
        observation=obs_all[idx], action=act_all[idx], reward=rew_all[idx],
        discount=jnp.ones(idx.shape, jnp.float32), is_first=jnp.zeros(idx.shape, bool),
        behaviour_logits=logits_all[idx], policy_version=jnp.zeros(idx.shape, jnp.int32))
    learner_state, metrics = update(learner_state, batch)
    out = {"reward": jnp.sum(r), "entropy": metrics["entropy"]}
    out["entropy_cost"] = metrics.get("meta/entropy_cost", jnp.float32(config.entropy_cost))
    return (env_state, last_obs, learner_state, key), out

  def run(carry):
    carry, out = jax.lax.scan(learner_step, carry, None, length=learner_steps_per_point)
    return carry, {"reward": jnp.sum(out["reward"]), "entropy": jnp.mean(out["entropy"]),
                   "entropy_cost": jnp.mean(out["entropy_cost"])}

  return jax.jit(jax.vmap(run))


def initial_carry(overrides: dict, seeds: List[int]):
  carries = []
  for seed in seeds:
    config = make_config(overrides, seed)
    _, state = builder.make_update_and_state(config, envs.env_spec(config.env_id),
                                             axis_name=None)
    key = jax.random.PRNGKey(10_000 + seed)
    key, k_env = jax.random.split(key)
    env_state, obs = two_colours.reset(k_env)
    carries.append((env_state, obs, state, key))
  return jax.tree.map(lambda *xs: jnp.stack(xs), *carries)


def run_method(name: str, overrides: dict, steps: int, seeds: int, log_every: int,
               swap_every: int) -> dict:
  config = make_config(overrides, 0)
  env_steps_per_learner_step = config.batch_size * config.unroll_length
  per_point = max(1, log_every // env_steps_per_learner_step)
  points = max(1, steps // (per_point * env_steps_per_learner_step))
  runner = make_runner(config, swap_every, per_point)
  carry = initial_carry(overrides, list(range(seeds)))
  rewards, entropy, entropy_cost = [], [], []
  start = last = time.time()
  for i in range(points):
    carry, out = runner(carry)
    out = jax.device_get(out)
    rewards.append(out["reward"])
    entropy.append(out["entropy"])
    entropy_cost.append(out["entropy_cost"])
    if time.time() - last > 30 or i == points - 1:
      last = time.time()
      done = (i + 1) * per_point * env_steps_per_learner_step
      logging.info("%s: %d/%d env steps per seed, %.0f steps/s (all seeds), "
                   "reward/step %.3f", name, done, steps, done * seeds / (last - start),
                   float(np.mean(rewards[-1])) / (per_point * env_steps_per_learner_step))
  if not np.all(np.isfinite(np.asarray(entropy_cost))):
    logging.warning("%s: non-finite entropy cost", name)
  point_steps = per_point * env_steps_per_learner_step
  return {"name": name, "seeds": seeds, "point_steps": point_steps,
          "env_steps": points * point_steps,
          "seconds": time.time() - start,
          "reward": np.asarray(rewards).T.tolist(),  # [seed, point]
          "entropy": np.asarray(entropy).T.tolist(),
          "entropy_cost": np.asarray(entropy_cost).T.tolist()}


# -- reporting -----------------------------------------------------------------

def _total_millions(result) -> np.ndarray:
  """Per seed: total reward in millions, scaled to 10M steps (the paper's horizon)."""
  totals = np.sum(np.asarray(result["reward"]), axis=1)
  return totals / result["env_steps"] * 10_000_000 / 1e6


def table(results: Dict[str, dict]) -> str:
  rows = ["| method | reward per step | total reward, M per 10M steps (ours) | published (10M steps, 10 seeds) | seeds | env steps per seed | wall time |",
          "|---|---|---|---|---|---|---|"]
  for name, r in results.items():
    total = _total_millions(r)
    per_step = total / 10.0
    group = "fixed" if name.startswith("fixed") else name.replace("_l1", "")
    label = (f"fixed entropy cost {name.split('_')[1]}" if group == "fixed" else LABELS[name])
    rows.append(f"| {label} | {per_step.mean():.3f} ± {per_step.std():.3f} | "
                f"{total.mean():.2f} ± {total.std():.2f} | {PUBLISHED[group]} | {r['seeds']} | "
                f"{r['env_steps']:,} | {r['seconds'] / 60:.0f} min |")
  return "\n".join(rows)


def plot(results: Dict[str, dict], out_dir: str, swap_every: int) -> List[str]:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  paths = []
  fig, ax = plt.subplots(figsize=(9, 4.5))
  for name, r in results.items():
    rew = np.asarray(r["reward"]) / r["point_steps"]
    window = max(1, (2 * swap_every) // r["point_steps"])  # smooth over a swap cycle
    kernel = np.ones(window) / window
    curves = np.stack([np.convolve(x, kernel, mode="valid") for x in rew])
    x = (np.arange(curves.shape[1]) + window) * r["point_steps"]
    style = ":" if name.startswith("fixed") else "-"
    ax.plot(x, curves.mean(0), style, label=name, lw=1.2)
  ax.set_xlabel("environment steps")
  ax.set_ylabel(f"reward per step (mean over seeds, {2 * swap_every:,}-step window)")
  ax.set_title("Two-colours grid world")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, ncol=2)
  fig.tight_layout()
  paths.append(os.path.join(out_dir, "two_colours.png"))
  fig.savefig(paths[-1], dpi=110)
  plt.close(fig)

  meta = {k: v for k, v in results.items() if not k.startswith("fixed")}
  if meta:
    fig = plt.figure(figsize=(9, 9))
    axes = [fig.add_subplot(3, 1, 1)]
    axes.append(fig.add_subplot(3, 1, 2, sharex=axes[0]))
    aligned = fig.add_subplot(3, 1, 3)
    for name, r in meta.items():
      ec = np.asarray(r["entropy_cost"])
      x = np.arange(ec.shape[1]) * r["point_steps"]
      # Four swap cycles from the middle of the run, seed 0: the trace itself.
      lo = (ec.shape[1] // 2 // (2 * swap_every // r["point_steps"] or 1)) * (
          2 * swap_every // r["point_steps"] or 1)
      hi = min(ec.shape[1], lo + 4 * swap_every // r["point_steps"])
      axes[0].plot(x[lo:hi], ec[0, lo:hi], label=name, lw=1)
      rew = np.asarray(r["reward"])[0, lo:hi] / r["point_steps"]
      axes[1].plot(x[lo:hi], rew, label=name, lw=1)
      # Swap-aligned: the entropy cost against steps since the last swap,
      # minus its mean over that swap period, averaged over periods and seeds.
      per = swap_every // r["point_steps"]
      periods = ec.shape[1] // per
      if periods >= 2 and per >= 2:
        blocks = ec[:, :periods * per].reshape(ec.shape[0], periods, per)[:, 1:]
        blocks = blocks - blocks.mean(axis=2, keepdims=True)
        aligned.plot((np.arange(per) + 0.5) * r["point_steps"], blocks.mean(axis=(0, 1)),
                     "o-", ms=3, label=name)
    for ax in axes:
      for s in range(0, int(x[-1]) + 1, swap_every):
        if x[lo] <= s <= x[hi - 1]:
          ax.axvline(s, color="k", ls="--", lw=0.6, alpha=0.5)
      ax.grid(alpha=0.3)
    axes[0].set_ylabel("learned entropy cost")
    axes[0].set_title("Meta-learned entropy cost around colour swaps (dashed), seed 0")
    axes[0].legend(fontsize=7)
    axes[1].set_ylabel("reward per step")
    axes[1].set_xlabel("environment steps")
    aligned.axhline(0, color="k", lw=0.6)
    aligned.set_xlabel("environment steps since the last colour swap")
    aligned.set_ylabel("entropy cost - period mean")
    aligned.set_title("Swap-aligned entropy cost (all swaps but the first, all seeds)")
    aligned.grid(alpha=0.3)
    aligned.legend(fontsize=7)
    fig.tight_layout()
    paths.append(os.path.join(out_dir, "two_colours_entropy.png"))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
  return paths


def update_results_md(path: str, text: str) -> None:
  markdown.replace_block(path, "<!-- two_colours:begin -->", "<!-- two_colours:end -->", text,
                         title="Results")


def main(argv):
  del argv
  all_methods = methods()
  chosen = _METHODS.value or list(all_methods)
  unknown = [m for m in chosen if m not in all_methods]
  if unknown:
    raise app.UsageError(f"unknown method {unknown[0]!r} (known: {', '.join(all_methods)})")
  os.makedirs(_OUT.value, exist_ok=True)
  json_path = os.path.join(_OUT.value, "two_colours.json")
  results, swap_every = {}, _SWAP_EVERY.value
  if os.path.exists(json_path):  # a subset re-run keeps the other methods' results
    with open(json_path) as f:
      saved = json.load(f)
    if _REPLOT.value or saved["swap_every"] == swap_every:
      results, swap_every = saved["results"], saved["swap_every"]
    else:
      logging.warning("%s has swap_every=%d, this run %d: starting afresh", json_path,
                      saved["swap_every"], swap_every)
  for name in ([] if _REPLOT.value else chosen):
    logging.info("running %s: %d seeds x %d env steps", name, _SEEDS.value, _STEPS.value)
    results[name] = run_method(name, all_methods[name], _STEPS.value, _SEEDS.value,
                               _LOG_EVERY.value, swap_every)
    with open(json_path, "w") as f:
      json.dump({"results": results, "swap_every": swap_every,
                 "methods": {k: all_methods[k] for k in results},
                 "agent": {k: (list(v) if isinstance(v, tuple) else v) for k, v in AGENT.items()}},
                f)
  results = {k: results[k] for k in all_methods if k in results}
  paths = plot(results, _OUT.value, swap_every)
  runs = sorted({(r["seeds"], r["env_steps"]) for r in results.values()})
  made_by = "; ".join(f"`python -m benchmarks.two_colours --seeds={n} --steps={steps}`"
                      for n, steps in runs)
  text = (table(results) + f"\n\nMade by {made_by} (colour swap every {swap_every:,} steps; "
          f"`--replot` redraws from `{json_path}`).\n\n"
          + "\n".join(f"![{os.path.basename(p)}]({p})" for p in paths))
  update_results_md(_RESULTS.value, text)
  print(table(results))


if __name__ == "__main__":
  app.run(main)
