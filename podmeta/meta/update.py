"""The meta-update: bootstrapped meta-gradients (BMG) and the plain meta-gradient (MG).

One pure learner step `(LearnerState, batch) -> (LearnerState, metrics)`, like
the fixed-hyperparameter step in `podmeta.learning`, and pmapped the same way.
The batch is split into equal sub-batches ("chunks"):

  inner steps (K):  x^(k+1) = x^(k) + update(x^(k), chunk_k; w), for k < K,
                    differentiated with respect to the meta-parameters w
                    through the optimiser step.
  BMG target:       from stop_gradient(x^(K)), L-1 more steps with the same
                    meta-learned rule, then one step on the outer objective;
                    x~ = stop_gradient(x^(K+L)). The meta-loss is
                    mu(x~, x^(K)(w)), by default KL(pi_x~ || pi_x^(K)) over
                    the states of the target's last chunk, target first
                    (Flennerhag et al. 2021, arXiv 2109.04504, Algorithm 1).
  MG:               the meta-loss is the outer objective at x^(K) on the next
                    chunk (Xu et al. 2018, arXiv 1805.09801; STAC, Zahavy et
                    al. 2020, arXiv 2002.12928, when it reuses the last chunk).

The outer objective is the IMPALA loss with the fixed hyperparameters, no
value term and a fixed entropy cost. Meta-gradients are pmean-ed over the
device axis and applied with Adam after clipping; agent gradients inside every
step are pmean-ed as in the fixed learner, so all devices stay identical.
"""

import functools
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import optax

from podmeta import learning
from podmeta import losses
from podmeta import networks as networks_lib
from podmeta.config import meta_batch_chunks
from podmeta.learning import LearnerState
from podmeta.meta.params import Parameterisation
from podmeta.replay import Trajectory

METHODS = ("mg", "bmg")


class MetaState(NamedTuple):
  params: Any  # meta-parameters: unconstrained scalars or meta-network weights
  opt_state: Any  # the meta-optimiser's state
  # Mean reward per step of the most recent batches, newest first: the context.
  reward_history: jnp.ndarray


class MetaOptions(NamedTuple):
  """How the meta-update is formed; see podmeta.config.MetaConfig for each field."""
  method: str = "bmg"
  inner_steps: int = 1
  target_steps: int = 1
  target_data: str = "last_inner"
  continue_from: str = "inner"
  matching: str = "kl"
  value_matching_cost: float = 0.5
  target_update: str = "agent"
  target_learning_rate: float = 0.1

  @property
  def num_chunks(self) -> int:
    return meta_batch_chunks(self.method, self.inner_steps, self.target_steps, self.target_data)


class MetaAux(NamedTuple):
  """What the meta-objective computes besides the meta-loss."""
  params: Any  # agent parameters the learner continues from
  opt_state: Any
  inner_params: Any  # x^(K), a function of the meta-parameters
  target_params: Any  # x~ (BMG) or None
  hyper: Dict[str, jnp.ndarray]  # meta-learned hyperparameter values used
  inner_loss: losses.LossOutput  # mean over the K inner steps
  inner_grad_norm: jnp.ndarray


def make_meta_optimizer(learning_rate: float, max_grad_norm: float,
                        eps: float = 1e-6) -> optax.GradientTransformation:
  return optax.chain(optax.clip_by_global_norm(max_grad_norm),
                     optax.adam(learning_rate, eps=eps))


def init_meta_state(parameterisation: Parameterisation,
                    meta_optimizer: optax.GradientTransformation, key: jax.Array,
                    context_window: int) -> MetaState:
  meta_params = parameterisation.init(key)
  return MetaState(params=meta_params, opt_state=meta_optimizer.init(meta_params),
                   reward_history=jnp.zeros((context_window,), jnp.float32))


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


def _take(chunks: Trajectory, i) -> Trajectory:
  return jax.tree.map(lambda x: x[i], chunks)


def matching_loss(network: networks_lib.Network, target_params, params, observation,
                  matching: str = "kl", value_matching_cost: float = 0.5) -> jnp.ndarray:
  """mu(x~, x): the distance the meta-parameters minimise; x~ is the target.

  "kl" is KL(pi_x~ || pi_x) = sum_a pi_x~(a) (log pi_x~(a) - log pi_x(a)),
  averaged over the states in `observation` ([B, T+1, ...]); "kl_value" adds
  value_matching_cost * 0.5 (V_x~ - V_x)^2; "l2" is 0.5 ||x~ - x||^2.
  """
  if matching == "l2":
    sq = jax.tree.map(lambda a, b: jnp.sum(jnp.square(a - b)), target_params, params)
    return 0.5 * sum(jax.tree.leaves(sq))
  target_logits, target_values = network.apply(target_params, observation)
  logits, values = network.apply(params, observation)
  log_p_target = jax.nn.log_softmax(target_logits)
  kl = jnp.sum(jnp.exp(log_p_target) * (log_p_target - jax.nn.log_softmax(logits)), axis=-1)
  loss = jnp.mean(kl)
  if matching == "kl_value":
    loss += value_matching_cost * 0.5 * jnp.mean(jnp.square(target_values - values))
  elif matching != "kl":
    raise ValueError(f"unknown matching {matching!r}")
  return loss


def hyperparams_from(values: Dict[str, jnp.ndarray], fixed: losses.LossHyperparams
                     ) -> Tuple[losses.LossHyperparams, Optional[jnp.ndarray]]:
  """Loss hyperparameters with meta-learned values in place of fixed ones, and the lr scale."""
  loss_values = {k: v for k, v in values.items() if k in losses.LossHyperparams._fields}
  return fixed._replace(**loss_values), values.get("learning_rate_scale")


def make_meta_objective(network: networks_lib.Network, optimizer: optax.GradientTransformation,
                        parameterisation: Parameterisation, fixed_hyper: losses.LossHyperparams,
                        outer_hyper: losses.LossHyperparams, options: MetaOptions,
                        clip_rho_threshold: float = 1.0, clip_pg_rho_threshold: float = 1.0,
                        max_abs_reward: float = 0.0,
                        axis_name: Optional[str] = learning.AXIS) -> Callable:
  """objective(meta_params, params, opt_state, chunks, context) -> (meta_loss, MetaAux).

  `chunks` is a batch split by `split_chunks` into `options.num_chunks` parts.
  Differentiate it with respect to `meta_params` for the meta-gradient.
  """
  if options.method not in METHODS:
    raise ValueError(f"unknown meta method {options.method!r}")
  k_steps, l_steps = options.inner_steps, options.target_steps
  loss_args = (clip_rho_threshold, clip_pg_rho_threshold, max_abs_reward)
  step = functools.partial(learning.agent_step, network, optimizer,
                           clip_rho_threshold=clip_rho_threshold,
                           clip_pg_rho_threshold=clip_pg_rho_threshold,
                           max_abs_reward=max_abs_reward, axis_name=axis_name)
  sg = jax.lax.stop_gradient

  def run_steps(params, opt_state, chunks, hyper, lr_scale):
    def body(carry, chunk):
      out = step(carry[0], carry[1], chunk, hyper, lr_scale)
      return (out.params, out.opt_state), (out.loss, out.grad_norm)
    return jax.lax.scan(body, (params, opt_state), chunks)

  def outer_step(params, opt_state, chunk):
    if options.target_update == "agent":
      return step(params, opt_state, chunk, outer_hyper).params
    grads, _ = jax.grad(learning.batch_loss, argnums=1, has_aux=True)(
        network, params, chunk, outer_hyper, *loss_args)
    if axis_name is not None:
      grads = jax.lax.pmean(grads, axis_name)
    return jax.tree.map(lambda p, g: p - options.target_learning_rate * g, params, grads)

  def objective(meta_params, params, opt_state, chunks: Trajectory, context=None):
    values = parameterisation.values(meta_params, context)
    hyper, lr_scale = hyperparams_from(values, fixed_hyper)
    inner = jax.tree.map(lambda x: x[:k_steps], chunks)
    (x_k, opt_k), (inner_loss, inner_gn) = run_steps(params, opt_state, inner, hyper, lr_scale)
    inner_loss = jax.tree.map(jnp.mean, inner_loss)
    last_inner = _take(chunks, k_steps - 1)
    next_params, next_opt, target = x_k, opt_k, None
    if options.method == "mg":
      outer = last_inner if options.target_data == "last_inner" else _take(chunks, k_steps)
      meta_loss, _ = learning.batch_loss(network, x_k, outer, outer_hyper, *loss_args)
    else:
      if options.target_data == "last_inner":
        target_chunks = jax.tree.map(
            lambda x: jnp.broadcast_to(x[k_steps - 1], (l_steps,) + x.shape[1:]), chunks)
      else:
        target_chunks = jax.tree.map(lambda x: x[k_steps:k_steps + l_steps], chunks)
      # The bootstrap sees the meta-learned rule's values but not their
      # dependence on w: no gradient may flow into the target.
      tp, topt = sg(x_k), sg(opt_k)
      if l_steps > 1:
        (tp, topt), _ = run_steps(tp, topt, jax.tree.map(lambda x: x[:l_steps - 1], target_chunks),
                                  jax.tree.map(sg, hyper), sg(lr_scale) if lr_scale is not None
                                  else None)
      if options.continue_from == "target":
        next_params, next_opt = tp, topt
      last_target = _take(target_chunks, l_steps - 1)
      target = sg(outer_step(tp, topt, last_target))
      meta_loss = matching_loss(network, target, x_k, last_target.observation,
                                options.matching, options.value_matching_cost)
    aux = MetaAux(params=next_params, opt_state=next_opt, inner_params=x_k,
                  target_params=target, hyper=values, inner_loss=inner_loss,
                  inner_grad_norm=jnp.mean(inner_gn))
    return meta_loss, aux

  return objective


def make_meta_update_fn(network: networks_lib.Network, optimizer: optax.GradientTransformation,
                        parameterisation: Parameterisation,
                        meta_optimizer: optax.GradientTransformation,
                        fixed_hyper: losses.LossHyperparams, outer_hyper: losses.LossHyperparams,
                        options: MetaOptions, clip_rho_threshold: float = 1.0,
                        clip_pg_rho_threshold: float = 1.0, max_abs_reward: float = 0.0,
                        axis_name: Optional[str] = learning.AXIS):
  """The pure learner step with meta-learned hyperparameters (state.meta: MetaState)."""
  objective = make_meta_objective(network, optimizer, parameterisation, fixed_hyper,
                                  outer_hyper, options, clip_rho_threshold,
                                  clip_pg_rho_threshold, max_abs_reward, axis_name)

  def pmean(x):
    return x if axis_name is None else jax.lax.pmean(x, axis_name)

  def update(state: LearnerState, batch: Trajectory) -> Tuple[LearnerState, Dict]:
    meta: MetaState = state.meta
    # The context: mean reward per step of this and the previous batches.
    batch_reward = pmean(jnp.mean(batch.reward[:, 1:].astype(jnp.float32)))
    history = jnp.concatenate([batch_reward[None], meta.reward_history[:-1]])
    chunks = split_chunks(batch, options.num_chunks)
    (meta_loss, aux), meta_grads = jax.value_and_grad(objective, has_aux=True)(
        meta.params, state.params, state.opt_state, chunks, history)
    meta_grads = pmean(meta_grads)
    updates, meta_opt_state = meta_optimizer.update(meta_grads, meta.opt_state, meta.params)
    new_meta = MetaState(params=optax.apply_updates(meta.params, updates),
                         opt_state=meta_opt_state, reward_history=history)
    metrics = dict(aux.inner_loss._asdict())
    metrics["grad_norm"] = aux.inner_grad_norm
    metrics["meta_loss"] = meta_loss
    metrics["meta_grad_norm"] = optax.global_norm(meta_grads)
    metrics["meta_context"] = jnp.mean(history)
    metrics.update({f"meta/{name}": value for name, value in aux.hyper.items()})
    metrics = pmean(metrics)
    return LearnerState(params=aux.params, opt_state=aux.opt_state, step=state.step + 1,
                        meta=new_meta), metrics

  return update

