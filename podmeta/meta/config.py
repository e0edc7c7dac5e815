"""The one schema of meta-learning: which hyperparameters, which method, how.

`MetaConfig` is the `meta` section of `podmeta.config.Config`, validated once
when the config is built (a `ValueError` names the field) and read, as it is,
by the meta-update (`podmeta.meta.update`) and the parameterisation
(`podmeta.meta.params`).
"""

import dataclasses
import math
from typing import Any, Mapping, Tuple

from podmeta.validation import coerce

METHODS = ("fixed", "mg", "bmg")
# Hyperparameters that can be meta-learned, with the range each may take.
HYPERPARAMETERS = {
    "entropy_cost": (0.0, math.inf),
    "discount": (0.0, 1.0),
    "vtrace_lambda": (0.0, 1.0),
    "baseline_cost": (0.0, math.inf),
    "learning_rate_scale": (0.0, math.inf),
}
TRANSFORMS = ("sigmoid", "softplus")
CONTEXTS = ("none", "reward")
CONTEXT_NORMALISATIONS = ("lifetime", "none")
TARGET_DATA = ("online", "last_inner")
MATCHING = ("kl", "kl_value", "kl_reverse", "l2")
TARGET_UPDATES = ("agent", "sgd")


class FrozenDict(dict):
  """A dict that refuses changes, so a frozen config's mapping stays frozen.

  A dict subclass rather than `types.MappingProxyType`: `dataclasses.asdict`,
  pickling and `ml_collections.ConfigDict` all accept it as a dict.
  """

  def _refuse(self, *args, **kwargs):
    raise TypeError("config mappings are read-only; build a new config instead")

  __setitem__ = __delitem__ = _refuse
  clear = pop = popitem = setdefault = update = _refuse
  __ior__ = _refuse

  def __reduce__(self):
    return type(self), (dict(self),)

  def __hash__(self):
    return hash(frozenset(self.items()))


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
  """Which hyperparameters are meta-learned, and how.

  method: "fixed" (no meta-learning), "mg" (the meta-gradient of an outer
    loss; Xu et al. 2018, arXiv 1805.09801) or "bmg" (bootstrapped
    meta-gradients; Flennerhag et al. 2021, arXiv 2109.04504).
  hyperparams: name -> MetaParamConfig for each meta-learned hyperparameter
    (names in HYPERPARAMETERS); the others keep the Config's value.
  context: "none" (the meta-parameters are the hyperparameters, transformed)
    or "reward" (an MLP of `meta_hidden_sizes` maps the mean reward of each of
    the last `context_window` learner batches to the hyperparameters;
    Luketina et al. 2022, Sec. 4).
  context_normalisation: "lifetime": each mean reward is standardised by the
    running mean and standard deviation of all batches so far, then squashed
    by tanh (Luketina et al. App. A); "none": raw mean rewards.
  meta_pretrain_steps: the meta-network starts from a standard initialisation
    and is regressed, for this many Adam steps, to output every
    hyperparameter's `init` on contexts drawn uniformly from [-1, 1]
    (Luketina et al. App. A); 0 instead zeroes its output weights and puts
    the initial values in the output bias, so it starts exactly constant.
  inner_steps (K), target_steps (L): see target_data.
  target_data: how the meta-gradient is formed.
    "online" (the published algorithms): the agent takes one ordinary update
      per learner step and is never rewound. A ring buffer in the learner
      state holds the last batches and the parameters (and optimiser states)
      they were applied to. BMG recomputes, with the current meta-parameters,
      the K updates that started K+L-1 steps ago, differentiably, and matches
      them to the target: the agent's current parameters (which took the L-1
      real updates after those K), plus one outer-objective step on the
      newest batch when `target_outer_step`. MG recomputes the K updates
      before the newest batch and takes the outer loss on it.
    "last_inner" (an ablation, not a published algorithm): each learner
      batch is split into K sub-batches, the agent takes K differentiated
      steps on them; BMG's target re-steps the last sub-batch L-1 more times
      with the meta-learned rule plus one outer step, MG's outer loss reuses
      that sub-batch (STAC-style). Re-stepping feeds back on the entropy cost
      (RESULTS.md).
  target_outer_step: BMG's target bootstrap ends with one step on the outer
    objective (Flennerhag et al. Sec. 3); False uses the agent's parameters
    after K+L-1 updates as they are (Luketina et al. Sec. 6).
  matching: "kl": KL(pi_target || pi_K) over the newest batch's states;
    "kl_value": plus value_matching_cost * 0.5 * squared value difference;
    "kl_reverse": KL(pi_K || pi_target), mode-seeking (an ablation);
    "l2": 0.5 * ||x_target - x_K||^2 in parameter space.
  target_update: the target's outer step: "agent" uses the agent's optimiser
    (and its state); "sgd" a plain step of target_learning_rate.
  outer_entropy_cost: entropy cost of the outer objective (policy gradient
    plus this times the entropy; no value term).
  learning_rate, max_grad_norm, adam_eps: the meta-optimiser, Adam after
    clipping the meta-gradient by global norm (0: no clipping).
  """
  method: str = "fixed"
  hyperparams: Mapping[str, MetaParamConfig] = dataclasses.field(default_factory=dict)
  context: str = "none"
  context_window: int = 10
  context_normalisation: str = "lifetime"
  meta_hidden_sizes: Tuple[int, ...] = (64, 64)
  meta_pretrain_steps: int = 1000
  inner_steps: int = 1
  target_steps: int = 1
  target_data: str = "online"
  target_outer_step: bool = True
  matching: str = "kl"
  value_matching_cost: float = 0.5
  target_update: str = "agent"
  target_learning_rate: float = 0.1
  outer_entropy_cost: float = 0.0
  learning_rate: float = 1e-3
  max_grad_norm: float = 1.0
  adam_eps: float = 1e-4

  @classmethod
  def from_mapping(cls, values: Mapping[str, Any]) -> "MetaConfig":
    if isinstance(values, MetaConfig):
      return values
    if not isinstance(values, Mapping):
      raise ValueError(f"config field 'meta': expected a mapping, got {values!r}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
      raise ValueError(f"unknown config field 'meta.{unknown[0]}'")
    kwargs = {}
    for name, value in values.items():
      if name == "hyperparams":
        kwargs[name] = value  # __post_init__ checks and freezes it
      else:
        kwargs[name] = coerce(f"meta.{name}", value, getattr(cls, name))
    return cls(**kwargs)

  @property
  def enabled(self) -> bool:
    return self.method != "fixed"

  @property
  def online(self) -> bool:
    return self.enabled and self.target_data == "online"

  @property
  def batch_chunks(self) -> int:
    """Equal sub-batches a learner step's batch is split into."""
    return self.inner_steps if self.enabled and self.target_data == "last_inner" else 1

  @property
  def ring_size(self) -> int:
    """Learner steps the online meta-update looks back over (0 when not online).

    BMG: the K recomputed updates and the L-1 real ones after them. MG: the K
    updates before the newest batch, and the newest batch.
    """
    if not self.online:
      return 0
    k, l = self.inner_steps, self.target_steps
    return k + l - 1 if self.method == "bmg" else k + 1

  def __post_init__(self):
    # Also when built directly rather than through from_mapping.
    object.__setattr__(self, "hyperparams", _hyperparams(self.hyperparams))
    _validate(self)


def _hyperparams(values: Any) -> FrozenDict:
  if not isinstance(values, Mapping):
    raise ValueError(f"config field 'meta.hyperparams': expected a mapping of name -> "
                     f"{{init, low, high, transform}}, got {values!r}")
  out = {}
  for name, spec in values.items():
    if name not in HYPERPARAMETERS:
      raise ValueError(f"config field 'meta.hyperparams': unknown hyperparameter {name!r} "
                       f"(meta-learnable: {', '.join(HYPERPARAMETERS)})")
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
      kwargs[key] = coerce(f"meta.hyperparams.{name}.{key}", value, default)
    out[name] = MetaParamConfig(**kwargs)
  return FrozenDict(out)


def _validate(m: MetaConfig) -> None:
  def require(ok: bool, field: str, why: str):
    if not ok:
      raise ValueError(f"config field 'meta.{field}' {why} (got {getattr(m, field)!r})")

  require(m.method in METHODS, "method", f"must be one of {METHODS}")
  for name, p in m.hyperparams.items():
    where = f"config field 'meta.hyperparams.{name}"
    lo, hi = HYPERPARAMETERS[name]
    if p.transform not in TRANSFORMS:
      raise ValueError(f"{where}.transform' must be one of {TRANSFORMS} (got {p.transform!r})")
    high = math.inf if p.transform == "softplus" else p.high
    if not lo <= p.low < high <= hi:
      raise ValueError(f"{where}': bounds [{p.low}, {high}] must lie within [{lo}, {hi}] "
                       f"with low < high")
    if not p.low < p.init < high:
      raise ValueError(f"{where}.init' ({p.init}) must lie strictly between its bounds "
                       f"({p.low}, {high}) for the {p.transform} transform")
  require(not m.enabled or m.hyperparams, "hyperparams",
          f"is empty: method {m.method!r} needs at least one hyperparameter to meta-learn")
  require(m.context in CONTEXTS, "context", f"must be one of {CONTEXTS}")
  require(m.context_window >= 1, "context_window", "must be at least 1")
  require(m.context_normalisation in CONTEXT_NORMALISATIONS, "context_normalisation",
          f"must be one of {CONTEXT_NORMALISATIONS}")
  require(len(m.meta_hidden_sizes) >= 1 and all(h >= 1 for h in m.meta_hidden_sizes),
          "meta_hidden_sizes", "must be a non-empty tuple of positive sizes")
  require(m.meta_pretrain_steps >= 0, "meta_pretrain_steps", "must be non-negative")
  require(m.inner_steps >= 1, "inner_steps", "(K) must be at least 1")
  require(m.target_steps >= 1, "target_steps", "(L) must be at least 1")
  require(m.target_data in TARGET_DATA, "target_data", f"must be one of {TARGET_DATA}")
  require(m.matching in MATCHING, "matching", f"must be one of {MATCHING}")
  require(m.value_matching_cost >= 0, "value_matching_cost", "must be non-negative")
  require(m.target_update in TARGET_UPDATES, "target_update",
          f"must be one of {TARGET_UPDATES}")
  require(m.target_learning_rate > 0, "target_learning_rate", "must be positive")
  require(m.outer_entropy_cost >= 0, "outer_entropy_cost", "must be non-negative")
  require(m.learning_rate > 0, "learning_rate", "must be positive")
  require(m.max_grad_norm >= 0, "max_grad_norm", "must be non-negative (0: no clipping)")
  require(m.adam_eps > 0, "adam_eps", "must be positive")
  # Without the outer step and with L = 1 the target is x^(K) itself: the
  # meta-gradient would vanish.
  require(m.method != "bmg" or m.target_outer_step or m.target_steps >= 2, "target_outer_step",
          "may only be false with target_steps (L) >= 2: with L = 1 the target would equal "
          "the agent it is matched to")
