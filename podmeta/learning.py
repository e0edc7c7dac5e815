"""The learner: its state, the pure update step and its pmapped runner.

`make_update_fn` returns a pure `(state, batch) -> (state, metrics)` function
that is `jax.pmap`-ed over every local device with the name `AXIS`; gradients
and metrics are pmean-ed over it, so every device holds identical state.
"""

import functools
import threading
from typing import Any, Callable, Dict, NamedTuple, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from podmeta import core
from podmeta import losses
from podmeta import networks as networks_lib
from podmeta import types
from podmeta.config import WEIGHT_DECAY_ANCHORS
from podmeta.types import Trajectory

AXIS = types.DEVICE_AXIS


class LearnerState(NamedTuple):
  params: Any
  opt_state: Any
  step: jnp.ndarray  # learner steps taken, int32 scalar
  # podmeta.meta.MetaState when hyperparameters are meta-learned, else ().
  meta: Any = ()


class DecayTowardsInitState(NamedTuple):
  init_params: Any  # the parameters the optimiser was initialised with


def add_decay_towards_init(strength: float) -> optax.GradientTransformation:
  """Adds `strength * (params - params_0)` to the gradient: an L2 penalty
  towards the initial parameters ("L2 Init", Kumar et al. 2023, "Maintaining
  Plasticity in Continual Learning via Regenerative Regularization").

  Unlike decay towards zero it leaves a unit the gradient no longer reaches
  at its initial, trainable scale instead of shrinking it away.
  """

  def init_fn(params):
    return DecayTowardsInitState(jax.tree.map(jnp.asarray, params))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("add_decay_towards_init needs the params in optimizer.update")
    updates = jax.tree.map(lambda g, p, p0: g + strength * (p - p0), updates, params,
                           state.init_params)
    return updates, state

  return optax.GradientTransformation(init_fn, update_fn)


def make_optimizer(name: str, learning_rate: float, max_grad_norm: float,
                   rmsprop_decay: float = 0.99, eps: float = 1e-6,
                   weight_decay: float = 0.0, weight_decay_towards: str = "zero"
                   ) -> optax.GradientTransformation:
  """Clip by global norm (unless max_grad_norm is 0), add an L2 penalty's
  gradient (unless weight_decay is 0), then the optimiser.

  Every step is differentiable.

  The penalty, `weight_decay * (params - anchor)` with the anchor zero or the
  initial parameters, joins the gradient after the clip, so the clip bounds
  only the loss's step. Under SGD that is decoupled weight decay; under Adam
  or RMSProp it is rescaled with the gradient (L2 regularisation, not AdamW).
  With weight_decay 0 the optimiser and its state are exactly as without it.

  Adam's `eps_root` keeps its update differentiable where a gradient entry is
  zero (d sqrt(v)/dv is infinite at v = 0), which meta-gradients go through.
  """
  if name == "adam":
    opt = optax.adam(learning_rate, eps=eps, eps_root=1e-12)
  elif name == "rmsprop":
    opt = optax.rmsprop(learning_rate, decay=rmsprop_decay, eps=eps)
  elif name == "sgd":
    opt = optax.sgd(learning_rate)
  else:
    raise ValueError(f"unknown optimizer {name!r}")
  if weight_decay_towards not in WEIGHT_DECAY_ANCHORS:
    raise ValueError(f"unknown weight_decay_towards {weight_decay_towards!r}")
  parts = [optax.clip_by_global_norm(max_grad_norm)] if max_grad_norm else []
  if weight_decay:
    parts.append(optax.add_decayed_weights(weight_decay) if weight_decay_towards == "zero"
                 else add_decay_towards_init(weight_decay))
  return optax.chain(*parts, opt) if parts else opt


def clipped(grad_norm: jnp.ndarray, max_grad_norm: float) -> jnp.ndarray:
  """1.0 where the optimiser's global-norm clip changed the gradient, else 0.0."""
  if not max_grad_norm:
    return jnp.zeros_like(grad_norm)
  return (grad_norm > max_grad_norm).astype(jnp.float32)


def batch_loss(network: networks_lib.Network, params, batch: Trajectory,
               hyper: losses.LossHyperparams,
               options: losses.LossOptions = losses.LossOptions()
               ) -> Tuple[jnp.ndarray, losses.LossOutput]:
  """Mean IMPALA loss over a batch of unrolls [B, T+1, ...]; a recurrent network
  is unrolled from each unroll's stored core state."""
  logits, values, _ = network.unroll(params, batch.observation, batch.is_first,
                                     batch.core_state[:, 0])
  per_unroll = jax.vmap(
      functools.partial(losses.impala_loss, hyper=hyper, options=options,
                        distribution=network.distribution))(
          logits, values, batch.action, batch.behaviour_logits, batch.reward,
          batch.discount, batch.is_first)
  out = jax.tree.map(jnp.mean, per_unroll)
  return out.loss, out


class AgentStep(NamedTuple):
  params: Any
  opt_state: Any
  loss: losses.LossOutput
  grad_norm: jnp.ndarray


def agent_step(network: networks_lib.Network, optimizer: optax.GradientTransformation,
               params, opt_state, batch: Trajectory, hyper: losses.LossHyperparams,
               learning_rate_scale=None,
               options: losses.LossOptions = losses.LossOptions(),
               axis_name: Optional[str] = AXIS) -> AgentStep:
  """One optimiser step on the IMPALA loss: the update rule meta-gradients go through.

  `hyper` and `learning_rate_scale` may be traced values (meta-learned); the
  whole step is differentiable with respect to them.
  """
  grads, out = jax.grad(batch_loss, argnums=1, has_aux=True)(
      network, params, batch, hyper, options)
  if axis_name is not None:
    grads = jax.lax.pmean(grads, axis_name)
  updates, opt_state = optimizer.update(grads, opt_state, params)
  if learning_rate_scale is not None:
    updates = jax.tree.map(lambda u: learning_rate_scale * u, updates)
  return AgentStep(optax.apply_updates(params, updates), opt_state, out,
                   optax.global_norm(grads))


def make_update_fn(network: networks_lib.Network, optimizer: optax.GradientTransformation,
                   hyper: losses.LossHyperparams,
                   options: losses.LossOptions = losses.LossOptions(),
                   max_grad_norm: float = 0.0, axis_name: Optional[str] = AXIS):
  """The pure learner step with fixed hyperparameters.

  With `axis_name`, it must run under pmap/vmap of that name. `max_grad_norm`
  (the optimiser's clip) only feeds the `grad_clipped` metric; `hyper` may
  hold traced values.
  """

  def update(state: LearnerState, batch: Trajectory) -> Tuple[LearnerState, Dict]:
    out = agent_step(network, optimizer, state.params, state.opt_state, batch, hyper,
                     options=options, axis_name=axis_name)
    metrics = dict(out.loss._asdict())
    metrics["grad_norm"] = out.grad_norm
    metrics["grad_clipped"] = clipped(out.grad_norm, max_grad_norm)
    if axis_name is not None:
      metrics = jax.lax.pmean(metrics, axis_name)
    return state._replace(params=out.params, opt_state=out.opt_state,
                          step=state.step + 1), metrics

  return update


def init_state(network: networks_lib.Network, optimizer: optax.GradientTransformation,
               key: jax.Array, dummy_obs: np.ndarray, meta: Any = ()) -> LearnerState:
  params = network.init(key, dummy_obs)
  return LearnerState(params=params, opt_state=optimizer.init(params),
                      step=jnp.zeros((), jnp.int32), meta=meta)


def replicate(tree, devices: Sequence):
  return jax.device_put_replicated(tree, list(devices))


def unreplicate(tree):
  """First device's copy, as host numpy arrays."""
  # One batched transfer of the first shards: indexing each leaf (x[0]) is a
  # dispatch per leaf, 13x slower on a 20-leaf tree.
  shards = jax.device_get(jax.tree.map(lambda x: x.addressable_data(0), tree))
  return jax.tree.map(lambda x: x[0], shards)


class Learner(core.VariableSource, core.Saveable):
  """Holds the replicated LearnerState and applies the pmapped update.

  Thread-safe for `get_variables` (served to actors over courier) while
  `step` runs on the learner's own thread.
  """

  def __init__(self, update: Callable[[LearnerState, Trajectory], Tuple[LearnerState, Dict]],
               initial_state: LearnerState, devices: Optional[Sequence] = None):
    """`update` is a pure step written for pmap over the axis `AXIS`.

    `devices=None` pmaps over every device of every process: on a pod
    (`podmeta.pod`) each host passes batches for its own devices and the
    pmean spans all of them.
    """
    self._devices = list(devices or jax.local_devices())
    self._update = jax.pmap(update, axis_name=AXIS, devices=devices)
    self._from_first = jax.pmap(_from_first_device, axis_name=AXIS, devices=devices)
    self._template = initial_state
    self._state = replicate(self._template, self._devices)
    # A host-side copy of state.step: reading the device's would wait for the
    # update in flight on every call.
    self._steps = 0
    self._lock = threading.Lock()
    self._cached: Tuple[int, Any] = (-1, None)

  @property
  def num_devices(self) -> int:
    return len(self._devices)

  @property
  def devices(self):
    return self._devices

  @property
  def step_count(self) -> int:
    return self._steps

  def step(self, batch: Trajectory) -> Dict:
    """One update on a batch already sharded over devices. Returns device metrics."""
    state, metrics = self._update(self._state, batch)
    # The state and its version change together, so that get_variables never
    # pairs new parameters with the old version (or the reverse).
    with self._lock:
      self._state, self._steps = state, self._steps + 1
    return metrics

  def get_variables(self) -> Tuple[int, Any]:
    with self._lock:
      state, version = self._state, self._steps  # device arrays are immutable
      if self._cached[0] != version:
        self._cached = (version, unreplicate(state.params))
      return self._cached

  def get_variables_if_changed(self, version: int) -> Optional[Tuple[int, Any]]:
    with self._lock:
      unchanged = self._steps == version
    return None if unchanged else self.get_variables()

  def get_device_variables(self) -> Tuple[int, Any]:
    """(version, params) as arrays on the first learner device, never via the host.

    For actors in this process (inference on an accelerator): they copy them
    device to device.
    """
    with self._lock:
      state, version = self._state, self._steps
    # Indexing a pmapped array by device is a view of that device's buffer.
    return version, jax.tree.map(lambda x: x[0], state.params)

  def save(self) -> LearnerState:
    return unreplicate(self._state)

  def sync_from_first_device(self) -> None:
    """Every device (of every host) takes the state of global device 0.

    On a pod only process 0 restores checkpoints; this hands its state to the
    others. Every host must call it at the same point.
    """
    state = self._from_first(self._state)
    with self._lock:
      self._state, self._steps = state, int(np.asarray(state.step[0]))
      self._cached = (-1, None)

  def restore(self, state: LearnerState) -> None:
    _check_same_structure(self._template, state)
    replicated = replicate(state, self._devices)
    with self._lock:
      self._state, self._steps = replicated, int(np.asarray(state.step))
      # The cache is keyed by the step count, which a restore can repeat.
      self._cached = (-1, None)

  @property
  def template(self) -> LearnerState:
    return self._template


def _from_first_device(tree):
  first = jax.lax.axis_index(AXIS) == 0
  return jax.tree.map(
      lambda x: jax.lax.psum(jnp.where(first, x, jnp.zeros_like(x)), AXIS), tree)


def _check_same_structure(expected, got) -> None:
  exp_leaves, exp_tree = jax.tree.flatten(expected)
  got_leaves, got_tree = jax.tree.flatten(got)
  if exp_tree != got_tree:
    raise ValueError("checkpoint does not match this network/optimizer (different structure)")
  for e, g in zip(exp_leaves, got_leaves):
    if np.shape(e) != np.shape(g):
      raise ValueError(
          f"checkpoint does not match this network/optimizer (shape {np.shape(g)} != {np.shape(e)})")


class OnDeviceVariables(core.VariableSource):
  """The learner's parameters on its device, for actors in its own process."""

  def __init__(self, learner: Learner):
    self._learner = learner

  def get_variables(self) -> Tuple[int, Any]:
    return self._learner.get_device_variables()

  def get_variables_if_changed(self, version: int) -> Optional[Tuple[int, Any]]:
    # The step count first: slicing the params off the device is a dispatch per leaf.
    return None if self._learner.step_count == version else self.get_variables()
