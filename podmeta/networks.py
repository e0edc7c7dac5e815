"""Haiku actor-critic networks: a torso (MLP or conv) with policy and value heads."""

from typing import Callable, NamedTuple, Sequence, Tuple

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np


class Network(NamedTuple):
  """Pure functions of the agent network.

  init(key, observation) -> params, with `observation` one example with a
  leading batch axis. apply(params, observations) -> (logits, values) for
  observations of shape [..., *obs_shape]: any number of leading axes.
  """
  init: Callable
  apply: Callable[..., Tuple[jnp.ndarray, jnp.ndarray]]


class MLPTorso(hk.Module):
  """Flattens a vector observation and applies ReLU layers."""

  def __init__(self, hidden_sizes: Sequence[int], name=None):
    super().__init__(name=name)
    self._hidden_sizes = tuple(hidden_sizes)

  def __call__(self, x):
    x = jnp.reshape(x, (x.shape[0], -1)).astype(jnp.float32)
    return hk.nets.MLP(self._hidden_sizes, activate_final=True)(x)


class ConvTorso(hk.Module):
  """The shallow IMPALA conv torso (Espeholt et al. 2018, Fig. 3 left).

  Images arrive as uint8 [N, H, W, C] and are scaled to [0, 1].
  """

  def __init__(self, hidden_sizes: Sequence[int], name=None):
    super().__init__(name=name)
    self._hidden_sizes = tuple(hidden_sizes)

  def __call__(self, x):
    x = x.astype(jnp.float32)
    if x.ndim == 3:
      x = x[..., None]
    x = x / 255.0
    x = jax.nn.relu(hk.Conv2D(16, kernel_shape=8, stride=4, padding="VALID")(x))
    x = jax.nn.relu(hk.Conv2D(32, kernel_shape=4, stride=2, padding="VALID")(x))
    x = hk.Flatten()(x)
    return hk.nets.MLP(self._hidden_sizes, activate_final=True)(x)


def make_network(torso: str, hidden_sizes: Sequence[int], obs_shape: Sequence[int],
                 num_actions: int) -> Network:
  """Builds the actor-critic network for `num_actions` discrete actions."""
  torso_cls = {"mlp": MLPTorso, "conv": ConvTorso}[torso]
  obs_rank = len(obs_shape)

  def forward(obs):
    lead_shape = obs.shape[:obs.ndim - obs_rank]
    flat = jnp.reshape(obs, (int(np.prod(lead_shape, dtype=np.int64)),) + obs.shape[len(lead_shape):])
    h = torso_cls(hidden_sizes)(flat)
    logits = hk.Linear(num_actions, name="policy")(h)
    value = jnp.squeeze(hk.Linear(1, name="value")(h), axis=-1)
    return logits.reshape(lead_shape + (num_actions,)), value.reshape(lead_shape)

  transformed = hk.without_apply_rng(hk.transform(forward))
  return Network(init=transformed.init, apply=transformed.apply)

