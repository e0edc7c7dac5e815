"""Meta-parameters: bounded parameterisations of the agent's hyperparameters.

A meta-parameter w is unconstrained; a transform maps it into the
hyperparameter's valid range (a sigmoid between two bounds, or a softplus
above a lower bound), so gradient steps on w can never produce a discount
above 1 or a negative entropy cost. With a context (e.g. the recent mean
reward), w is instead the weights of a small MLP whose outputs go through the
same transforms: the hyperparameters become a learned function of the
agent's situation (Flennerhag et al. 2021, arXiv 2109.04504, Section 5.1).
"""

from typing import Dict, Mapping, NamedTuple, Optional

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np


class Bounded(NamedTuple):
  """A hyperparameter's initial value and the transform into its range."""
  init: float
  low: float = 0.0
  high: float = 1.0
  transform: str = "sigmoid"  # or "softplus": (low, inf), `high` unused

  def constrain(self, raw: jnp.ndarray) -> jnp.ndarray:
    if self.transform == "sigmoid":
      return self.low + (self.high - self.low) * jax.nn.sigmoid(raw)
    if self.transform == "softplus":
      return self.low + jax.nn.softplus(raw)
    raise ValueError(f"unknown transform {self.transform!r}")

  def unconstrained_init(self) -> float:
    """The w that `constrain` maps to `init`."""
    if self.transform == "sigmoid":
      u = (self.init - self.low) / (self.high - self.low)
      return float(np.log(u) - np.log1p(-u))
    if self.transform == "softplus":
      return float(np.log(np.expm1(self.init - self.low)))
    raise ValueError(f"unknown transform {self.transform!r}")


class Parameterisation:
  """Maps meta-parameters (and an optional context) to hyperparameter values.

  Without a meta-network the meta-parameters are one unconstrained scalar per
  hyperparameter. With `hidden_size`, they are the weights of an MLP
  context -> hidden (ReLU) -> one output per hyperparameter; its output bias
  starts at the unconstrained initial values and its output weights near
  zero, so every run starts from the configured hyperparameters.
  """

  def __init__(self, bounds: Mapping[str, Bounded], hidden_size: Optional[int] = None,
               context_size: int = 1):
    if not bounds:
      raise ValueError("no hyperparameter to meta-learn")
    self._bounds = dict(bounds)
    self._names = tuple(self._bounds)
    self._hidden_size = hidden_size
    self._context_size = context_size
    if hidden_size:
      raw_init = np.array([self._bounds[n].unconstrained_init() for n in self._names],
                          np.float32)

      def forward(context):
        h = hk.Linear(hidden_size, name="hidden")(context)
        out = hk.Linear(len(self._names), name="out",
                        w_init=hk.initializers.TruncatedNormal(0.01),
                        b_init=hk.initializers.Constant(raw_init))(jax.nn.relu(h))
        return out

      self._net = hk.without_apply_rng(hk.transform(forward))

  @property
  def names(self):
    return self._names

  @property
  def uses_context(self) -> bool:
    return bool(self._hidden_size)

  def init(self, key: jax.Array):
    if self.uses_context:
      return self._net.init(key, jnp.zeros((self._context_size,), jnp.float32))
    return {n: jnp.asarray(self._bounds[n].unconstrained_init(), jnp.float32)
            for n in self._names}

  def values(self, meta_params, context: Optional[jnp.ndarray] = None) -> Dict[str, jnp.ndarray]:
    """Hyperparameter values (scalars), each inside its bounds."""
    if self.uses_context:
      raw = self._net.apply(meta_params, jnp.reshape(context, (self._context_size,)))
      return {n: self._bounds[n].constrain(raw[i]) for i, n in enumerate(self._names)}
    return {n: self._bounds[n].constrain(meta_params[n]) for n in self._names}
