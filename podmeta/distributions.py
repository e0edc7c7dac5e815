"""Action distributions of the policy head: categorical and diagonal Gaussian.

The policy network outputs one vector per state, the distribution's
parameters, which actors store as a trajectory's `behaviour_logits` and the
learner feeds to V-trace: a categorical's logits [A], or a Gaussian's mean and
log standard deviation concatenated, [2D]. Every function is unbatched in the
event dimension and broadcasts over leading axes.

Gaussian actions are unbounded samples; the env sees them clipped to [-1, 1]
and rescaled to its Box bounds (`envs.make_env` adds the wrappers), and the
log-probabilities are those of the unclipped sample, as PPO and IMPALA
implementations for continuous control do (no tanh squashing, so no Jacobian
term, and the entropy has its closed form).
"""

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class ActionDistribution(NamedTuple):
  """Pure functions of a policy head's output `params` ([..., num_params]).

  sample(key, params) -> actions; mode(params) -> the most likely action;
  log_prob(params, action) -> [...]; entropy(params) -> [...];
  kl(p, q) -> KL(p || q) [...]. `action_shape` and `action_dtype` describe
  one action.
  """
  name: str
  num_params: int
  action_shape: tuple
  action_dtype: np.dtype
  sample: Callable
  mode: Callable
  log_prob: Callable
  entropy: Callable
  kl: Callable


def categorical(num_actions: int) -> ActionDistribution:
  """A softmax over `num_actions` logits."""

  def log_prob(logits, action):
    log_p = jax.nn.log_softmax(logits)
    return jnp.take_along_axis(log_p, action[..., None].astype(jnp.int32), axis=-1)[..., 0]

  def entropy(logits):
    log_p = jax.nn.log_softmax(logits)
    return -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)

  def kl(p_logits, q_logits):
    log_p = jax.nn.log_softmax(p_logits)
    return jnp.sum(jnp.exp(log_p) * (log_p - jax.nn.log_softmax(q_logits)), axis=-1)

  return ActionDistribution(
      name="categorical", num_params=num_actions, action_shape=(),
      action_dtype=np.dtype(np.int32),
      sample=lambda key, logits: jax.random.categorical(key, logits).astype(jnp.int32),
      mode=lambda logits: jnp.argmax(logits, axis=-1).astype(jnp.int32),
      log_prob=log_prob, entropy=entropy, kl=kl)


_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def gaussian(action_dim: int) -> ActionDistribution:
  """A diagonal Gaussian; `params` is [mean (D), log std (D)]."""

  def split(params):
    return params[..., :action_dim], params[..., action_dim:]

  def sample(key, params):
    mean, log_std = split(params)
    return mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape, mean.dtype)

  def log_prob(params, action):
    mean, log_std = split(params)
    z = (action - mean) * jnp.exp(-log_std)
    return jnp.sum(-0.5 * jnp.square(z) - log_std - _HALF_LOG_2PI, axis=-1)

  def entropy(params):
    _, log_std = split(params)
    return jnp.sum(log_std + 0.5 + _HALF_LOG_2PI, axis=-1)

  def kl(p, q):
    mean_p, log_std_p = split(p)
    mean_q, log_std_q = split(q)
    var_ratio = jnp.exp(2.0 * (log_std_p - log_std_q))
    mahalanobis = jnp.square((mean_p - mean_q) * jnp.exp(-log_std_q))
    return jnp.sum(log_std_q - log_std_p + 0.5 * (var_ratio + mahalanobis - 1.0), axis=-1)

  return ActionDistribution(
      name="gaussian", num_params=2 * action_dim, action_shape=(action_dim,),
      action_dtype=np.dtype(np.float32), sample=sample,
      mode=lambda params: split(params)[0], log_prob=log_prob, entropy=entropy, kl=kl)


def for_actions(num_actions: int, continuous: bool) -> ActionDistribution:
  """The distribution of an env's actions: `num_actions` choices, or dimensions."""
  return gaussian(num_actions) if continuous else categorical(num_actions)
