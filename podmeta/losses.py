"""The IMPALA / V-trace actor-critic loss (Espeholt et al. 2018, arXiv 1802.01561).

The math is unbatched, over one unroll of T+1 time steps; callers vmap it over
the batch. Time indexing follows the trajectory schema (`podmeta.types`):
step t holds the observation x_t, the reward r_t and termination flag that
arrived with it, whether x_t starts an episode, and the action a_t taken at
x_t with its behaviour logits. Transition t is x_t -a_t-> x_{t+1}.

Episode ends inside an unroll: gymnasium vector envs reset one step after an
episode ends (autoreset "next step"), so the transition out of a final
observation is a dummy whose action was ignored; it is recognised by
is_first[t+1] and masked. Termination sets the discount into the final
observation to zero; truncation keeps it, so V(x_final) is bootstrapped.
"""

from typing import NamedTuple, Optional

import chex
import jax
import jax.numpy as jnp

from podmeta import distributions
from podmeta._rlax import rlax


class LossHyperparams(NamedTuple):
  """Loss coefficients that may be traced (meta-learned) rather than fixed."""
  discount: float = 0.99
  vtrace_lambda: float = 1.0
  entropy_cost: float = 0.01
  baseline_cost: float = 0.5


class LossOptions(NamedTuple):
  """The loss's fixed options (never meta-learned), bound once by the builder.

  clip_rho_threshold: rho-bar of the paper (value targets).
  clip_pg_rho_threshold: clipping of rho in the policy-gradient advantage.
  max_abs_reward: rewards are clipped to [-max_abs_reward, max_abs_reward]
    when positive (Mnih et al. 2015; IMPALA's Atari agents), 0 leaves them.
  reward_scale: rewards are multiplied by it (after clipping).
  """
  clip_rho_threshold: float = 1.0
  clip_pg_rho_threshold: float = 1.0
  max_abs_reward: float = 0.0
  reward_scale: float = 1.0


class LossOutput(NamedTuple):
  loss: jnp.ndarray
  policy_loss: jnp.ndarray
  value_loss: jnp.ndarray
  entropy: jnp.ndarray
  mean_rho: jnp.ndarray


def _is_zero(coefficient) -> bool:
  """True for a constant (Python number) 0; a traced coefficient is never."""
  return isinstance(coefficient, (int, float)) and coefficient == 0


def impala_loss(
    logits_t: chex.Array,
    values_t: chex.Array,
    action_t: chex.Array,
    behaviour_logits_t: chex.Array,
    reward_t: chex.Array,
    discount_t: chex.Array,
    is_first_t: chex.Array,
    hyper: LossHyperparams,
    options: LossOptions = LossOptions(),
    distribution: Optional[distributions.ActionDistribution] = None,
) -> LossOutput:
  """V-trace actor-critic loss of one unroll.

  Args:
    logits_t: [T+1, P] learner policy parameters at x_0..x_T (logits, or a
      Gaussian's mean and log std).
    values_t: [T+1] learner values V(x_0)..V(x_T).
    action_t: [T+1, *action_shape] actions (the last one is not used).
    behaviour_logits_t: [T+1, P] policy parameters of the acting policy.
    reward_t: [T+1] reward that arrived with x_t (r_0 is not used).
    discount_t: [T+1] 0 where x_t is a terminal observation, else 1.
    is_first_t: [T+1] 1 where x_t starts an episode.
    hyper: discount, lambda and loss coefficients (may be traced).
    options: the fixed options (`LossOptions`).
    distribution: the policy's action distribution; None: categorical.

  Returns:
    The total loss (policy + baseline_cost * value - entropy_cost * entropy,
    each a mean over the T transitions) and its parts.
  """
  chex.assert_rank([logits_t, behaviour_logits_t], 2)
  chex.assert_rank([values_t, reward_t, discount_t, is_first_t], 1)
  chex.assert_equal_shape([logits_t, behaviour_logits_t])
  chex.assert_equal_shape([values_t, reward_t, discount_t, is_first_t])
  chex.assert_equal_shape_prefix([values_t, action_t], 1)
  if distribution is None:
    distribution = distributions.categorical(logits_t.shape[-1])

  # Transition t = 0..T-1 goes from x_t to x_{t+1}.
  mask = 1.0 - is_first_t[1:].astype(jnp.float32)
  a_tm1 = action_t[:-1]
  v_tm1 = values_t[:-1]
  v_t = values_t[1:]
  r_t = reward_t[1:].astype(jnp.float32)
  # Clipped here rather than in the env so that the episode returns actors
  # log stay the raw game score.
  if options.max_abs_reward > 0:
    r_t = jnp.clip(r_t, -options.max_abs_reward, options.max_abs_reward)
  if options.reward_scale != 1.0:
    r_t = options.reward_scale * r_t
  gamma_t = hyper.discount * discount_t[1:].astype(jnp.float32) * mask

  logp_a = distribution.log_prob(logits_t[:-1], a_tm1)
  logmu_a = distribution.log_prob(behaviour_logits_t[:-1], a_tm1)
  # A zero ratio on dummy transitions zeroes their TD error and advantage, and
  # (with gamma_t = 0 there) stops V-trace from carrying them backwards.
  # The log-ratio is capped before exp: a continuous policy's can overflow,
  # and V-trace clips rho far below e^20 anyway.
  log_rho = jnp.minimum(jax.lax.stop_gradient(logp_a - logmu_a), 20.0)
  rho_tm1 = jnp.where(mask > 0, jnp.exp(log_rho), 0.0)

  # Targets and advantages are held fixed with respect to the agent's
  # parameters by stopping the values (and rho) that enter them, not the
  # targets themselves: a meta-learned discount or lambda must still get its
  # gradient through them (Xu et al. 2018, arXiv 1805.09801).
  v_fixed_tm1 = jax.lax.stop_gradient(v_tm1)
  vtrace = rlax.vtrace_td_error_and_advantage(
      v_fixed_tm1, jax.lax.stop_gradient(v_t), r_t, gamma_t,
      rho_tm1, lambda_=hyper.vtrace_lambda,
      clip_rho_threshold=options.clip_rho_threshold,
      clip_pg_rho_threshold=options.clip_pg_rho_threshold,
      stop_target_gradients=False)
  # rlax's `errors` is (v_s - V(x_s)) with V held fixed; the value loss needs
  # the gradient through V(x_s), so rebuild the target and regress on it.
  targets_tm1 = vtrace.errors + v_fixed_tm1
  value_loss = 0.5 * jnp.mean(mask * jnp.square(targets_tm1 - v_tm1))
  policy_loss = -jnp.mean(mask * logp_a * vtrace.pg_advantage)
  entropy = jnp.mean(mask * distribution.entropy(logits_t[:-1]))
  loss = policy_loss
  # A term whose coefficient is a constant 0 is left out rather than multiplied
  # by 0: differentiated, 0 * x still runs x's backward pass (the meta-
  # objective's value term, through every differentiated inner step).
  if not _is_zero(hyper.baseline_cost):
    loss = loss + hyper.baseline_cost * value_loss
  if not _is_zero(hyper.entropy_cost):
    loss = loss - hyper.entropy_cost * entropy
  return LossOutput(loss=loss, policy_loss=policy_loss, value_loss=value_loss,
                    entropy=entropy, mean_rho=jnp.sum(rho_tm1) / jnp.maximum(jnp.sum(mask), 1.0))
