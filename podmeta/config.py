"""The typed run configuration, validated once at the boundary.

A `Config` is built from a mapping (a config file's ConfigDict plus command
line overrides) by `Config.from_mapping`, which rejects unknown fields and
out-of-range values with a `ValueError` naming the field. It is frozen: code
downstream never mutates it.
"""

import dataclasses
import math
from typing import Any, Dict, Mapping, Tuple

_OPTIMIZERS = ("adam", "rmsprop", "sgd")
_TORSOS = ("mlp", "conv", "impala_deep")
_REPLAYS = ("queue", "uniform")


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything a run needs besides its run directory and launch mode."""

  # Environment and actors.
  env_id: str = "CartPole-v1"
  num_actors: int = 2
  # Actors per Launchpad node (threads of one process in local_mp): a large
  # num_actors then needs num_actors / actors_per_node processes.
  actors_per_node: int = 1
  envs_per_actor: int = 16
  seed: int = 0
  # How many actor steps (vector steps) between parameter requests.
  variable_update_period: int = 10

  # Network.
  # "mlp"; "conv" (IMPALA's shallow conv torso) or "impala_deep" (its ResNet), for images.
  torso: str = "mlp"
  hidden_sizes: Tuple[int, ...] = (64, 64)
  # False: separate policy and value torsos (better on small control tasks).
  shared_torso: bool = True

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

  # Optimiser.
  optimizer: str = "adam"
  learning_rate: float = 1e-3
  max_grad_norm: float = 40.0
  rmsprop_decay: float = 0.99
  optimizer_eps: float = 1e-6

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
  checkpoint_every_seconds: float = 120.0
  checkpoints_to_keep: int = 3

  # Meta-learning of the hyperparameters above (see MetaConfig).
  meta: "MetaConfig" = dataclasses.field(default_factory=lambda: MetaConfig())

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
      else:
        kwargs[name] = _coerce(name, value, getattr(cls, name))
    return cls(**kwargs)

  def replace(self, **changes) -> "Config":
    """A validated copy with some fields changed."""
    return Config.from_mapping({**self.to_dict(), **changes})

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  def __post_init__(self):
    _validate(self)


def _coerce(name: str, value: Any, default: Any) -> Any:
  """Converts `value` to the type of the field's default, or raises."""
  try:
    if isinstance(default, bool):
      if not isinstance(value, bool):
        raise TypeError
      return value
    if isinstance(default, int):
      if isinstance(value, bool) or int(value) != value:
        raise TypeError
      return int(value)
    if isinstance(default, float):
      if isinstance(value, bool):
        raise TypeError
      return float(value)
    if isinstance(default, str):
      if not isinstance(value, str):
        raise TypeError
      return value
    if isinstance(default, tuple):
      if isinstance(value, (str, bytes)):
        raise TypeError
      items = tuple(value)
      if default and isinstance(default[0], int):
        if any(isinstance(v, bool) or int(v) != v for v in items):
          raise TypeError
        items = tuple(int(v) for v in items)
      return items
  except (TypeError, ValueError):
    pass
  else:
    return value
  raise ValueError(
      f"config field {name!r}: expected {type(default).__name__}, got {value!r}")


def _validate(c: Config) -> None:
  def require(ok: bool, field: str, why: str):
    if not ok:
      raise ValueError(f"config field {field!r} {why} (got {getattr(c, field)!r})")

  require(bool(c.env_id), "env_id", "must be a gymnasium environment id")
  require(c.num_actors >= 1, "num_actors", "must be at least 1")
  require(c.actors_per_node >= 1, "actors_per_node", "must be at least 1")
  require(c.envs_per_actor >= 1, "envs_per_actor", "must be at least 1")
  require(c.variable_update_period >= 1, "variable_update_period", "must be at least 1")
  require(c.torso in _TORSOS, "torso", f"must be one of {_TORSOS}")
  require(len(c.hidden_sizes) >= 1 and all(h >= 1 for h in c.hidden_sizes),
          "hidden_sizes", "must be a non-empty tuple of positive sizes")
  require(c.unroll_length >= 1, "unroll_length", "must be at least 1")
  require(c.batch_size >= 1, "batch_size", "must be at least 1")
  require(0.0 <= c.discount <= 1.0, "discount", "must be in [0, 1]")
  require(0.0 <= c.vtrace_lambda <= 1.0, "vtrace_lambda", "must be in [0, 1]")
  require(c.clip_rho_threshold > 0, "clip_rho_threshold", "must be positive")
  require(c.clip_pg_rho_threshold > 0, "clip_pg_rho_threshold", "must be positive")
  require(c.entropy_cost >= 0, "entropy_cost", "must be non-negative")
  require(c.baseline_cost >= 0, "baseline_cost", "must be non-negative")
  require(c.max_abs_reward >= 0, "max_abs_reward", "must be non-negative (0: no clipping)")
  require(c.optimizer in _OPTIMIZERS, "optimizer", f"must be one of {_OPTIMIZERS}")
  require(c.learning_rate > 0, "learning_rate", "must be positive")
  require(c.max_grad_norm > 0, "max_grad_norm", "must be positive")
  require(0.0 < c.rmsprop_decay < 1.0, "rmsprop_decay", "must be in (0, 1)")
  require(c.optimizer_eps > 0, "optimizer_eps", "must be positive")
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


# -- meta-learning -------------------------------------------------------------

META_METHODS = ("fixed", "mg", "bmg")
# Hyperparameters that can be meta-learned, with the range each may take.
META_HYPERPARAMETERS = {
    "entropy_cost": (0.0, math.inf),
    "discount": (0.0, 1.0),
    "vtrace_lambda": (0.0, 1.0),
    "baseline_cost": (0.0, math.inf),
    "learning_rate_scale": (0.0, math.inf),
}
_TRANSFORMS = ("sigmoid", "softplus")
_CONTEXTS = ("none", "reward")
_TARGET_DATA = ("last_inner", "fresh")
_CONTINUE_FROM = ("inner", "target")
_MATCHING = ("kl", "kl_value", "l2")
_TARGET_UPDATES = ("agent", "sgd")


def meta_batch_chunks(method: str, inner_steps: int, target_steps: int, target_data: str) -> int:
  """Sub-batches of a meta-learning step: K inner ones, plus the target's or
  MG outer loss's own unless they reuse the last inner one."""
  if target_data == "last_inner":
    return inner_steps
  return inner_steps + (target_steps if method == "bmg" else 1)


@dataclasses.dataclass(frozen=True)
class MetaParamConfig:
  """One meta-learned hyperparameter: its initial value and bounded transform.

  "sigmoid" maps the unconstrained meta-parameter into (low, high);
  "softplus" into (low, inf) and ignores `high`.
  """
  init: float
  low: float = 0.0
  high: float = 1.0
  transform: str = "sigmoid"


@dataclasses.dataclass(frozen=True)
class MetaConfig:
  """Which hyperparameters are meta-learned, and how (podmeta.meta).

  method: "fixed" (no meta-learning), "mg" (meta-gradient of the outer loss
    after K inner steps; Xu et al. 2018) or "bmg" (bootstrapped meta-gradient;
    Flennerhag et al. 2021).
  hyperparams: name -> MetaParamConfig for each meta-learned hyperparameter
    (names in META_HYPERPARAMETERS); the others keep the Config's value.
  context: "none" (the meta-parameters are the hyperparameters, transformed)
    or "reward" (a small MLP maps the mean reward of the last
    `context_window` batches to the hyperparameters).
  inner_steps (K): agent updates per learner step, differentiated.
  target_steps (L): BMG's bootstrap: L-1 further steps with the meta-learned
    rule and one on the outer objective, all under stop-gradient.
  target_data: "last_inner": the target (BMG) or outer loss (MG) uses the
    last inner step's sub-batch; "fresh": it uses sub-batches of its own.
    A learner step's batch is split into `batch_chunks` equal sub-batches.
  continue_from: "inner": the agent continues from x^(K); "target": from
    x^(K+L-1), the last step of the meta-learned rule in the bootstrap.
  matching: "kl": KL(pi_target || pi_K) over the matching sub-batch's states;
    "kl_value": plus value_matching_cost * squared value difference; "l2":
    0.5 * ||x_target - x_K||^2 in parameter space.
  target_update: the bootstrap's last step: "agent" uses the agent's
    optimiser (and its state); "sgd" a plain step of target_learning_rate.
  outer_entropy_cost: entropy cost of the outer objective.
  learning_rate, max_grad_norm, adam_eps: the meta-optimiser (Adam after
    clipping the meta-gradient by global norm).
  """
  method: str = "fixed"
  hyperparams: Dict[str, MetaParamConfig] = dataclasses.field(default_factory=dict)
  context: str = "none"
  context_window: int = 10
  meta_hidden_size: int = 32
  inner_steps: int = 1
  target_steps: int = 1
  target_data: str = "last_inner"
  continue_from: str = "inner"
  matching: str = "kl"
  value_matching_cost: float = 0.5
  target_update: str = "agent"
  target_learning_rate: float = 0.1
  outer_entropy_cost: float = 0.0
  learning_rate: float = 1e-3
  max_grad_norm: float = 1.0
  adam_eps: float = 1e-6

  @classmethod
  def from_mapping(cls, values: Mapping[str, Any]) -> "MetaConfig":
    if not isinstance(values, Mapping):
      raise ValueError(f"config field 'meta': expected a mapping, got {values!r}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
      raise ValueError(f"unknown config field 'meta.{unknown[0]}'")
    kwargs = {}
    for name, value in values.items():
      if name == "hyperparams":
        kwargs[name] = _hyperparams(value)
      else:
        kwargs[name] = _coerce(f"meta.{name}", value, getattr(cls, name))
    return cls(**kwargs)

  @property
  def enabled(self) -> bool:
    return self.method != "fixed"

  @property
  def batch_chunks(self) -> int:
    """Equal sub-batches a learner step's batch is split into."""
    if not self.enabled:
      return 1
    return meta_batch_chunks(self.method, self.inner_steps, self.target_steps, self.target_data)

  def __post_init__(self):
    _validate_meta(self)


def _hyperparams(values: Any) -> Dict[str, MetaParamConfig]:
  if not isinstance(values, Mapping):
    raise ValueError(f"config field 'meta.hyperparams': expected a mapping of name -> "
                     f"{{init, low, high, transform}}, got {values!r}")
  out = {}
  for name, spec in values.items():
    if name not in META_HYPERPARAMETERS:
      raise ValueError(f"config field 'meta.hyperparams': unknown hyperparameter {name!r} "
                       f"(meta-learnable: {', '.join(META_HYPERPARAMETERS)})")
    if isinstance(spec, MetaParamConfig):
      out[name] = spec
      continue
    if not isinstance(spec, Mapping):
      raise ValueError(f"config field 'meta.hyperparams.{name}': expected a mapping with "
                       f"init, low, high, transform; got {spec!r}")
    fields = {f.name: f for f in dataclasses.fields(MetaParamConfig)}
    unknown = sorted(set(spec) - set(fields))
    if unknown:
      raise ValueError(f"unknown config field 'meta.hyperparams.{name}.{unknown[0]}'")
    if "init" not in spec:
      raise ValueError(f"config field 'meta.hyperparams.{name}.init' is missing")
    kwargs = {}
    for key, value in spec.items():
      default = fields[key].default if key != "init" else 0.0
      kwargs[key] = _coerce(f"meta.hyperparams.{name}.{key}", value, default)
    out[name] = MetaParamConfig(**kwargs)
  return out


def _validate_meta(m: MetaConfig) -> None:
  def require(ok: bool, field: str, why: str):
    if not ok:
      raise ValueError(f"config field 'meta.{field}' {why} (got {getattr(m, field)!r})")

  require(m.method in META_METHODS, "method", f"must be one of {META_METHODS}")
  for name, p in m.hyperparams.items():
    where = f"config field 'meta.hyperparams.{name}"
    lo, hi = META_HYPERPARAMETERS[name]
    if p.transform not in _TRANSFORMS:
      raise ValueError(f"{where}.transform' must be one of {_TRANSFORMS} (got {p.transform!r})")
    high = math.inf if p.transform == "softplus" else p.high
    if not lo <= p.low < high <= hi:
      raise ValueError(f"{where}': bounds [{p.low}, {high}] must lie within [{lo}, {hi}] "
                       f"with low < high")
    if not p.low < p.init < high:
      raise ValueError(f"{where}.init' ({p.init}) must lie strictly between its bounds "
                       f"({p.low}, {high}) for the {p.transform} transform")
  require(not m.enabled or m.hyperparams, "hyperparams",
          f"is empty: method {m.method!r} needs at least one hyperparameter to meta-learn")
  require(m.context in _CONTEXTS, "context", f"must be one of {_CONTEXTS}")
  require(m.context_window >= 1, "context_window", "must be at least 1")
  require(m.meta_hidden_size >= 1, "meta_hidden_size", "must be at least 1")
  require(m.inner_steps >= 1, "inner_steps", "(K) must be at least 1")
  require(m.target_steps >= 1, "target_steps", "(L) must be at least 1")
  require(m.target_data in _TARGET_DATA, "target_data", f"must be one of {_TARGET_DATA}")
  require(m.continue_from in _CONTINUE_FROM, "continue_from", f"must be one of {_CONTINUE_FROM}")
  require(m.matching in _MATCHING, "matching", f"must be one of {_MATCHING}")
  require(m.value_matching_cost >= 0, "value_matching_cost", "must be non-negative")
  require(m.target_update in _TARGET_UPDATES, "target_update",
          f"must be one of {_TARGET_UPDATES}")
  require(m.target_learning_rate > 0, "target_learning_rate", "must be positive")
  require(m.outer_entropy_cost >= 0, "outer_entropy_cost", "must be non-negative")
  require(m.learning_rate > 0, "learning_rate", "must be positive")
  require(m.max_grad_norm > 0, "max_grad_norm", "must be positive")
  require(m.adam_eps > 0, "adam_eps", "must be positive")
  require(m.method == "bmg" or m.continue_from == "inner", "continue_from",
          "'target' needs method 'bmg' (only BMG takes target steps)")
