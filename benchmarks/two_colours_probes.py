"""Probes of the grid-world agent's networks on every state of the world.

Used by benchmarks/two_colours_plasticity.py (its docstring says what each
probe means); kept apart from that command's flags so tests import it.
"""

from typing import Dict

import jax
import jax.numpy as jnp
import numpy as np

from envs import two_colours

TAU = 0.1
TORSOS = {"policy": "mlp_torso/mlp/~/", "value": "value_torso/mlp/~/"}
LAYER_NORM_EPS = 1e-5  # haiku's default


def all_observations(size: int = two_colours.SIZE) -> jax.Array:
  """The observation of every placement of agent, blue and red on distinct cells."""
  cells = np.array([(a, b, r) for a in range(size * size) for b in range(size * size)
                    for r in range(size * size) if len({a, b, r}) == 3])
  xy = np.stack([cells % size, cells // size], axis=-1)  # [n, 3, 2]
  states = two_colours.TwoColoursState(agent=jnp.asarray(xy[:, 0]), items=jnp.asarray(xy[:, 1:]),
                                       step=jnp.zeros(len(cells), jnp.int32))
  return jax.vmap(lambda s: two_colours.observation(s, size))(states)


def effective_rank(features: jax.Array, delta: float = 0.01) -> jax.Array:
  """srank_delta: the fewest singular values holding 1 - delta of their sum."""
  s = jnp.linalg.svd(features, compute_uv=False)
  return jnp.argmax(jnp.cumsum(s) / jnp.sum(s) >= 1.0 - delta) + 1


@jax.jit
def probe(params, obs: jax.Array) -> Dict[str, jax.Array]:
  """One lane's networks on every state (see the module docstring)."""
  out = {}
  for net, prefix in TORSOS.items():
    h, norm = obs, 0.0
    for layer in range(2):
      w, b = params[f"{prefix}linear_{layer}"]["w"], params[f"{prefix}linear_{layer}"]["b"]
      h = h @ w + b
      norm_params = params.get(f"{prefix}layer_norm_{layer}")
      if norm_params is not None:
        mean, var = jnp.mean(h, -1, keepdims=True), jnp.var(h, -1, keepdims=True)
        h = ((h - mean) * jax.lax.rsqrt(var + LAYER_NORM_EPS) * norm_params["scale"]
             + norm_params["offset"])
      h = jax.nn.relu(h)
      norm += jnp.sum(w ** 2)
      activity = jnp.mean(jnp.abs(h), axis=0)
      out[f"{net}_dead{layer + 1}"] = jnp.mean(jnp.all(h == 0, axis=0))
      out[f"{net}_dormant{layer + 1}"] = jnp.mean(activity <= TAU * jnp.mean(activity))
    out[f"{net}_srank"] = effective_rank(h)
    out[f"{net}_weight_norm"] = jnp.sqrt(norm)
    if net == "policy":
      logits = h @ params["policy"]["w"] + params["policy"]["b"]
      logp = jax.nn.log_softmax(logits)
      out["entropy"] = jnp.mean(-jnp.sum(jnp.exp(logp) * logp, axis=-1))
      out["logit_gap"] = jnp.mean(jnp.max(logits, -1) - jnp.min(logits, -1))
  return out
