"""The meta-update: bootstrapped meta-gradients (BMG) and the plain meta-gradient (MG).

One pure learner step `(LearnerState, batch) -> (LearnerState, metrics)`, like
the fixed-hyperparameter step in `podmeta.learning`, and pmapped the same way.
With `target_data="online"` (the default: the published algorithms) the agent
learns from one stream of batches B_0, B_1, ... and is never rewound:

  agent:    x_{t+1} = x_t + u(x_t, B_t; h(w_t, c_t)), the ordinary update with
            the hyperparameters h the meta-parameters w give for context c_t.
  ring:     the learner state keeps the last R batches, the parameters and
            optimiser states they were applied to, and their contexts.
  BMG:      (Flennerhag et al. 2021, arXiv 2109.04504, Sec. 3; Luketina et
            al. 2022, Sec. 6, App. A) R = K + L - 1. From the oldest snapshot
            x_s, s = t - R + 1, recompute the K updates on B_s..B_{s+K-1}
            with the CURRENT w, differentiably: x^(K)(w). The target is the
            agent's own future: x_{t+1}, which took the L - 1 real updates
            after those K, plus (by default) one step on the outer objective
            on B_t; x~ = stop_gradient(...). The meta-loss is
            mu = KL(pi_x~ || pi_x^(K)(w)) over B_t's states, target first.
  MG:       (Xu et al. 2018, arXiv 1805.09801) R = K + 1. The outer loss on
            the newest batch B_t at x^(K)(w), the K updates before it
            recomputed from x_{t-K} with the current w.

Each learner step costs K differentiated updates, one outer step and one
ordinary update, whatever L is. Until the ring is full (the first R - 1
steps) the meta-parameters are left as they are (`meta_active` is 0).

`target_data="last_inner"` is an ablation: the batch is split into K
sub-batches, the agent takes K differentiated steps on them, and BMG's target
re-steps the last one L - 1 times with the meta-learned rule plus one outer
step (MG's outer loss reuses it).

The outer objective is the IMPALA loss with the fixed hyperparameters, no
value term and `outer_entropy_cost`. Meta-gradients are pmean-ed over the
device axis and applied with Adam after clipping; agent gradients inside
every step are pmean-ed as in the fixed learner, so all devices stay
identical. The ring holds the global batch (all-gathered), so it is the same
on every device and checkpoints like the rest of the state; each device
recomputes on its own shard.
"""

import functools
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import optax

from podmeta import learning
from podmeta import losses
from podmeta import networks as networks_lib
from podmeta.learning import LearnerState
from podmeta.meta import context as context_lib
from podmeta.meta.config import MetaConfig
from podmeta.meta.params import Parameterisation
from podmeta.types import Trajectory


class Ring(NamedTuple):
  """The last R learner steps, oldest at slot `count % R` once full."""
  params: Any  # [R, ...] the agent parameters each batch was applied to
  opt_state: Any  # [R, ...] the optimiser state at those parameters
  batch: Trajectory  # [R, B, T+1, ...] the global batches
  context: jnp.ndarray  # [R, window] the meta-network's input at that step
  count: jnp.ndarray  # int32 scalar: batches pushed so far


class MetaState(NamedTuple):
  params: Any  # meta-parameters: unconstrained scalars or meta-network weights
  opt_state: Any  # the meta-optimiser's state
  context: context_lib.RewardContext
  ring: Any  # Ring with target_data="online", else ()


def make_meta_optimizer(learning_rate, max_grad_norm: float,
                        eps: float = 1e-4) -> optax.GradientTransformation:
  """Adam after global-norm clipping (none when max_grad_norm is 0).

  `learning_rate` may be a traced value: the experiment vmaps over it.
  """
  adam = optax.adam(learning_rate, eps=eps)
  return optax.chain(optax.clip_by_global_norm(max_grad_norm), adam) if max_grad_norm else adam


def init_ring(params, opt_state, batch: Trajectory, window: int, size: int) -> Ring:
  """Every slot starts as the initial agent, so unused slots compute finite values."""
  def fill(x):
    x = jnp.asarray(x)
    return jnp.broadcast_to(x[None], (size,) + x.shape)
  return Ring(params=jax.tree.map(fill, params), opt_state=jax.tree.map(fill, opt_state),
              batch=jax.tree.map(fill, batch), context=jnp.zeros((size, window), jnp.float32),
              count=jnp.zeros((), jnp.int32))


def init_meta_state(meta: MetaConfig, parameterisation: Parameterisation,
                    meta_optimizer: optax.GradientTransformation, key: jax.Array,
                    params=None, opt_state=None, batch: Optional[Trajectory] = None) -> MetaState:
  """The meta-state; with `meta.online`, the agent's initial params/opt_state and a
  zero global batch ([B, T+1, ...]) shape its ring."""
  meta_params = parameterisation.init(key)
  ring = ()
  if meta.online:
    ring = init_ring(params, opt_state, batch, meta.context_window, meta.ring_size)
  return MetaState(params=meta_params, opt_state=meta_optimizer.init(meta_params),
                   context=context_lib.init(meta.context_window), ring=ring)


def push(ring: Ring, params, opt_state, batch: Trajectory, context: jnp.ndarray) -> Ring:
  size = ring.context.shape[0]
  slot = ring.count % size

  def put(buf, x):
    return jax.lax.dynamic_update_index_in_dim(buf, jnp.asarray(x, buf.dtype), slot, 0)
  return Ring(params=jax.tree.map(put, ring.params, params),
              opt_state=jax.tree.map(put, ring.opt_state, opt_state),
              batch=jax.tree.map(put, ring.batch, batch), context=put(ring.context, context),
              count=ring.count + 1)


def oldest(ring: Ring, k: int):
  """(params, opt_state) of the oldest slot, and the batches and contexts of the k oldest."""
  size = ring.context.shape[0]
  first = ring.count % size
  index = (first + jnp.arange(k)) % size
  take = lambda x: x[first]  # noqa: E731
  return (jax.tree.map(take, ring.params), jax.tree.map(take, ring.opt_state),
          jax.tree.map(lambda x: x[index], ring.batch), ring.context[index])


def split_chunks(batch: Trajectory, num_chunks: int) -> Trajectory:
  """[B, ...] -> [num_chunks, B / num_chunks, ...]: unroll i goes to chunk i % num_chunks.

  Strided rather than consecutive, so that splitting a batch over devices and
  then into chunks gives each chunk the same unrolls as chunking it whole
  (when every device's share divides into the chunks): the meta-update on
  many devices is the one on a single device.
  """
  def split(x):
    if x.shape[0] % num_chunks:
      raise ValueError(f"a batch of {x.shape[0]} unrolls does not split into "
                       f"{num_chunks} equal chunks")
    x = x.reshape((x.shape[0] // num_chunks, num_chunks) + x.shape[1:])
    return jnp.swapaxes(x, 0, 1)
  return jax.tree.map(split, batch)


def matching_loss(network: networks_lib.Network, target_params, params, batch: Trajectory,
                  matching: str = "kl", value_matching_cost: float = 0.5) -> jnp.ndarray:
  """mu(x~, x): the distance the meta-parameters minimise; x~ is the target.

  "kl" is KL(pi_x~ || pi_x) = sum_a pi_x~(a) (log pi_x~(a) - log pi_x(a)),
  averaged over the states of `batch` ([B, T+1, ...]; a recurrent network
  unrolled over it); "kl_value" adds value_matching_cost * 0.5 (V_x~ - V_x)^2;
  "l2" is 0.5 ||x~ - x||^2 (no batch needed).
  """
  if matching == "l2":
    sq = jax.tree.map(lambda a, b: jnp.sum(jnp.square(a - b)), target_params, params)
    return 0.5 * sum(jax.tree.leaves(sq))
  if matching not in ("kl", "kl_value", "kl_reverse"):
    raise ValueError(f"unknown matching {matching!r}")
  if matching in ("kl", "kl_reverse") and not network.state_size:
    # The policy alone: the value torso would be computed twice for nothing.
    target_logits, logits = (network.policy(target_params, batch.observation),
                             network.policy(params, batch.observation))
  else:
    def unroll(p):
      return network.unroll(p, batch.observation, batch.is_first, batch.core_state[:, 0])
    (target_logits, target_values, _), (logits, values, _) = (
        unroll(target_params), unroll(params))
  if matching == "kl_reverse":
    return jnp.mean(network.distribution.kl(logits, target_logits))
  loss = jnp.mean(network.distribution.kl(target_logits, logits))
  if matching == "kl_value":
    loss += value_matching_cost * 0.5 * jnp.mean(jnp.square(target_values - values))
  return loss


def hyperparams_from(values: Dict[str, jnp.ndarray], fixed: losses.LossHyperparams
                     ) -> Tuple[losses.LossHyperparams, Optional[jnp.ndarray]]:
  """Loss hyperparameters with meta-learned values in place of fixed ones, and the lr scale."""
  loss_values = {k: v for k, v in values.items() if k in losses.LossHyperparams._fields}
  return fixed._replace(**loss_values), values.get("learning_rate_scale")


class InnerOut(NamedTuple):
  """The end of K differentiable updates, with each step's loss terms and gradient norm."""
  params: Any
  opt_state: Any
  loss: losses.LossOutput
  grad_norms: jnp.ndarray  # [K]


class _MetaGradOut(NamedTuple):
  """What either meta-gradient path (online or re-stepping) hands the update."""
  params: Any
  opt_state: Any
  loss: losses.LossOutput
  grad_norms: jnp.ndarray  # the agent updates' gradient norms this learner step, [n]
  ring: Any
  meta_loss: jnp.ndarray
  meta_grads: Any
  active: jnp.ndarray


class MetaObjective(NamedTuple):
  """The pieces of the meta-objective, bound once to the agent and the meta config.

  `inner(w, params, opt_state, batches, contexts) -> InnerOut` runs the
  len(batches) differentiable updates; `outer_loss(params, batch)` is the MG objective;
  `target(params, opt_state, batch)` is BMG's bootstrap from the given agent
  (its outer step, when configured, under stop-gradient); `match(target,
  params, batch)` is mu.
  """
  inner: Callable
  outer_loss: Callable
  target: Callable
  match: Callable


def make_meta_objective(network: networks_lib.Network, optimizer: optax.GradientTransformation,
                        parameterisation: Parameterisation, fixed_hyper: losses.LossHyperparams,
                        outer_hyper: losses.LossHyperparams, meta: MetaConfig,
                        options: losses.LossOptions = losses.LossOptions(),
                        axis_name: Optional[str] = learning.AXIS) -> MetaObjective:
  step = functools.partial(learning.agent_step, network, optimizer, options=options,
                           axis_name=axis_name)
  sg = jax.lax.stop_gradient

  def inner(w, params, opt_state, batches: Trajectory, contexts) -> InnerOut:
    # A Python loop, not lax.scan: K is small and static, and the unrolled
    # steps' reverse pass runs 1.35x faster at K = 3 on CPU (XLA fuses across
    # steps, and no scan carry cotangent is materialised; BENCHMARKS.md).
    losses_k, norms_k = [], []
    for k in range(contexts.shape[0]):
      batch = jax.tree.map(lambda x: x[k], batches)  # noqa: B023
      hyper, lr_scale = hyperparams_from(parameterisation.values(w, contexts[k]), fixed_hyper)
      out = step(params, opt_state, batch, hyper, lr_scale)
      params, opt_state = out.params, out.opt_state
      losses_k.append(out.loss)
      norms_k.append(out.grad_norm)
    loss = jax.tree.map(lambda *xs: jnp.mean(jnp.stack(xs)), *losses_k)
    return InnerOut(params, opt_state, loss, jnp.stack(norms_k))

  def outer_loss(params, batch):
    return learning.batch_loss(network, params, batch, outer_hyper, options)[0]

  def target(params, opt_state, batch):
    params, opt_state = sg(params), sg(opt_state)
    if not meta.target_outer_step:
      return params
    if meta.target_update == "agent":
      return sg(step(params, opt_state, batch, outer_hyper).params)
    grads = jax.grad(outer_loss)(params, batch)
    if axis_name is not None:
      grads = jax.lax.pmean(grads, axis_name)
    return sg(jax.tree.map(lambda p, g: p - meta.target_learning_rate * g, params, grads))

  def match(target_params, params, batch):
    return matching_loss(network, target_params, params, batch, meta.matching,
                         meta.value_matching_cost)

  return MetaObjective(inner=inner, outer_loss=outer_loss, target=target, match=match)


def make_meta_update_fn(network: networks_lib.Network, optimizer: optax.GradientTransformation,
                        parameterisation: Parameterisation,
                        meta_optimizer: optax.GradientTransformation,
                        fixed_hyper: losses.LossHyperparams, outer_hyper: losses.LossHyperparams,
                        meta: MetaConfig, options: losses.LossOptions = losses.LossOptions(),
                        max_grad_norm: float = 0.0,
                        axis_name: Optional[str] = learning.AXIS):
  """The pure learner step with meta-learned hyperparameters (state.meta: MetaState).

  `max_grad_norm` (the agent optimiser's clip) only feeds the `grad_clipped`
  metric. The hyperparameter arguments may hold traced values.
  """
  objective = make_meta_objective(network, optimizer, parameterisation, fixed_hyper,
                                  outer_hyper, meta, options, axis_name)
  step = functools.partial(learning.agent_step, network, optimizer, options=options,
                           axis_name=axis_name)
  k_steps, l_steps = meta.inner_steps, meta.target_steps

  def pmean(x):
    return x if axis_name is None else jax.lax.pmean(x, axis_name)

  def local_shard(global_batch: Trajectory, local_size: int) -> Trajectory:
    """This device's part of a batch all-gathered along axis 1 ([n, B, ...])."""
    if axis_name is None:
      return global_batch
    start = jax.lax.axis_index(axis_name) * local_size
    return jax.tree.map(lambda x: jax.lax.dynamic_slice_in_dim(x, start, local_size, 1),
                        global_batch)

  def online(state: LearnerState, batch: Trajectory, w, context_t, hyper_t,
             lr_scale_t) -> _MetaGradOut:
    """The agent's ordinary update, then the meta-gradient over the ring."""
    agent = step(state.params, state.opt_state, batch, hyper_t, lr_scale_t)
    global_batch = batch if axis_name is None else jax.tree.map(
        lambda x: jax.lax.all_gather(x, axis_name, tiled=True), batch)
    ring = push(state.meta.ring, state.params, state.opt_state, global_batch, context_t)
    x_s, opt_s, inner_batches, inner_contexts = oldest(ring, k_steps)
    inner_batches = local_shard(inner_batches, batch.reward.shape[0])
    target = (objective.target(agent.params, agent.opt_state, batch)
              if meta.method == "bmg" else None)

    def meta_loss_fn(w):
      x_k = objective.inner(w, x_s, opt_s, inner_batches, inner_contexts).params
      if meta.method == "mg":
        return objective.outer_loss(x_k, batch)
      return objective.match(target, x_k, batch)

    meta_loss, grads = jax.value_and_grad(meta_loss_fn)(w)
    active = ring.count >= ring.context.shape[0]
    return _MetaGradOut(params=agent.params, opt_state=agent.opt_state, loss=agent.loss,
                        grad_norms=agent.grad_norm[None], ring=ring, meta_loss=meta_loss,
                        meta_grads=grads, active=active)

  def restep(state: LearnerState, batch: Trajectory, w, context_t) -> _MetaGradOut:
    """The ablation: K differentiated steps on sub-batches, target re-stepped on the last."""
    chunks = split_chunks(batch, k_steps)
    contexts = jnp.broadcast_to(context_t, (k_steps,) + context_t.shape)
    last = jax.tree.map(lambda x: x[k_steps - 1], chunks)

    def meta_loss_fn(w):
      out = objective.inner(w, state.params, state.opt_state, chunks, contexts)
      if meta.method == "mg":
        value = objective.outer_loss(out.params, last)
      else:
        tp, topt = jax.lax.stop_gradient((out.params, out.opt_state))
        if l_steps > 1:
          repeated = jax.tree.map(lambda x: jnp.broadcast_to(x, (l_steps - 1,) + x.shape), last)
          stepped = objective.inner(jax.lax.stop_gradient(w), tp, topt, repeated,
                                    contexts[:1].repeat(l_steps - 1, 0))
          tp, topt = stepped.params, stepped.opt_state
        value = objective.match(objective.target(tp, topt, last), out.params, last)
      return value, out

    (meta_loss, out), grads = jax.value_and_grad(meta_loss_fn, has_aux=True)(w)
    return _MetaGradOut(params=out.params, opt_state=out.opt_state, loss=out.loss,
                        grad_norms=out.grad_norms, ring=(), meta_loss=meta_loss,
                        meta_grads=grads, active=jnp.bool_(True))

  def update(state: LearnerState, batch: Trajectory) -> Tuple[LearnerState, Dict]:
    ms: MetaState = state.meta
    batch_reward = pmean(jnp.mean(batch.reward[:, 1:].astype(jnp.float32)))
    ctx = context_lib.push(ms.context, batch_reward)
    context_t = context_lib.features(ctx, meta.context_normalisation)
    values_t = parameterisation.values(ms.params, context_t)
    hyper_t, lr_scale_t = hyperparams_from(values_t, fixed_hyper)
    if meta.online:
      out = online(state, batch, ms.params, context_t, hyper_t, lr_scale_t)
    else:
      out = restep(state, batch, ms.params, context_t)
    active = out.active
    # Before the ring is full the meta-parameters and their optimiser wait;
    # what was computed from the ring's initial filling is discarded.
    meta_grads = jax.tree.map(lambda g: jnp.where(active, g, 0.0), pmean(out.meta_grads))
    meta_loss = jnp.where(active, pmean(out.meta_loss), 0.0)
    updates, meta_opt_state = meta_optimizer.update(meta_grads, ms.opt_state, ms.params)
    moved = optax.apply_updates(ms.params, updates)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(active, a, b), new, old)  # noqa: E731
    new_meta = MetaState(params=keep(moved, ms.params),
                         opt_state=keep(meta_opt_state, ms.opt_state), context=ctx,
                         ring=out.ring)
    metrics = dict(out.loss._asdict())
    # The re-stepping ablation takes K agent updates per learner step: its
    # clipped fraction is over those K, not a verdict on their mean norm.
    metrics["grad_norm"] = jnp.mean(out.grad_norms)
    metrics["grad_clipped"] = jnp.mean(learning.clipped(out.grad_norms, max_grad_norm))
    metrics["meta_loss"] = meta_loss
    metrics["meta_grad_norm"] = optax.global_norm(meta_grads)
    metrics["meta_active"] = active.astype(jnp.float32)
    metrics["meta_context"] = jnp.mean(context_t)
    metrics.update({f"meta/{name}": value for name, value in values_t.items()})
    metrics = pmean(metrics)
    return LearnerState(params=out.params, opt_state=out.opt_state, step=state.step + 1,
                        meta=new_meta), metrics

  return update
