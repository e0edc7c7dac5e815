"""Meta-parameters: bounded parameterisations of the agent's hyperparameters.

A meta-parameter w is unconstrained; a transform maps it into the
hyperparameter's valid range (a sigmoid between two bounds, or a softplus
above a lower bound), so gradient steps on w can never produce a discount
above 1 or a negative entropy cost. With a context (e.g. the recent mean
reward), w is instead the weights of a small MLP whose outputs go through the
same transforms: the hyperparameters become a learned function of the
agent's situation (Flennerhag et al. 2021, arXiv 2109.04504, Section 5.1).
"""

import functools
from typing import Dict, Mapping, Optional, Sequence

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax

from podmeta.meta.config import MetaParamConfig


def constrain(p: MetaParamConfig, raw: jnp.ndarray) -> jnp.ndarray:
  """The hyperparameter value an unconstrained meta-parameter maps to."""
  if p.transform == "sigmoid":
    return p.low + (p.high - p.low) * jax.nn.sigmoid(raw)
  return p.low + jax.nn.softplus(raw)  # "softplus"; MetaConfig rejects any other


def unconstrained_init(p: MetaParamConfig) -> float:
  """The w that `constrain` maps to `p.init`."""
  if p.transform == "sigmoid":
    u = (p.init - p.low) / (p.high - p.low)
    return float(np.log(u) - np.log1p(-u))
  return float(np.log(np.expm1(p.init - p.low)))


class Parameterisation:
  """Maps meta-parameters (and an optional context) to hyperparameter values.

  Without a meta-network the meta-parameters are one unconstrained scalar per
  hyperparameter. With `hidden_sizes`, they are the weights of an MLP
  context -> hidden (ReLU) ... -> one output per hyperparameter, each output
  through its hyperparameter's transform. It starts at the configured
  initial values: by regression (`pretrain_steps` Adam steps on contexts
  drawn uniformly from [-1, 1], from a standard initialisation; Luketina et
  al. 2022, App. A), or, with `pretrain_steps=0`, exactly, with zero output
  weights and the values' pre-images as the output bias.
  """

  def __init__(self, bounds: Mapping[str, MetaParamConfig], hidden_sizes: Sequence[int] = (),
               context_size: int = 1, pretrain_steps: int = 0):
    if not bounds:
      raise ValueError("no hyperparameter to meta-learn")
    self._bounds = dict(bounds)
    self._names = tuple(self._bounds)
    self._hidden_sizes = tuple(hidden_sizes)
    self._context_size = context_size
    self._pretrain_steps = pretrain_steps
    self._raw_init = np.array([unconstrained_init(self._bounds[n]) for n in self._names],
                              np.float32)
    if self._hidden_sizes:
      exact = pretrain_steps == 0

      def forward(context):
        h = context
        for i, size in enumerate(self._hidden_sizes):
          h = jax.nn.relu(hk.Linear(size, name=f"hidden_{i}")(h))
        return hk.Linear(len(self._names), name="out",
                         w_init=hk.initializers.Constant(0.0) if exact else None,
                         b_init=hk.initializers.Constant(self._raw_init) if exact else None)(h)

      self._net = hk.without_apply_rng(hk.transform(forward))

  @property
  def uses_context(self) -> bool:
    return bool(self._hidden_sizes)

  def init(self, key: jax.Array):
    if not self.uses_context:
      return {n: jnp.asarray(raw, jnp.float32) for n, raw in zip(self._names, self._raw_init)}
    key, pretrain_key = jax.random.split(key)
    params = self._net.init(key, jnp.zeros((self._context_size,), jnp.float32))
    if self._pretrain_steps:
      params = _pretrain(self._net.apply, params, jnp.asarray(self._raw_init),
                         self._context_size, self._pretrain_steps, pretrain_key)
    return params

  def values(self, meta_params, context: Optional[jnp.ndarray] = None) -> Dict[str, jnp.ndarray]:
    """Hyperparameter values (scalars), each inside its bounds."""
    if self.uses_context:
      raw = self._net.apply(meta_params, jnp.reshape(context, (self._context_size,)))
      return {n: constrain(self._bounds[n], raw[i]) for i, n in enumerate(self._names)}
    return {n: constrain(self._bounds[n], meta_params[n]) for n in self._names}


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def _pretrain(apply, params, raw_target, context_size: int, steps: int, key):
  """Regresses the network's pre-transform outputs to `raw_target` on U[-1, 1] contexts."""
  optimizer = optax.adam(1e-3)

  def loss(p, contexts):
    raw = jax.vmap(lambda c: apply(p, c))(contexts)
    return jnp.mean(jnp.square(raw - raw_target))

  def step(carry, k):
    p, opt_state = carry
    contexts = jax.random.uniform(k, (256, context_size), minval=-1.0, maxval=1.0)
    updates, opt_state = optimizer.update(jax.grad(loss)(p, contexts), opt_state)
    return (optax.apply_updates(p, updates), opt_state), None

  (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)),
                                jax.random.split(key, steps))
  return params
