"""The typed run configuration, validated once at the boundary.

A `Config` is built from a mapping (a config file's ConfigDict plus command
line overrides) by `Config.from_mapping`, which rejects unknown fields and
out-of-range values with a `ValueError` naming the field. It is frozen: code
downstream never mutates it.
"""

import dataclasses
import json
from typing import Any, Mapping, Sequence, Tuple

from podmeta.meta.config import MetaConfig
from podmeta.validation import coerce

# Choice lists. podmeta.networks imports GAUSSIAN_STDS and CORES from here;
# tests/test_config.py checks that OPTIMIZERS and TORSOS are exactly what
# podmeta.learning and podmeta.networks build.
OPTIMIZERS = ("adam", "rmsprop", "sgd")
TORSOS = ("mlp", "conv", "impala_deep")
GAUSSIAN_STDS = ("learned", "state")
CORES = ("none", "lstm")
TORSO_NORMS = ("none", "layer")
WEIGHT_DECAY_ANCHORS = ("zero", "init")
ENV_BACKENDS = ("gymnasium", "envpool")
INFERENCE = ("cpu", "accelerator")
_REPLAYS = ("queue", "uniform")


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything a run needs besides its run directory and launch mode."""

  # Environment and actors.
  # A gymnasium id; a user's own env as "module:EnvId" (the module, on the
  # PYTHONPATH, registers it when imported).
  env_id: str = "CartPole-v1"
  # Keyword arguments of gym.make, a JSON object: '{"length": 8}'.
  env_kwargs: str = ""
  # "module:callable" wrappers applied to every env, in order, after gym.make
  # (e.g. "gymnasium.wrappers:FlattenObservation" for Dict observations).
  env_wrappers: Tuple[str, ...] = ()
  # Who steps the actors' envs: "gymnasium" (Python envs, any registered id,
  # users' own) or "envpool" (EnvPool's C++ envs, its own ids only, e.g.
  # CartPole-v1; no env_wrappers).
  env_backend: str = "gymnasium"
  # env_backend="envpool": C++ threads stepping each actor's envs (0: EnvPool's
  # default, one per env). For 32 CartPoles on 2 cores one thread steps the raw
  # vector env 1.1-1.4x faster than 32, but end to end (2 local_mp actors) it
  # changed nothing measurable (51k against 50k env steps/s): the actor's own
  # per-step costs dominate there.
  envpool_threads: int = 0
  num_actors: int = 2
  # Actors per Launchpad node (threads of one process in local_mp): a large
  # num_actors then needs num_actors / actors_per_node processes.
  actors_per_node: int = 1
  # local_mp: dead actor (and evaluator) processes are started again, at most
  # this many times in all; then the run goes on with fewer, or fails with none.
  actor_restarts: int = 10
  # An env.step exception resets the actor's envs and is counted (env_errors);
  # this many in a row end the actor, with the env's traceback in its log.
  max_consecutive_env_errors: int = 10
  envs_per_actor: int = 16
  seed: int = 0
  # How many actor steps (vector steps) between parameter requests.
  variable_update_period: int = 10
  # Where the actors' policy runs. "cpu": actor nodes of their own, each
  # evaluating its policy on its CPU. "accelerator" (Podracer's Sebulba): the
  # num_actors actors are threads of the learner's process, stepping their envs
  # on the CPU and evaluating the policy in batches on the acting devices
  # (actor_device_ids), with parameters copied device to device, never through
  # the host; the learner uses learner_device_ids. EnvPool envs step outside
  # the GIL, gymnasium's inside it.
  inference: str = "cpu"
  # Indices into this process's devices. Empty with inference="accelerator":
  # the actors take the last device and the learner the others (all of them
  # on a single-device machine, which they then share).
  actor_device_ids: Tuple[int, ...] = ()
  learner_device_ids: Tuple[int, ...] = ()

  # Network.
  # "mlp"; "conv" (IMPALA's shallow conv torso) or "impala_deep" (its ResNet), for images.
  torso: str = "mlp"
  hidden_sizes: Tuple[int, ...] = (64, 64)
  # False: separate policy and value torsos (better on small control tasks).
  shared_torso: bool = True
  # "layer": LayerNorm before each ReLU of an MLP torso (Ba et al. 2016), not
  # in IMPALA or the BMG papers' agents. On the two-colours grid world it
  # delayed the agent's late decline (+15% over 10M steps, 2 seeds) but did not
  # stop its units going dormant (RESULTS.md, "Where the late decline comes from").
  torso_norm: str = "none"
  # Box (continuous) action spaces get a diagonal Gaussian policy, its actions
  # clipped to [-1, 1] and rescaled to the env's bounds. Its std: "learned"
  # (one parameter per action dimension, independent of the state) or "state"
  # (an output of the policy head); either starts at gaussian_init_std.
  gaussian_std: str = "learned"
  gaussian_init_std: float = 1.0
  # The agent's memory: "lstm" puts an LSTM of core_size units after the torso
  # (after each torso when they are separate); "none" is feed-forward. Actors
  # carry its state, each unroll stores the state at its first step, and the
  # learner unrolls it over the unroll, reset where an episode starts.
  core: str = "none"
  core_size: int = 64

  # Unrolls and batches. A batch holds `batch_size` unrolls of `unroll_length`
  # transitions each, split evenly over the learner's devices.
  unroll_length: int = 20
  batch_size: int = 32

  # IMPALA / V-trace loss.
  discount: float = 0.99
  vtrace_lambda: float = 1.0
  clip_rho_threshold: float = 1.0
  clip_pg_rho_threshold: float = 1.0
  entropy_cost: float = 0.01
  baseline_cost: float = 0.5
  # The learner clips rewards to [-max_abs_reward, max_abs_reward] (Atari: 1);
  # 0 leaves them as they are. Logged episode returns are never clipped.
  max_abs_reward: float = 0.0
  # The learner multiplies rewards by this (after clipping), e.g. 0.1 where
  # returns are in the hundreds; logged episode returns stay unscaled.
  reward_scale: float = 1.0

  # Optimiser.
  optimizer: str = "adam"
  learning_rate: float = 1e-3
  max_grad_norm: float = 40.0  # global-norm clip of the agent's gradient; 0: none
  rmsprop_decay: float = 0.99
  optimizer_eps: float = 1e-6
  # An L2 penalty on the agent's parameters, its gradient added after the clip:
  # weight_decay * (params - anchor), the anchor "zero" (weight decay) or
  # "init", the initial parameters ("L2 Init", Kumar et al. 2023, against the
  # loss of plasticity under changing tasks; it keeps a copy of the initial
  # parameters in the optimiser state). Neither is in IMPALA or the BMG papers.
  # On the two-colours grid world "init" at 1e-4 (SGD 0.1) removed the late
  # decline of the paper's agent (2 seeds; RESULTS.md, "Where the late decline
  # comes from"); at 1e-3 it held the network at its initialisation.
  weight_decay: float = 0.0
  weight_decay_towards: str = "zero"

  # Replay. "queue": each unroll is consumed exactly once, actors block when
  # the queue is full. "uniform": uniform sampling, rate-limited to
  # `samples_per_insert` samples per inserted unroll.
  replay: str = "queue"
  replay_max_size: int = 2048
  samples_per_insert: float = 1.0
  min_replay_size: int = 64
  prefetch_size: int = 2

  # Evaluation.
  eval_episodes: int = 10
  eval_every_seconds: float = 15.0

  # Budgets: the run stops at the first one reached; 0 means no limit.
  max_env_steps: int = 500_000
  max_learner_steps: int = 0
  max_seconds: float = 0.0

  # Outputs.
  log_every_seconds: float = 5.0
  # A pod loses at most this much work to a crash; the first save is early.
  checkpoint_every_seconds: float = 60.0
  checkpoints_to_keep: int = 3

  # Meta-learning of the hyperparameters above (see MetaConfig).
  meta: MetaConfig = dataclasses.field(default_factory=lambda: MetaConfig())

  @classmethod
  def from_mapping(cls, values: Mapping[str, Any]) -> "Config":
    """Builds a validated Config; raises ValueError naming a bad field."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
      raise ValueError(f"unknown config field {unknown[0]!r}")
    kwargs = {}
    for name, value in values.items():
      if name == "meta":
        kwargs[name] = value if isinstance(value, MetaConfig) else MetaConfig.from_mapping(value)
      elif name == "env_kwargs" and isinstance(value, Mapping):
        kwargs[name] = json.dumps(dict(value), sort_keys=True)
      else:
        kwargs[name] = coerce(name, value, getattr(cls, name))
    return cls(**kwargs)

  def replace(self, **changes) -> "Config":
    """A validated copy with some fields changed."""
    return Config.from_mapping({**self.to_dict(), **changes})

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @property
  def env_make_kwargs(self) -> dict:
    """env_kwargs parsed: the keyword arguments of gym.make."""
    return json.loads(self.env_kwargs) if self.env_kwargs.strip() else {}

  def __post_init__(self):
    _validate(self)


def device_assignment(inference: str, actor_device_ids: Sequence[int],
                      learner_device_ids: Sequence[int],
                      num_devices: int) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
  """(actor device indices, learner device indices) on a process with `num_devices`.

  With CPU inference the actors have none and the learner takes every device.
  Raises ValueError naming the field whose index does not exist.
  """
  if inference != "accelerator":
    return (), tuple(range(num_devices))
  for field, ids in (("actor_device_ids", actor_device_ids),
                     ("learner_device_ids", learner_device_ids)):
    if any(i >= num_devices for i in ids):
      raise ValueError(f"config field {field!r} names a device this process does not have "
                       f"(it has {num_devices}; got {tuple(ids)!r})")
  actors = tuple(actor_device_ids) or (num_devices - 1,)
  learner = tuple(learner_device_ids) or (
      tuple(i for i in range(num_devices) if i not in actors) or actors)
  return actors, learner


def _validate(c: Config) -> None:
  def require(ok: bool, field: str, why: str):
    if not ok:
      raise ValueError(f"config field {field!r} {why} (got {getattr(c, field)!r})")

  require(bool(c.env_id), "env_id", "must be a gymnasium environment id")
  if c.env_kwargs.strip():
    try:
      kwargs = json.loads(c.env_kwargs)
    except ValueError as e:
      raise ValueError(f"config field 'env_kwargs' is not valid JSON ({e}; got "
                       f"{c.env_kwargs!r})") from None
    require(isinstance(kwargs, dict), "env_kwargs",
            "must be a JSON object of gym.make's keyword arguments, e.g. '{\"length\": 8}'")
  require(all(isinstance(w, str) and ":" in w for w in c.env_wrappers), "env_wrappers",
          "must be a tuple of 'module:callable' names")
  require(c.env_backend in ENV_BACKENDS, "env_backend", f"must be one of {ENV_BACKENDS}")
  require(c.env_backend != "envpool" or not c.env_wrappers, "env_wrappers",
          "apply to gymnasium envs only; leave them empty with env_backend='envpool'")
  require(c.envpool_threads >= 0, "envpool_threads", "must be at least 0 (0: one per env)")
  require(c.num_actors >= 1, "num_actors", "must be at least 1")
  require(c.actors_per_node >= 1, "actors_per_node", "must be at least 1")
  require(c.actor_restarts >= 0, "actor_restarts", "must be at least 0")
  require(c.max_consecutive_env_errors >= 1, "max_consecutive_env_errors", "must be at least 1")
  require(c.envs_per_actor >= 1, "envs_per_actor", "must be at least 1")
  require(c.variable_update_period >= 1, "variable_update_period", "must be at least 1")
  require(c.inference in INFERENCE, "inference", f"must be one of {INFERENCE}")
  for field in ("actor_device_ids", "learner_device_ids"):
    ids = getattr(c, field)
    require(all(isinstance(i, int) and i >= 0 for i in ids) and len(set(ids)) == len(ids),
            field, "must be distinct device indices (non-negative integers)")
    require(c.inference == "accelerator" or not ids, field,
            "places the actors' policy and the learner only with inference='accelerator'")
  require(c.torso in TORSOS, "torso", f"must be one of {TORSOS}")
  require(c.torso_norm in TORSO_NORMS, "torso_norm", f"must be one of {TORSO_NORMS}")
  require(c.torso_norm == "none" or c.torso == "mlp", "torso_norm",
          "applies to the 'mlp' torso only")
  require(len(c.hidden_sizes) >= 1 and all(h >= 1 for h in c.hidden_sizes),
          "hidden_sizes", "must be a non-empty tuple of positive sizes")
  require(c.gaussian_std in GAUSSIAN_STDS, "gaussian_std", f"must be one of {GAUSSIAN_STDS}")
  require(c.gaussian_init_std > 0, "gaussian_init_std", "must be positive")
  require(c.core in CORES, "core", f"must be one of {CORES}")
  require(c.core_size >= 1, "core_size", "must be at least 1")
  require(c.unroll_length >= 1, "unroll_length", "must be at least 1")
  require(c.batch_size >= 1, "batch_size", "must be at least 1")
  require(0.0 <= c.discount <= 1.0, "discount", "must be in [0, 1]")
  require(0.0 <= c.vtrace_lambda <= 1.0, "vtrace_lambda", "must be in [0, 1]")
  require(c.clip_rho_threshold > 0, "clip_rho_threshold", "must be positive")
  require(c.clip_pg_rho_threshold > 0, "clip_pg_rho_threshold", "must be positive")
  require(c.entropy_cost >= 0, "entropy_cost", "must be non-negative")
  require(c.baseline_cost >= 0, "baseline_cost", "must be non-negative")
  require(c.max_abs_reward >= 0, "max_abs_reward", "must be non-negative (0: no clipping)")
  require(c.reward_scale > 0, "reward_scale", "must be positive")
  require(c.optimizer in OPTIMIZERS, "optimizer", f"must be one of {OPTIMIZERS}")
  require(c.learning_rate > 0, "learning_rate", "must be positive")
  require(c.max_grad_norm >= 0, "max_grad_norm", "must be non-negative (0: no clipping)")
  require(0.0 < c.rmsprop_decay < 1.0, "rmsprop_decay", "must be in (0, 1)")
  require(c.optimizer_eps > 0, "optimizer_eps", "must be positive")
  require(c.weight_decay >= 0, "weight_decay", "must be non-negative (0: none)")
  require(c.weight_decay_towards in WEIGHT_DECAY_ANCHORS, "weight_decay_towards",
          f"must be one of {WEIGHT_DECAY_ANCHORS}")
  require(c.replay in _REPLAYS, "replay", f"must be one of {_REPLAYS}")
  require(c.replay_max_size >= c.batch_size, "replay_max_size",
          "must hold at least one batch (batch_size unrolls)")
  require(c.samples_per_insert > 0, "samples_per_insert", "must be positive")
  require(1 <= c.min_replay_size <= c.replay_max_size, "min_replay_size",
          "must be in [1, replay_max_size]")
  require(c.prefetch_size >= 1, "prefetch_size", "must be at least 1")
  require(c.eval_episodes >= 0, "eval_episodes", "must be non-negative")
  require(c.eval_every_seconds > 0, "eval_every_seconds", "must be positive")
  require(c.max_env_steps >= 0, "max_env_steps", "must be non-negative (0: no limit)")
  require(c.max_learner_steps >= 0, "max_learner_steps", "must be non-negative (0: no limit)")
  require(c.max_seconds >= 0, "max_seconds", "must be non-negative (0: no limit)")
  require(c.max_env_steps or c.max_learner_steps or c.max_seconds, "max_env_steps",
          "is 0 and so are max_learner_steps and max_seconds: the run would never stop")
  require(c.log_every_seconds > 0, "log_every_seconds", "must be positive")
  require(c.checkpoint_every_seconds > 0, "checkpoint_every_seconds", "must be positive")
  require(c.checkpoints_to_keep >= 1, "checkpoints_to_keep", "must be at least 1")
  chunks = c.meta.batch_chunks
  if c.batch_size % chunks:
    raise ValueError(
        f"config field 'batch_size' ({c.batch_size}) must split into {chunks} equal parts: "
        f"meta.method {c.meta.method!r} uses {chunks} sub-batches per learner step")
