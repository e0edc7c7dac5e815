"""The grid-world experiment's settings, jitted runner and resumable jobs.

The command line is benchmarks/two_colours.py (its docstring describes the
protocol); the report is benchmarks/two_colours_report.py.
"""

import dataclasses
import functools
import glob
import hashlib
import json
import os
import pickle
import threading
import time
from typing import Dict, List, Optional, Sequence, Tuple

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

import envs
from envs import two_colours
from launch.configs import two_colours_bmg as paper_config
from podmeta import builder
from podmeta import learning
from podmeta.config import Config
from podmeta.meta import update as meta_update
from podmeta.types import Trajectory

# The paper's agent and meta setup, defined once with the distributed
# config of the same experiment.
AGENT = paper_config.PAPER_AGENT
META = paper_config.PAPER_META

FIXED_COSTS = (0.0, 0.1, 0.2, 0.4, 0.8)
META_LRS = (1e-3, 1e-4, 1e-5, 1e-6)
KS = (1, 3, 6)
LS = (8, 16)
MG_OUTER_ENTROPY = (0.0, 0.1)
METHODS = ("fixed", "mg", "mg_ctx", "bmg", "bmg_ctx")
HEADLINE = ("fixed", "mg_ctx", "bmg_ctx")
FINAL_SEED0 = 100  # final runs use seeds no tuning run saw
RESUME_DIR = "_resume"  # under the shard directory: running programs' portable state
# A policy entropy below this (of ln 4 = 1.386) repeats one action: "saturated".
SATURATED = 0.01


@dataclasses.dataclass(frozen=True)
class Setting:
  """One point of a method's grid."""
  method: str  # one of METHODS
  entropy_cost: float = 0.0  # fixed
  meta_lr: float = 0.0
  k: int = 1
  l: int = 1  # BMG's target steps
  outer_entropy: float = 0.0  # MG's outer entropy weight
  # Ablations only (benchmarks/two_colours_ablations.py); the protocol's grids
  # keep the defaults: MetaConfig fields over META and Config fields over
  # AGENT as (name, value) pairs, the meta-learned entropy cost's initial
  # value, the world's reward on steps that collect nothing.
  meta_extra: Tuple = ()
  agent_extra: Tuple = ()
  init_entropy_cost: float = 0.5
  step_reward: float = 0.0

  @property
  def name(self) -> str:
    if self.method == "fixed":
      name = f"fixed-ec{self.entropy_cost:g}"
    else:
      tail = f"L{self.l}" if self.method.startswith("bmg") else f"oe{self.outer_entropy:g}"
      name = f"{self.method}-lr{self.meta_lr:.0e}-K{self.k}-{tail}"
    name += "".join(f"-{k}={v}" for k, v in self.meta_extra + self.agent_extra)
    if self.init_entropy_cost != 0.5:
      name += f"-init{self.init_entropy_cost:g}"
    return name + (f"-sr{self.step_reward:g}" if self.step_reward else "")

  @property
  def program(self) -> Tuple:
    """Settings with the same program differ only in vmapped values."""
    return (self.method, self.k, self.l, self.outer_entropy, self.meta_extra,
            self.agent_extra, self.init_entropy_cost, self.step_reward)

  @property
  def lane_value(self) -> float:
    return self.entropy_cost if self.method == "fixed" else self.meta_lr

  def overrides(self) -> dict:
    if self.method == "fixed":
      return dict(entropy_cost=self.entropy_cost)
    meta = dict(META, method=self.method.replace("_ctx", ""), learning_rate=self.meta_lr,
                inner_steps=self.k, context="reward" if self.method.endswith("_ctx") else "none",
                **dict(self.meta_extra))
    meta["hyperparams"] = {"entropy_cost": dict(META["hyperparams"]["entropy_cost"],
                                                init=self.init_entropy_cost)}
    if self.method.startswith("bmg"):
      meta.update(target_steps=self.l, outer_entropy_cost=0.0)
    else:
      meta.update(outer_entropy_cost=self.outer_entropy)
    return dict(meta=meta)

  def config(self, seed: int = 0) -> Config:
    return Config.from_mapping({**AGENT, **dict(self.agent_extra), **self.overrides(),
                                "seed": seed})


def grid(method: str) -> List[Setting]:
  """The paper's sweep for a method (Luketina et al. App. A.3)."""
  if method == "fixed":
    return [Setting("fixed", entropy_cost=e) for e in FIXED_COSTS]
  if method.startswith("mg"):
    return [Setting(method, meta_lr=lr, k=k, outer_entropy=oe)
            for oe in MG_OUTER_ENTROPY for k in KS for lr in META_LRS]
  return [Setting(method, meta_lr=lr, k=k, l=l) for l in LS for k in KS for lr in META_LRS]


def use_classic_cpu_runtime() -> None:
  """XLA's CPU thunk runtime runs these small-op scans about 20% slower than
  the classic one (measured here). Call from a command's main, before JAX
  starts its backend."""
  if "xla_cpu_use_thunk_runtime" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_cpu_use_thunk_runtime=false").strip()


# -- the jitted runner -----------------------------------------------------------

def make_runner(config: Config, swap_every: int, learner_steps_per_point: int,
                step_reward: float = 0.0):
  """jit(vmap(run)): advances every lane by one curve point.

  run(carry, value) takes the lane's fixed entropy cost (fixed) or meta
  learning rate (meta) as a traced value, so settings that differ only in it
  share the program.
  """
  spec = envs.env_spec(config.env_id)
  network, optimizer = builder.make_network(config, spec), builder.make_optimizer(config)
  clip = dict(options=builder.loss_options(config), max_grad_norm=config.max_grad_norm)
  m = config.meta
  parameterisation = builder.make_parameterisation(config) if m.enabled else None
  n_chunks, t = config.batch_size, config.unroll_length
  env_step = functools.partial(two_colours.step, swap_every=swap_every, step_reward=step_reward)

  def make_update(value):
    if not m.enabled:
      hyper = builder.loss_hyperparams(config)._replace(entropy_cost=value)
      return learning.make_update_fn(network, optimizer, hyper, axis_name=None, **clip)
    meta_optimizer = meta_update.make_meta_optimizer(value, m.max_grad_norm, m.adam_eps)
    return meta_update.make_meta_update_fn(
        network, optimizer, parameterisation, meta_optimizer, builder.loss_hyperparams(config),
        builder.outer_hyperparams(config), m, axis_name=None, **clip)

  def act(carry, _):
    env_state, obs, params, key = carry
    key, k_act, k_env = jax.random.split(key, 3)
    logits = network.policy(params, obs[None])
    action = jax.random.categorical(k_act, logits[0]).astype(jnp.int32)
    env_state, next_obs, reward = env_step(env_state, action, k_env)
    return (env_state, next_obs, params, key), (obs, action, logits[0], reward)

  def run(carry, value):
    update = make_update(value)

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
          behaviour_logits=logits_all[idx], policy_version=jnp.zeros(idx.shape, jnp.int32),
          core_state=jnp.zeros((n_chunks, 1, 1), jnp.float32))
      learner_state, metrics = update(learner_state, batch)
      out = {"reward": jnp.sum(r), "entropy": metrics["entropy"],
             "grad_clipped": metrics["grad_clipped"], "grad_norm": metrics["grad_norm"],
             "value_loss": metrics["value_loss"],
             "entropy_cost": metrics.get("meta/entropy_cost", value)}
      return (env_state, last_obs, learner_state, key), out

    carry, out = jax.lax.scan(learner_step, carry, None, length=learner_steps_per_point)
    return carry, {"reward": jnp.sum(out["reward"]), "entropy": jnp.mean(out["entropy"]),
                   "entropy_cost": jnp.mean(out["entropy_cost"]),
                   "grad_clipped": jnp.mean(out["grad_clipped"]),
                   "grad_norm": jnp.mean(out["grad_norm"]),
                   "value_loss": jnp.mean(out["value_loss"])}

  return jax.jit(jax.vmap(run))


def initial_carry(settings: Sequence[Setting], seeds: Sequence[int]):
  """Each lane's env, learner state and key, stacked: lane i is (settings[i], seeds[i])."""
  carries = []
  for setting, seed in zip(settings, seeds):
    config = setting.config(seed)
    _, state = builder.make_update_and_state(config, envs.env_spec(config.env_id),
                                             axis_name=None)
    key = jax.random.PRNGKey(10_000 + seed)
    key, k_env = jax.random.split(key)
    env_state, obs = two_colours.reset(k_env)
    carries.append((env_state, obs, state, key))
  return jax.tree.map(lambda *xs: jnp.stack(xs), *carries)


def _program(settings: Sequence[Setting], log_every: int, swap_every: int):
  """The jitted runner of the lanes' shared program, their vmapped values, and
  the env steps per lane of one curve point (whole updates, about log_every)."""
  config = settings[0].config()
  steps_per_update = config.batch_size * config.unroll_length
  per_point = max(1, log_every // steps_per_update)
  values = jnp.asarray([s.lane_value for s in settings], jnp.float32)
  runner = make_runner(config, swap_every, per_point, settings[0].step_reward)
  return runner, values, per_point * steps_per_update


CURVES = ("reward", "entropy", "entropy_cost", "grad_clipped", "grad_norm", "value_loss")


def run_lanes(settings: Sequence[Setting], seeds: Sequence[int], steps: int, log_every: int,
              swap_every: int, partial_path: Optional[str] = None,
              save_every_seconds: float = 600.0, deadline: Optional[float] = None,
              portable_path: Optional[str] = None,
              stop: Optional[threading.Event] = None,
              source: Optional[Tuple[Tuple[str, str], Sequence[int]]] = None
              ) -> Optional[List[dict]]:
  """Runs lanes (settings[i], seeds[i]) of one program; a result dict per lane.

  With `partial_path`, the lanes' whole state is saved there every
  `save_every_seconds` (and at the deadline) and picked up again by a later
  call: the resumed run equals one never stopped. With `portable_path`, the
  same state without the meta ring buffer (its K+L-1 parameter snapshots
  are nine tenths of a meta lane's state: tens of MB per program) is saved
  there too, small enough to commit, so a run outlives the machine it ran
  on. A resume from the portable state refills the ring first: the next
  K+L-1 learner steps update the agent with the meta-parameters held, as at
  the start of a run, and the lanes' results count these `ring_refills`.
  Returns None if `deadline` (time.time()) passed or `stop` was set first
  (checked after each curve point; the state is saved). The saved states
  outlive a finished run: the caller removes them (`discard_saved`) once it
  has stored the results, so no moment holds neither.
  With `source` = ((whole path, portable path), lane indices) and no state
  of its own yet, the run starts from those lanes of a wider program's saved
  state (run_jobs splits a program so that every worker has a share).
  """
  assert len({s.program for s in settings}) == 1, "lanes must share one program"
  runner, values, point_steps = _program(settings, log_every, swap_every)
  points = max(1, steps // point_steps)
  curves = {k: [] for k in CURVES}
  done, seconds, refills = 0, 0.0, 0
  names = _lane_names(settings, seeds)
  saved, path = _latest_saved(partial_path, portable_path)
  portables = {portable_path}
  if saved is None and source is not None:
    saved, path = _latest_saved(*source[0])
    saved = None if saved is None else _lanes_of(saved, source[1])
    portables.add(source[0][1])
  if saved is None:
    carry = initial_carry(settings, seeds)
  else:
    _check_saved_matches(saved, path, point_steps, swap_every)
    if saved.get("lanes", names) != names:
      raise ValueError(f"{path} holds the lanes {saved['lanes']}, not this program's")
    carry, curves, done, seconds = saved["carry"], saved["curves"], saved["done"], saved["seconds"]
    refills = saved.get("ring_refills", 0)
    if path in portables:
      carry = _with_ring(carry, initial_carry(settings, seeds))
      refills += int(_has_ring(carry))
    logging.info("resuming %s at point %d/%d", path, done, points)
  start = last_log = last_save = time.time()
  first = done
  label = f"{settings[0].program} x{len(settings)} lanes"
  while done < points:
    carry, out = runner(carry, values)
    out = jax.device_get(out)
    for k in CURVES:
      curves[k].append(np.asarray(out[k]))
    done += 1
    now = time.time()
    if now - last_log > 60 or done == points:
      last_log = now
      logging.info("%s: %d/%d env steps per lane, %.0f steps/s summed over lanes, "
                   "reward/step %.3f", label, done * point_steps, points * point_steps,
                   (done - first) * point_steps * len(settings) / (now - start),
                   float(np.mean(curves["reward"][-1])) / point_steps)
    out_of_time = done < points and ((deadline is not None and now > deadline)
                                     or (stop is not None and stop.is_set()))
    if (partial_path or portable_path) and (now - last_save > save_every_seconds
                                            or out_of_time):
      last_save = now
      saved = {"carry": jax.device_get(carry), "curves": curves, "done": done,
               "seconds": seconds + now - start, "ring_refills": refills,
               "point_steps": point_steps, "swap_every": swap_every,
               "lanes": names}
      if partial_path:
        _save_pickle(partial_path, saved)
      if portable_path:
        _save_pickle(portable_path, dict(saved, carry=_with_ring(saved["carry"], None)))
    if out_of_time:
      return None
  seconds += time.time() - start
  results = []
  for i, (setting, seed) in enumerate(zip(settings, seeds)):
    results.append({
        "setting": setting.name, "method": setting.method, "seed": int(seed),
        "spec": dataclasses.asdict(setting), "point_steps": point_steps,
        "env_steps": points * point_steps, "swap_every": swap_every,
        "lanes": len(settings), "program_seconds": seconds, "ring_refills": refills,
        "agent": agent_digest(setting.agent_extra),
        **{k: [float(np.asarray(v)[i]) for v in curves[k]] for k in CURVES}})
  return results


def saved_lanes(path: str, steps: int) -> Optional[List[dict]]:
  """run_lanes' results saved at `path`, if they cover `steps` and were made
  with this agent (the ablation tables' rows); else None."""
  if not os.path.exists(path):
    return None
  with open(path) as f:
    lanes = json.load(f)
  ok = lanes[0]["env_steps"] >= steps and made_with_this_agent(lanes[0])
  return lanes if ok else None


def save_lanes(path: str, lanes: List[dict]) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + ".tmp", "w") as f:
    json.dump(lanes, f)
  os.replace(path + ".tmp", path)


def collect_rows(names: Sequence[str], requested: Optional[Sequence[str]], run, path,
                 replot: bool = False) -> Dict[str, List[dict]]:
  """The rows of an ablation table, in `names` order: `run(row)` for each
  requested row (all by default; none with `replot`), the saved results at
  `path(row)` for the others that have them. Raises ValueError naming an
  unknown row."""
  requested = list(requested or names)
  unknown = [r for r in requested if r not in names]
  if unknown:
    raise ValueError(f"unknown row {unknown[0]!r} (known: {', '.join(names)})")
  results = {}
  for row in names:
    if row in requested and not replot:
      results[row] = run(row)
    elif os.path.exists(path(row)):
      with open(path(row)) as f:
        results[row] = json.load(f)
  return results


def _save_pickle(path, obj):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "wb") as f:
    pickle.dump(obj, f)
  os.replace(tmp, path)


def discard_saved(*paths) -> None:
  """Removes a finished program's saved states (see run_lanes)."""
  for path in paths:
    try:
      if path:
        os.remove(path)
    except FileNotFoundError:  # never saved, or another worker removed it
      pass


def _check_saved_matches(saved: dict, path: str, point_steps: int, swap_every: int) -> None:
  """A saved state resumes only the run it was made by: its curve points and
  colour swaps must be this run's (a state saved before it recorded them is
  taken to match)."""
  for name, want in (("point_steps", point_steps), ("swap_every", swap_every)):
    if saved.get(name, want) != want:
      raise ValueError(f"{path} was saved by a run with {name}={saved[name]}, this one has "
                       f"{want}: rerun with the flags it was made with (--log_every, "
                       "--swap_every), or move it away to start afresh")


def _latest_saved(*paths) -> Tuple[Optional[dict], Optional[str]]:
  """The saved state that got furthest among `paths` (the first on ties), and its path."""
  best, best_path = None, None
  for path in paths:
    if path and os.path.exists(path):
      with open(path, "rb") as f:
        saved = pickle.load(f)
      if best is None or saved["done"] > best["done"]:
        best, best_path = saved, path
  return best, best_path


def _lane_names(settings: Sequence[Setting], seeds: Sequence[int]) -> List[Tuple[str, int]]:
  """How a saved state names its lanes: (setting name, seed) each."""
  return [(st.name, int(seed)) for st, seed in zip(settings, seeds)]


def _lanes_of(saved: dict, idx: Sequence[int]) -> dict:
  """The saved state of lanes `idx` alone: every leaf of the carry and every
  curve point is stacked over lanes (jit(vmap(run))), so lanes come apart."""
  idx = np.asarray(idx)
  return dict(saved, carry=jax.tree.map(lambda x: np.asarray(x)[idx], saved["carry"]),
              curves={k: [np.asarray(v)[idx] for v in vs] for k, vs in saved["curves"].items()},
              lanes=[tuple(saved["lanes"][i]) for i in idx])


def _has_ring(carry) -> bool:
  meta = carry[2].meta
  return isinstance(meta, meta_update.MetaState) and meta.ring != ()


def _with_ring(carry, ring_from):
  """`carry` with its lanes' meta ring taken from the carry `ring_from`
  (None: dropped); unchanged when the lanes keep no ring."""
  if not _has_ring(carry if ring_from is None else ring_from):
    return carry
  env_state, obs, state, key = carry
  ring = None if ring_from is None else ring_from[2].meta.ring
  return env_state, obs, state._replace(meta=state.meta._replace(ring=ring)), key


# -- the protocol ----------------------------------------------------------------

def agent_digest(agent_extra: Sequence = ()) -> str:
  """Names the agent and meta configuration a shard was made with: AGENT with
  a setting's `agent_extra` over it, and META. A row that overrides a field
  of AGENT keeps its digest when AGENT later takes the same value."""
  agent = {**AGENT, **{k: v for k, v in agent_extra}}
  text = json.dumps({"agent": agent, "meta": META}, sort_keys=True, default=str)
  return hashlib.sha1(text.encode()).hexdigest()[:12]


def made_with_this_agent(shard: dict) -> bool:
  return shard.get("agent") == agent_digest(shard.get("spec", {}).get("agent_extra", ()))


def shard_path(out: str, phase: str, setting: Setting, seed: int) -> str:
  return os.path.join(out, phase, setting.name, f"seed{seed}.json")


def _read_shard(path: str) -> Optional[dict]:
  """The shard at `path` if it was made with this agent, else None."""
  if not os.path.exists(path):
    return None
  with open(path) as f:
    shard = json.load(f)
  return shard if made_with_this_agent(shard) else None


def load_shards(out: str, phase: str) -> List[dict]:
  """The phase's shards made with this agent; others (an older agent) are left out."""
  shards, stale = [], 0
  for path in sorted(glob.glob(os.path.join(out, phase, "*", "seed*.json"))):
    shard = _read_shard(path)
    if shard is None:
      stale += 1
    else:
      shards.append(shard)
  if stale:
    logging.warning("%s: %d shards were made with another agent configuration; left out "
                    "(and rerun by the protocol)", phase, stale)
  return shards


def reward_per_step(shard: dict) -> float:
  return float(np.sum(shard["reward"]) / shard["env_steps"])


def best_settings(out: str, methods: Sequence[str]) -> Dict[str, Setting]:
  """Each method's tuning winner (highest mean reward per step over its tuning seeds)."""
  by_setting: Dict[str, List[dict]] = {}
  for shard in load_shards(out, "tune"):
    by_setting.setdefault(shard["setting"], []).append(shard)
  best = {}
  for method in methods:
    scored = [(np.mean([reward_per_step(s) for s in by_setting[st.name]]), st)
              for st in grid(method) if st.name in by_setting]
    if scored and len(scored) == len(grid(method)):
      best[method] = max(scored, key=lambda x: x[0])[1]
  return best


Job = Tuple[str, Setting, int, int]  # (phase, setting, seed, env steps)


@dataclasses.dataclass(frozen=True)
class Program:
  """One program of run_jobs: its jobs (one per lane) and, where its lanes
  have run before, the saved states (whole, portable) of the program they ran
  in (this one, or a wider one split since), their indices there and the env
  steps per lane those states hold."""
  jobs: Tuple[Job, ...]
  source: Optional[Tuple[str, str]] = None
  source_lanes: Tuple[int, ...] = ()
  done_steps: int = 0

  @property
  def cost(self) -> float:
    """The work left, in fixed-agent env steps (a meta update costs ~3K+2 of them)."""
    setting, steps = self.jobs[0][1], self.jobs[0][3]
    per_step = 1.0 if setting.method == "fixed" else 3.0 * setting.k + 2.0
    return len(self.jobs) * max(0, steps - self.done_steps) * per_step

  def halves(self) -> List["Program"]:
    n = len(self.jobs)
    return [dataclasses.replace(
        self, jobs=tuple(self.jobs[i] for i in part),
        source_lanes=tuple(self.source_lanes[i] for i in part) if self.source else ())
        for part in split_lanes(list(range(n)), -(-n // 2))]


def assign(programs: Sequence[Program], workers: int) -> List[List[Program]]:
  """Longest-processing-time-first split of the programs over workers."""
  loads, shares = [0.0] * workers, [[] for _ in range(workers)]
  for program in sorted(programs, key=lambda p: p.cost, reverse=True):
    i = int(np.argmin(loads))
    loads[i] += program.cost
    shares[i].append(program)
  return shares


def _longest(shares: Sequence[Sequence[Program]]) -> float:
  return max(sum(p.cost for p in share) for share in shares)


def split_lanes(group: Sequence, max_lanes: int) -> List[List]:
  """A program's lanes cut into the fewest programs of at most `max_lanes`
  (0: no limit), as equal in size as they can be, in order."""
  n = len(group)
  parts = -(-n // max_lanes) if max_lanes else 1
  return [list(group[i * n // parts:(i + 1) * n // parts]) for i in range(parts)]


def _digest(jobs: Sequence[Job]) -> str:
  """Names a program's saved state: its agent, program, steps, lane values and seeds."""
  settings, steps = [j[1] for j in jobs], jobs[0][3]
  key = (agent_digest(settings[0].agent_extra)
         + "-".join(str(p) for p in settings[0].program) + f"-{steps}-") + "_".join(
      f"{s.lane_value:g}x{j[2]}" for s, j in zip(settings, jobs))
  return hashlib.sha1(key.encode()).hexdigest()[:16]


def _state_paths(out: str, partial_dir: Optional[str], phase: str,
                 digest: str) -> Tuple[str, str]:
  return (os.path.join(partial_dir or os.path.join(out, "_partial"), phase, f"{digest}.pkl"),
          os.path.join(out, RESUME_DIR, phase, f"{digest}.pkl"))


def _lane_key(job: Job) -> Tuple[str, str, int]:
  return job[0], job[1].name, int(job[2])


def _todo(jobs: Sequence[Job], out: str) -> Dict[Tuple[str, str, int], Job]:
  """The jobs without a shard (of this agent), by lane, in order."""
  return {_lane_key(j): j for j in jobs
          if _read_shard(shard_path(out, j[0], j[1], j[2])) is None}


def _saved_programs(jobs: Sequence[Job], out: str, partial_dir: Optional[str]):
  """(state paths, lane keys, env steps per lane done) of each program that
  saved a state of these jobs, furthest first. A state counts only if its
  file name is the digest of its lanes' jobs: states of other jobs (another
  method, step count or agent) are not these jobs' and are left alone."""
  by_lane = {_lane_key(j): j for j in jobs}
  found = {}
  for phase in sorted({j[0] for j in jobs}):
    for path in sorted(p for directory in _state_paths(out, partial_dir, phase, "*")
                       for p in glob.glob(directory)):
      try:
        with open(path, "rb") as f:
          saved = pickle.load(f)
      except FileNotFoundError:  # another worker discarded it meanwhile
        continue
      lanes = [(phase, name, int(seed)) for name, seed in saved.get("lanes", ())]
      if not lanes or any(lane not in by_lane for lane in lanes):
        continue
      digest = _digest([by_lane[lane] for lane in lanes])
      if os.path.basename(path) != f"{digest}.pkl":
        continue
      done = saved["done"] * saved.get("point_steps", 0)
      paths = _state_paths(out, partial_dir, phase, digest)
      found[digest] = (paths, lanes, max(done, found.get(digest, (0, 0, 0))[2]))
  return sorted(found.values(), key=lambda f: (-f[2], f[0]))


def plan(jobs: Sequence[Job], out: str, partial_dir: Optional[str], max_lanes: int,
         workers: int) -> List[List[Program]]:
  """The programs of the jobs without a shard, and each worker's share.

  Lanes that have run before stay with the saved state that got furthest:
  a run resumes whatever --max_lanes it was started with. A state left with
  no lane to run (all finished, or taken further by the programs split off
  it) is discarded. The other lanes are grouped by program, at most
  `max_lanes` to one. Then the widest program is cut in two while that
  shortens the longest share by more than 5% (its lanes' extra compilation):
  the one program left of a final can run on both cores.
  """
  todo = _todo(jobs, out)
  programs, claimed = [], set()
  for paths, lanes, done in _saved_programs(jobs, out, partial_dir):
    idx = tuple(i for i, lane in enumerate(lanes) if lane in todo and lane not in claimed)
    if not idx:
      discard_saved(*paths)
      continue
    claimed.update(lanes[i] for i in idx)
    programs.append(Program(tuple(todo[lanes[i]] for i in idx), paths, idx, done))
  fresh: Dict[Tuple, List] = {}
  for lane, job in todo.items():
    if lane not in claimed:
      fresh.setdefault((job[0], job[1].program, job[3]), []).append(job)
  programs += [Program(tuple(part)) for group in fresh.values()
               for part in split_lanes(group, max_lanes)]
  shares = assign(programs, workers)
  while any(len(p.jobs) > 1 for p in programs):
    widest = max((p for p in programs if len(p.jobs) > 1), key=lambda p: p.cost)
    trial = [p for p in programs if p is not widest] + widest.halves()
    trial_shares = assign(trial, workers)
    if _longest(trial_shares) > 0.95 * _longest(shares):
      break
    programs, shares = trial, trial_shares
  return shares


def run_jobs(jobs: List[Job], out: str, log_every: int,
             swap_every: int, save_every_seconds: float, deadline: Optional[float],
             worker: Tuple[int, int] = (0, 1), partial_dir: Optional[str] = None,
             max_lanes: int = 0, stop: Optional[threading.Event] = None) -> bool:
  """jobs: (phase, setting, seed, steps). Runs those without a shard, grouped by program.

  `worker` = (index, count): this process runs its share of the programs
  (see `plan`; every worker plans the same from the same files).
  `max_lanes` caps a program's lanes: a final's 10 seeds as two programs of 5
  run on both workers and write their shards twice as soon, which matters
  when a 10M-step program takes most of a working session.
  Running programs save their whole state under `partial_dir` (default:
  out/_partial) and their portable state (no meta ring; see run_lanes) under
  out/_resume, which the repository keeps.
  Returns False if the deadline or `stop` stopped it (see run_lanes).
  """
  # Cheapest programs first (the headline methods first among equals), so that
  # a run stopped by its deadline has written the shards of as many settings,
  # and of the ones that matter most, as it could.
  def order(program):
    return program.cost, program.jobs[0][1].method not in HEADLINE
  share = plan(jobs, out, partial_dir, max_lanes, worker[1])[worker[0]]
  for i, program in enumerate(sorted(share, key=order)):
    if stop is not None and stop.is_set():
      return False
    if i and deadline is not None and time.time() > deadline:
      return False  # rather than compile a program only to save its first point
    group = program.jobs
    phase, steps = group[0][0], group[0][3]
    settings = [j[1] for j in group]
    seeds = [j[2] for j in group]
    partial, portable = _state_paths(out, partial_dir, phase, _digest(group))
    logging.info("%s: %s, %d lanes x %d env steps", phase, settings[0].method, len(group), steps)
    source = (program.source, program.source_lanes) if program.source else None
    results = run_lanes(settings, seeds, steps, log_every, swap_every, partial,
                        save_every_seconds, deadline, portable, stop, source)
    if results is None:
      return False
    for (ph, setting, seed, _), result in zip(group, results):
      path = shard_path(out, ph, setting, seed)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      tmp = path + ".tmp"
      with open(tmp, "w") as f:
        json.dump(result, f)
      os.replace(tmp, path)
    discard_saved(partial, portable)
  # A program split off a wider one leaves that one's state behind until its
  # last lane has a shard.
  todo = _todo(jobs, out)
  for paths, lanes, _ in _saved_programs(jobs, out, partial_dir):
    if not any(lane in todo for lane in lanes):
      discard_saved(*paths)
  return True


# -- throughput ------------------------------------------------------------------

def measure_throughput(setting: Setting, lanes: int, points: int, log_every: int = 10_000,
                       swap_every: int = two_colours.SWAP_EVERY) -> dict:
  """Agent env steps/s summed over `lanes` vmapped seeds of one setting.

  The first call (compilation) is timed apart; then `points` curve points,
  each `log_every` env steps per lane, are timed end to end (acting, the
  agent's update and, for meta methods, the meta-update).
  """
  settings = [setting] * lanes
  runner, values, point_steps = _program(settings, log_every, swap_every)
  carry = initial_carry(settings, list(range(lanes)))
  start = time.time()
  carry, out = runner(carry, values)
  jax.block_until_ready(out)
  compile_seconds = time.time() - start
  start = time.time()
  for _ in range(points):
    carry, out = runner(carry, values)
  jax.block_until_ready(out)
  seconds = time.time() - start
  return {"setting": setting.name, "method": setting.method, "lanes": lanes,
          "env_steps": points * point_steps * lanes, "seconds": seconds,
          "compile_seconds": compile_seconds,
          "steps_per_second": points * point_steps * lanes / seconds}
