"""The BMG / MG meta-update against independent references.

The checks follow Flennerhag et al. 2021 (arXiv 2109.04504): central finite
differences in float64, the L = 1 / squared-distance identity with the plain
meta-gradient, no gradient into the bootstrapped target, the KL's direction,
and the pmapped update on 8 devices against 1.
"""

import jax
from jax.experimental import enable_x64
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from podmeta import builder
from podmeta import learning
from podmeta import losses
from podmeta import networks as networks_lib
from podmeta import replay as replay_lib
from podmeta.config import Config
from podmeta.meta import params as meta_params
from podmeta.meta import update as meta_update

from tests import helpers

OBS, ACTIONS, T = 3, 2, 4
ALL_BOUNDS = {
    "entropy_cost": meta_params.Bounded(0.05, 0.0, 0.5),
    "discount": meta_params.Bounded(0.9, 0.5, 1.0),
    "vtrace_lambda": meta_params.Bounded(0.8, 0.0, 1.0),
    "baseline_cost": meta_params.Bounded(0.5, 0.0, transform="softplus"),
    "learning_rate_scale": meta_params.Bounded(1.0, 0.1, 3.0),
}


def _to64(tree):
  return jax.tree.map(
      lambda x: jnp.asarray(x, jnp.float64) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating)
      else jnp.asarray(x), tree)


class Problem:
  """A tiny agent, batch and meta-objective, everything in float64."""

  def __init__(self, options, bounds=ALL_BOUNDS, hidden_size=None, shared_torso=True,
               num_chunks=None, clip_rho=1.0, optimizer="rmsprop", max_grad_norm=1e6, seed=0):
    self.network = networks_lib.make_network("mlp", (5,), (OBS,), ACTIONS, shared_torso)
    self.optimizer = learning.make_optimizer(optimizer, 0.05, max_grad_norm, eps=1e-2)
    self.parameterisation = meta_params.Parameterisation(bounds, hidden_size=hidden_size,
                                                         context_size=3)
    spec = envs.EnvSpec((OBS,), np.float32, ACTIONS)
    n = num_chunks or options.num_chunks
    batch = helpers.random_batch(spec, 2 * n, T, seed=seed)
    self.chunks = _to64(meta_update.split_chunks(batch, n))
    key = jax.random.PRNGKey(seed)
    self.params = _to64(self.network.init(key, np.zeros((1, OBS), np.float32)))
    self.opt_state = _to64(self.optimizer.init(self.params))
    # Move the optimiser state off its initial zeros, as in a running learner.
    warm = learning.agent_step(self.network, self.optimizer, self.params, self.opt_state,
                               jax.tree.map(lambda x: x[0], self.chunks),
                               losses.LossHyperparams(), axis_name=None)
    self.opt_state = warm.opt_state
    self.meta_params = _to64(self.parameterisation.init(jax.random.fold_in(key, 1)))
    self.context = jnp.array([0.3, -0.2, 0.5], jnp.float64)
    fixed = losses.LossHyperparams(discount=0.95, vtrace_lambda=0.9, entropy_cost=0.01,
                                   baseline_cost=0.5)
    self.outer_hyper = fixed._replace(entropy_cost=0.01, baseline_cost=0.0)
    self.objective = meta_update.make_meta_objective(
        self.network, self.optimizer, self.parameterisation, fixed, self.outer_hyper, options,
        clip_rho_threshold=clip_rho, clip_pg_rho_threshold=clip_rho, axis_name=None)

  def __call__(self, meta_params):
    return self.objective(meta_params, self.params, self.opt_state, self.chunks, self.context)


def _directional_fd(f, w, direction, eps=1e-5):
  plus = jax.tree.map(lambda a, d: a + eps * d, w, direction)
  minus = jax.tree.map(lambda a, d: a - eps * d, w, direction)
  return (f(plus) - f(minus)) / (2 * eps)


def _random_direction(tree, seed):
  leaves, treedef = jax.tree.flatten(tree)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  return jax.tree.unflatten(treedef, [jax.random.normal(k, jnp.shape(x), jnp.float64)
                                      for k, x in zip(keys, leaves)])


def _dot(a, b):
  return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.parametrize("case", ["all_hyperparams_k1", "meta_network_k1", "entropy_k3"])
def test_bmg_meta_gradient_matches_central_finite_differences(case):
  """d mu / d w by autodiff equals central differences of mu with the target held fixed.

  With K = 1 every quantity the loss treats as constant (values, importance
  weights) is computed at x^(0), which does not depend on w, so autodiff must
  agree with finite differences for all five hyperparameters. With K = 3 the
  later steps' V-trace targets are held fixed by design (semi-gradient), so
  the exact check uses the entropy cost alone, separate torsos (it cannot move
  the values) and rho clipped everywhere (the weights are constant).
  """
  eps, rtol = 1e-5, 1e-6
  with enable_x64():
    if case == "entropy_k3":
      # mu is small here (about 3e-7), so a wider step keeps rounding out of the differences.
      eps, rtol = 1e-4, 1e-5
      options = meta_update.MetaOptions(method="bmg", inner_steps=3, target_steps=2,
                                        target_data="fresh")
      problem = Problem(options, bounds={"entropy_cost": ALL_BOUNDS["entropy_cost"]},
                        shared_torso=False, clip_rho=1e-3)
    else:
      options = meta_update.MetaOptions(method="bmg", inner_steps=1, target_steps=3,
                                        target_data="fresh", matching="kl_value")
      problem = Problem(options, hidden_size=4 if case == "meta_network_k1" else None)
    (mu, aux), grads = jax.value_and_grad(problem, has_aux=True)(problem.meta_params)
    target = aux.target_params

    def mu_with_fixed_target(w):
      x_k = problem(w)[1].inner_params
      return meta_update.matching_loss(problem.network, target, x_k,
                                       jax.tree.map(lambda x: x[-1], problem.chunks).observation,
                                       options.matching, options.value_matching_cost)

    np.testing.assert_allclose(mu_with_fixed_target(problem.meta_params), mu, rtol=1e-12)
    assert float(mu) > 1e-8
    for seed in range(3):
      direction = _random_direction(problem.meta_params, seed)
      fd = _directional_fd(mu_with_fixed_target, problem.meta_params, direction, eps)
      ad = _dot(grads, direction)
      assert abs(float(ad)) > 1e-9
      np.testing.assert_allclose(ad, fd, rtol=rtol, atol=1e-14)
    # Every meta-learned hyperparameter receives a gradient.
    if case == "all_hyperparams_k1":
      for name in ALL_BOUNDS:
        assert abs(float(grads[name])) > 1e-10, name


def test_l2_bmg_with_one_target_step_is_alpha_times_mg():
  """L = 1, mu = 0.5 ||x~ - x^(K)||^2, x~ = x^(K) - alpha grad l(x^(K)) => grad mu = alpha grad_w l."""
  alpha = 0.37
  with enable_x64():
    common = dict(inner_steps=2, target_steps=1, target_data="last_inner")
    bmg = Problem(meta_update.MetaOptions(method="bmg", matching="l2", target_update="sgd",
                                          target_learning_rate=alpha, **common))
    mg = Problem(meta_update.MetaOptions(method="mg", **common))
    g_bmg = jax.grad(lambda w: bmg(w)[0])(bmg.meta_params)
    g_mg = jax.grad(lambda w: mg(w)[0])(mg.meta_params)
    for name in ALL_BOUNDS:
      assert abs(float(g_mg[name])) > 1e-8, name
      np.testing.assert_allclose(g_bmg[name], alpha * g_mg[name], rtol=1e-9, atol=1e-15)


def test_no_gradient_reaches_the_target_and_kl_has_the_target_first():
  with enable_x64():
    options = meta_update.MetaOptions(method="bmg", inner_steps=2, target_steps=3)
    problem = Problem(options)
    (mu, aux), grads = jax.value_and_grad(problem, has_aux=True)(problem.meta_params)

    # The target is constant in w: its Jacobian is exactly zero ...
    jac = jax.jacobian(lambda w: problem(w)[1].target_params)(problem.meta_params)
    for leaf in jax.tree.leaves(jac):
      assert not np.any(np.asarray(leaf)), "gradient flows into the target"
    # ... so the meta-gradient is that of mu against a constant copy of it.
    target = jax.tree.map(np.asarray, aux.target_params)
    obs = jax.tree.map(lambda x: x[options.inner_steps - 1], problem.chunks).observation
    grads_const = jax.grad(lambda w: meta_update.matching_loss(
        problem.network, target, problem(w)[1].inner_params, obs))(problem.meta_params)
    for name in ALL_BOUNDS:
      np.testing.assert_allclose(grads[name], grads_const[name], rtol=1e-10, atol=1e-16)

    # The KL direction, against numpy: KL(pi_target || pi_K), not the reverse.
    def probs(p):
      logits = np.asarray(problem.network.apply(p, obs)[0], np.float64)
      e = np.exp(logits - logits.max(-1, keepdims=True))
      return e / e.sum(-1, keepdims=True)
    p_target, p_k = probs(aux.target_params), probs(aux.inner_params)
    forward = np.mean(np.sum(p_target * (np.log(p_target) - np.log(p_k)), -1))
    reverse = np.mean(np.sum(p_k * (np.log(p_k) - np.log(p_target)), -1))
    np.testing.assert_allclose(mu, forward, rtol=1e-10)
    assert abs(forward - reverse) > 1e-3 * abs(forward), (forward, reverse)


def _bmg_config(**meta):
  base = dict(method="bmg", inner_steps=2, target_steps=2, target_data="fresh",
              continue_from="target", context="reward", meta_hidden_size=8, learning_rate=0.01,
              hyperparams={"entropy_cost": {"init": 0.02, "low": 0.0, "high": 0.2},
                           "discount": {"init": 0.97, "low": 0.9, "high": 1.0},
                           "learning_rate_scale": {"init": 1.0, "low": 0.2, "high": 2.0}})
  base.update(meta)
  return Config.from_mapping({"batch_size": 32, "unroll_length": 6, "hidden_sizes": [16],
                              "optimizer": "adam", "meta": base})


@pytest.mark.parametrize("method", ["bmg", "mg"])
def test_meta_update_on_eight_devices_equals_one_device(method):
  assert jax.local_device_count() >= 8
  # Both split each device's 4 unrolls into 4 chunks: BMG K=2 + L=2, MG K=3 + 1.
  config = _bmg_config(**({} if method == "bmg" else {"continue_from": "inner", "inner_steps": 3}),
                       method=method)
  spec = envs.env_spec(config.env_id)
  batches = [helpers.random_batch(spec, 32, 6, seed=s) for s in range(3)]
  results = []
  for n in (1, 8):
    learner = builder.make_learner(config, spec, devices=jax.devices()[:n])
    for batch in batches:
      metrics = learner.step(jax.device_put_sharded(replay_lib.per_device(batch, n),
                                                    learner.devices))
    metrics = {k: np.asarray(v) for k, v in jax.device_get(metrics).items()}
    state = learner.save()
    results.append((state, metrics))
  (s1, m1), (s8, m8) = results
  for a, b in zip(jax.tree.leaves(s1), jax.tree.leaves(s8)):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
  for key in ["meta_loss", "meta_grad_norm", "meta/entropy_cost", "meta/discount", "loss"]:
    np.testing.assert_allclose(m1[key][0], m8[key][0], rtol=2e-4, atol=1e-7, err_msg=key)
  # The meta-parameters moved, and every device holds the same copy.
  initial = builder.make_learner(config, spec, devices=jax.devices()[:1]).save()
  moved = [np.abs(a - b).max() for a, b in zip(jax.tree.leaves(initial.meta.params),
                                               jax.tree.leaves(s1.meta.params))]
  assert max(moved) > 1e-4
  assert np.all(m8["meta/entropy_cost"] == m8["meta/entropy_cost"][0])


def test_meta_state_checkpoint_round_trip(tmp_path):
  config = _bmg_config()
  spec = envs.env_spec(config.env_id)
  learner = builder.make_learner(config, spec, devices=jax.devices()[:1])
  learner.step(jax.device_put_sharded(
      replay_lib.per_device(helpers.random_batch(spec, 32, 6, seed=0), 1), learner.devices))
  checkpointer = builder.make_checkpointer(config, str(tmp_path))
  checkpointer.save(1, learner.save(), {"env_steps": 1})
  fresh = builder.make_learner(config, spec, devices=jax.devices()[:1])
  state, _ = checkpointer.restore_latest(fresh.template)
  fresh.restore(state)
  for a, b in zip(jax.tree.leaves(learner.save()), jax.tree.leaves(fresh.save())):
    np.testing.assert_array_equal(a, b)
  # A fixed-hyperparameter learner refuses a meta checkpoint.
  fixed = builder.make_learner(config.replace(meta={}), spec, devices=jax.devices()[:1])
  with pytest.raises(ValueError, match="does not match"):
    checkpointer.restore_latest(fixed.template)
  checkpointer.close()


def test_bounded_transforms_round_trip_and_stay_in_range():
  for b in ALL_BOUNDS.values():
    np.testing.assert_allclose(b.constrain(jnp.float32(b.unconstrained_init())), b.init,
                               rtol=1e-5)
    for raw in (-1e3, -5.0, 0.0, 5.0, 1e3):
      v = float(b.constrain(jnp.float32(raw)))
      assert b.low <= v and (b.transform == "softplus" or v <= b.high)


@pytest.mark.parametrize("meta, field", [
    ({"method": "bmg", "hyperparams": {"entropy_costs": {"init": 0.1}}}, "meta.hyperparams"),
    ({"method": "bmg", "hyperparams": {"entropy_cost": {"init": 0.5, "high": 0.1}}},
     "meta.hyperparams.entropy_cost.init"),
    ({"method": "bmg", "hyperparams": {"discount": {"init": 0.99, "low": 0.5, "high": 1.5}}},
     "meta.hyperparams.discount"),
    ({"method": "bmg", "hyperparams": {"entropy_cost": {"init": 0.1}}, "inner_steps": 0},
     "meta.inner_steps"),
    ({"method": "bmg", "hyperparams": {"entropy_cost": {"init": 0.1}}, "target_steps": 0},
     "meta.target_steps"),
    ({"method": "bmg"}, "meta.hyperparams"),
    ({"method": "reptile"}, "meta.method"),
    ({"metod": "bmg"}, "meta.metod"),
])
def test_bad_meta_config_names_the_field(meta, field):
  with pytest.raises(ValueError, match=f"'{field}'"):
    Config.from_mapping({"meta": meta})
