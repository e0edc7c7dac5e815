"""The V-trace loss against an independent numpy version of the IMPALA paper's equations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scipy import stats

from podmeta import distributions
from podmeta import losses

jax.config.update("jax_enable_x64", False)


def _log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _categorical_terms(logits, mu_logits, actions):
  """log pi(a_t|x_t), log mu(a_t|x_t) and the entropy of pi at each x_t."""
  logp, logmu = _log_softmax(logits), _log_softmax(mu_logits)
  idx = np.arange(len(actions))
  return logp[idx, actions], logmu[idx, actions], -np.sum(np.exp(logp) * logp, axis=-1)


def reference_loss(logits, values, actions, mu_logits, rewards, term, is_first, gamma, lam,
                   rho_bar, pg_rho_bar, entropy_cost, baseline_cost, terms=None):
  """Espeholt et al. 2018, section 4.1, written out with explicit sums and products.

  v_s = V(x_s) + sum_{t=s}^{s+n-1} (prod_{i<t} gamma_i c_i) rho_t delta_t, with
  delta_t = r_{t+1} + gamma_t V(x_{t+1}) - V(x_t). Episode boundaries: the
  transition out of a final observation (next obs is_first) is ignored, i.e.
  it has rho = 0 and cuts the sum; termination sets gamma_t = 0. `terms`
  (log pi(a_t), log mu(a_t), entropy of pi, each [T+1]) replace the
  categorical ones of `logits` and `mu_logits` for other distributions.
  """
  T = len(values) - 1
  logp_a, logmu_a, ent = terms if terms is not None else _categorical_terms(
      logits, mu_logits, actions)
  valid = np.array([0.0 if is_first[t + 1] else 1.0 for t in range(T)])
  rho = np.array([np.exp(logp_a[t] - logmu_a[t]) for t in range(T)]) * valid
  clipped = np.minimum(rho_bar, rho)
  c = lam * np.minimum(1.0, rho)
  g = np.array([gamma * (1.0 - term[t + 1]) * valid[t] for t in range(T)])
  delta = np.array([clipped[t] * (rewards[t + 1] + g[t] * values[t + 1] - values[t])
                    for t in range(T)])
  vs = np.zeros(T + 1)
  for s in range(T):
    total = 0.0
    for t in range(s, T):
      weight = 1.0
      for i in range(s, t):
        weight *= g[i] * c[i]
      total += weight * delta[t]
    vs[s] = values[s] + total
  vs[T] = values[T]
  # Policy-gradient advantage (eq. 4): rho_s (r_{s+1} + gamma v_{s+1} - V(x_s)),
  # with the paper's lambda-mixed bootstrap v_{s+1} as in rlax.
  pg = np.zeros(T)
  for s in range(T):
    if s + 1 < T:
      boot = lam * vs[s + 1] + (1 - lam) * values[s + 1]
    else:
      boot = values[T]
    pg[s] = min(pg_rho_bar, rho[s]) * (rewards[s + 1] + g[s] * boot - values[s])
  policy_loss = -np.mean(valid * logp_a[:T] * pg)
  value_loss = 0.5 * np.mean(valid * (vs[:T] - values[:T]) ** 2)
  entropy = np.mean(valid * ent[:T])
  return policy_loss + baseline_cost * value_loss - entropy_cost * entropy, vs


def _unroll(rng, T=9, A=3, episode_ends=()):
  logits = rng.normal(size=(T + 1, A)).astype(np.float32)
  mu_logits = (logits + 0.5 * rng.normal(size=(T + 1, A))).astype(np.float32)
  values = rng.normal(size=T + 1).astype(np.float32)
  actions = rng.integers(0, A, size=T + 1).astype(np.int32)
  rewards = rng.normal(size=T + 1).astype(np.float32)
  term = np.zeros(T + 1, np.float32)
  is_first = np.zeros(T + 1, bool)
  for t, kind in episode_ends:
    # x_t is a final observation; x_{t+1} starts the next episode.
    if kind == "terminated":
      term[t] = 1.0
    is_first[t + 1] = True
    rewards[t + 1] = 0.0
  return logits, values, actions, mu_logits, rewards, term, is_first


@pytest.mark.parametrize("episode_ends", [(), ((4, "terminated"),), ((3, "truncated"),),
                                          ((2, "terminated"), (6, "truncated"))])
@pytest.mark.parametrize("lam", [1.0, 0.9])
def test_vtrace_loss_matches_paper_equations(episode_ends, lam):
  rng = np.random.default_rng(len(episode_ends) + int(lam * 10))
  logits, values, actions, mu_logits, rewards, term, is_first = _unroll(rng, episode_ends=episode_ends)
  hyper = losses.LossHyperparams(discount=0.95, vtrace_lambda=lam, entropy_cost=0.03,
                                 baseline_cost=0.7)
  out = losses.impala_loss(jnp.asarray(logits), jnp.asarray(values), jnp.asarray(actions),
                           jnp.asarray(mu_logits), jnp.asarray(rewards), 1.0 - jnp.asarray(term),
                           jnp.asarray(is_first), hyper,
                           losses.LossOptions(clip_rho_threshold=1.0, clip_pg_rho_threshold=1.2))
  expected, _ = reference_loss(logits.astype(np.float64), values.astype(np.float64), actions,
                               mu_logits.astype(np.float64), rewards.astype(np.float64), term,
                               is_first, 0.95, lam, 1.0, 1.2, 0.03, 0.7)
  np.testing.assert_allclose(float(out.loss), expected, rtol=1e-4, atol=1e-5)


def test_vtrace_loss_with_a_gaussian_policy_matches_paper_equations():
  """Continuous actions: the same equations with scipy's Gaussian log-densities."""
  rng = np.random.default_rng(7)
  T, D = 9, 2
  _, values, _, _, rewards, term, is_first = _unroll(rng, T=T, episode_ends=((4, "truncated"),))
  mean = rng.normal(size=(T + 1, D))
  log_std = rng.uniform(-1.0, 0.5, size=(T + 1, D))
  mu_mean = mean + 0.3 * rng.normal(size=(T + 1, D))
  mu_log_std = log_std + 0.2 * rng.normal(size=(T + 1, D))
  actions = mu_mean + np.exp(mu_log_std) * rng.normal(size=(T + 1, D))

  def logpdf(m, ls):
    return np.array([stats.multivariate_normal(m[t], np.diag(np.exp(2 * ls[t]))).logpdf(actions[t])
                     for t in range(T + 1)])

  entropy = np.array([stats.multivariate_normal(mean[t], np.diag(np.exp(2 * log_std[t]))).entropy()
                      for t in range(T + 1)])
  hyper = losses.LossHyperparams(discount=0.95, vtrace_lambda=0.9, entropy_cost=0.03,
                                 baseline_cost=0.7)
  f32 = lambda x: jnp.asarray(x, jnp.float32)  # pylint: disable=unnecessary-lambda-assignment
  out = losses.impala_loss(f32(np.concatenate([mean, log_std], -1)), f32(values), f32(actions),
                           f32(np.concatenate([mu_mean, mu_log_std], -1)), f32(rewards),
                           1.0 - f32(term), jnp.asarray(is_first), hyper,
                           distribution=distributions.gaussian(D))
  expected, _ = reference_loss(None, values.astype(np.float64), actions, None,
                               rewards.astype(np.float64), term, is_first, 0.95, 0.9, 1.0, 1.0,
                               0.03, 0.7, terms=(logpdf(mean, log_std), logpdf(mu_mean, mu_log_std),
                                                 entropy))
  np.testing.assert_allclose(float(out.loss), expected, rtol=1e-4, atol=1e-5)


def test_reward_scale_scales_the_rewards():
  rng = np.random.default_rng(3)
  logits, values, actions, mu_logits, rewards, term, is_first = _unroll(rng)
  hyper = losses.LossHyperparams()

  def loss(r, **kw):
    return losses.impala_loss(jnp.asarray(logits), jnp.asarray(values), jnp.asarray(actions),
                              jnp.asarray(mu_logits), jnp.asarray(r), 1.0 - jnp.asarray(term),
                              jnp.asarray(is_first), hyper, losses.LossOptions(**kw)).loss

  np.testing.assert_allclose(float(loss(rewards, reward_scale=0.1)), float(loss(0.1 * rewards)),
                             rtol=1e-6)


def test_truncation_bootstraps_and_termination_does_not():
  """The value target of the last step before an episode end, on-policy."""
  T = 4
  logits = np.zeros((T + 1, 2), np.float32)
  values = np.array([1.0, 2.0, 3.0, 10.0, 5.0], np.float32)  # V(x_final) = 10
  actions = np.zeros(T + 1, np.int32)
  rewards = np.array([0.0, 0.0, 0.0, 1.0, 0.0], np.float32)
  is_first = np.array([0, 0, 0, 0, 1], bool)  # x_3 final, x_4 a reset
  hyper = losses.LossHyperparams(discount=0.9, vtrace_lambda=1.0, entropy_cost=0.0,
                                 baseline_cost=1.0)

  def value_grad(discount_t):
    def f(v):
      return losses.impala_loss(jnp.asarray(logits), v, jnp.asarray(actions), jnp.asarray(logits),
                                jnp.asarray(rewards), jnp.asarray(discount_t),
                                jnp.asarray(is_first), hyper).value_loss
    return jax.grad(f)(jnp.asarray(values))

  # value_loss = 0.5 * mean(valid * (v_s - V)^2): dL/dV(x_2) = -(v_2 - V(x_2)) / T.
  truncated = value_grad(np.ones(T + 1, np.float32))
  terminated = value_grad(np.array([1, 1, 1, 0, 1], np.float32))
  np.testing.assert_allclose(-float(truncated[2]) * T, (1.0 + 0.9 * 10.0) - 3.0, rtol=1e-6)
  np.testing.assert_allclose(-float(terminated[2]) * T, 1.0 - 3.0, rtol=1e-6)
  # The dummy transition out of x_3 contributes nothing: V(x_3) gets no gradient.
  assert float(truncated[3]) == 0.0 and float(terminated[3]) == 0.0


def test_max_abs_reward_clips_exactly_like_clipped_rewards():
  rng = np.random.default_rng(7)
  logits, values, actions, mu_logits, rewards, term, is_first = _unroll(
      rng, episode_ends=((4, "terminated"),))
  rewards = 3.0 * rewards  # most beyond [-1, 1]
  hyper = losses.LossHyperparams(discount=0.95, vtrace_lambda=0.9, entropy_cost=0.03,
                                 baseline_cost=0.7)

  def loss(r, **kwargs):
    def f(v, lg):
      return losses.impala_loss(lg, v, jnp.asarray(actions), jnp.asarray(mu_logits),
                                jnp.asarray(r), 1.0 - jnp.asarray(term), jnp.asarray(is_first),
                                hyper, losses.LossOptions(**kwargs)).loss
    value, grads = jax.value_and_grad(f, argnums=(0, 1))(jnp.asarray(values), jnp.asarray(logits))
    return [np.asarray(value)] + [np.asarray(g) for g in grads]

  clipped = loss(rewards, max_abs_reward=1.0)
  for a, b in zip(clipped, loss(np.clip(rewards, -1.0, 1.0))):
    np.testing.assert_array_equal(a, b)
  assert not np.allclose(clipped[0], loss(rewards)[0])
  for a, b in zip(loss(rewards, max_abs_reward=0.0), loss(rewards)):
    np.testing.assert_array_equal(a, b)


def test_a_constant_zero_coefficient_drops_its_term_with_the_same_loss_and_gradients():
  """The meta-objective's value term (baseline_cost 0.0) is left out of the graph,
  not multiplied by 0: the loss and gradients equal a traced 0's, and the value
  estimates get no gradient at all."""
  rng = np.random.default_rng(3)
  logits, values, actions, mu_logits, rewards, term, is_first = _unroll(
      rng, episode_ends=((4, "terminated"),))

  def loss_and_grads(hyper):
    def f(v, lg):
      return losses.impala_loss(lg, v, jnp.asarray(actions), jnp.asarray(mu_logits),
                                jnp.asarray(rewards), 1.0 - jnp.asarray(term),
                                jnp.asarray(is_first), hyper).loss
    value, grads = jax.value_and_grad(f, argnums=(0, 1))(jnp.asarray(values), jnp.asarray(logits))
    return (value,) + grads

  constant = losses.LossHyperparams(discount=0.95, vtrace_lambda=0.9, entropy_cost=0.0,
                                    baseline_cost=0.0)
  traced = [np.asarray(x) for x in jax.jit(loss_and_grads)(
      constant._replace(entropy_cost=jnp.float32(0.0), baseline_cost=jnp.float32(0.0)))]
  dropped = [np.asarray(x) for x in loss_and_grads(constant)]
  for a, b in zip(dropped, traced):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  np.testing.assert_array_equal(dropped[1], 0.0)  # d loss / d V
  assert np.abs(dropped[2]).max() > 0  # the policy gradient is still there
