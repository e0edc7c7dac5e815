"""The reward context of a meta-network (Luketina et al. 2022, Sec. 4 and App. A).

The context is the mean reward of each of the last `window` learner batches,
newest first. With "lifetime" normalisation each entry is standardised by the
running mean and standard deviation of every batch's mean reward so far
(Welford's algorithm, over the agent's lifetime) and squashed by tanh, so it
lies in (-1, 1) whatever the reward scale. No gradient flows through it.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp


class RewardContext(NamedTuple):
  history: jnp.ndarray  # [window] raw batch mean rewards, newest first
  count: jnp.ndarray  # batches seen, float32 scalar
  mean: jnp.ndarray  # running mean of the batch mean rewards
  m2: jnp.ndarray  # running sum of squared deviations (Welford)


def init(window: int) -> RewardContext:
  zero = jnp.zeros((), jnp.float32)
  return RewardContext(history=jnp.zeros((window,), jnp.float32), count=zero, mean=zero, m2=zero)


def push(ctx: RewardContext, batch_mean_reward: jnp.ndarray) -> RewardContext:
  r = jax.lax.stop_gradient(jnp.asarray(batch_mean_reward, jnp.float32))
  count = ctx.count + 1.0
  delta = r - ctx.mean
  mean = ctx.mean + delta / count
  return RewardContext(history=jnp.concatenate([r[None], ctx.history[:-1]]), count=count,
                       mean=mean, m2=ctx.m2 + delta * (r - mean))


def features(ctx: RewardContext, normalisation: str = "lifetime") -> jnp.ndarray:
  """The meta-network's input: [window]."""
  if normalisation == "none":
    return ctx.history
  if normalisation != "lifetime":
    raise ValueError(f"unknown context normalisation {normalisation!r}")
  std = jnp.sqrt(ctx.m2 / jnp.maximum(ctx.count, 1.0))
  # Entries not yet filled (fewer batches than the window) stay at 0.
  filled = jnp.arange(ctx.history.shape[0]) < ctx.count
  z = (ctx.history - ctx.mean) / (std + 1e-6)
  return jnp.where(filled, jnp.tanh(z), 0.0)
