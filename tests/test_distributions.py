"""Action distributions against independent references (scipy, closed forms, sampling)."""

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from podmeta import distributions


def _gaussian_params(rng, n, dim):
  mean = rng.normal(size=(n, dim))
  log_std = rng.uniform(-1.5, 1.0, size=(n, dim))
  return np.concatenate([mean, log_std], -1).astype(np.float32), mean, np.exp(log_std)


def test_gaussian_log_prob_and_entropy_match_scipy():
  rng = np.random.default_rng(0)
  dim = 3
  params, mean, std = _gaussian_params(rng, 5, dim)
  action = rng.normal(size=(5, dim)).astype(np.float32) * 2
  dist = distributions.gaussian(dim)
  expected_logp = [stats.multivariate_normal(mean[i], np.diag(std[i] ** 2)).logpdf(action[i])
                   for i in range(5)]
  expected_entropy = [stats.multivariate_normal(mean[i], np.diag(std[i] ** 2)).entropy()
                      for i in range(5)]
  np.testing.assert_allclose(dist.log_prob(params, action), expected_logp, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dist.entropy(params), expected_entropy, rtol=1e-5, atol=1e-5)


def test_gaussian_kl_matches_a_monte_carlo_estimate():
  rng = np.random.default_rng(1)
  dist = distributions.gaussian(2)
  p, _, _ = _gaussian_params(rng, 1, 2)
  q, _, _ = _gaussian_params(rng, 1, 2)
  samples = dist.sample(jax.random.PRNGKey(0), jnp.broadcast_to(p, (200_000, 4)))
  estimate = np.mean(dist.log_prob(p, samples) - dist.log_prob(q, samples))
  np.testing.assert_allclose(dist.kl(p, q)[0], estimate, rtol=0.02)
  np.testing.assert_allclose(dist.kl(p, p), 0.0, atol=1e-6)


def test_gaussian_samples_have_the_mean_and_std_and_the_mode_is_the_mean():
  dist = distributions.gaussian(2)
  params = jnp.asarray([0.5, -1.0, np.log(0.3), np.log(2.0)], jnp.float32)
  samples = np.asarray(dist.sample(jax.random.PRNGKey(3), jnp.broadcast_to(params, (100_000, 4))))
  np.testing.assert_allclose(samples.mean(0), [0.5, -1.0], atol=0.02)
  np.testing.assert_allclose(samples.std(0), [0.3, 2.0], rtol=0.02)
  np.testing.assert_array_equal(dist.mode(params), [0.5, -1.0])
  assert dist.action_shape == (2,) and dist.num_params == 4


def test_categorical_matches_its_softmax():
  rng = np.random.default_rng(2)
  logits = rng.normal(size=(4, 5)).astype(np.float32)
  other = rng.normal(size=(4, 5)).astype(np.float32)
  action = np.array([0, 4, 2, 1])
  p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  q = np.exp(other) / np.exp(other).sum(-1, keepdims=True)
  dist = distributions.categorical(5)
  np.testing.assert_allclose(dist.log_prob(logits, action), np.log(p[np.arange(4), action]),
                             rtol=1e-5)
  np.testing.assert_allclose(dist.entropy(logits), stats.entropy(p, axis=-1), rtol=1e-5)
  np.testing.assert_allclose(dist.kl(logits, other), stats.entropy(p, q, axis=-1), rtol=1e-4)
  np.testing.assert_array_equal(dist.mode(logits), p.argmax(-1))
