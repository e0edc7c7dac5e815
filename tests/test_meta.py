"""The BMG / MG meta-update against independent references.

The checks follow Flennerhag et al. 2021 (arXiv 2109.04504): central finite
differences in float64, the L = 1 / squared-distance identity with the plain
meta-gradient, no gradient into the bootstrapped target, the KL's direction;
and, for the online algorithm, the agent is never rewound (its trajectory is
the fixed-hyperparameter one fed the same values), the ring buffer picks the
right snapshot and batches, pmap on 8 devices equals 1, and a checkpoint
mid-run continues exactly.
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
from podmeta.meta import context as context_lib
from podmeta.meta import params as meta_params
from podmeta.meta import update as meta_update
from podmeta.meta.config import MetaConfig
from podmeta.meta.config import MetaParamConfig

from tests import helpers

OBS, ACTIONS, T = 3, 2, 4
ALL_BOUNDS = {
    "entropy_cost": MetaParamConfig(0.05, 0.0, 0.5),
    "discount": MetaParamConfig(0.9, 0.5, 1.0),
    "vtrace_lambda": MetaParamConfig(0.8, 0.0, 1.0),
    "baseline_cost": MetaParamConfig(0.5, 0.0, transform="softplus"),
    "learning_rate_scale": MetaParamConfig(1.0, 0.1, 3.0),
}
SPEC = envs.EnvSpec((OBS,), np.float32, ACTIONS)


def _meta(**fields) -> MetaConfig:
  return MetaConfig.from_mapping(fields)


def _to64(tree):
  return jax.tree.map(
      lambda x: jnp.asarray(x, jnp.float64) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating)
      else jnp.asarray(x), tree)


class Problem:
  """A tiny agent, K inner batches and the meta-objective's pieces, all in float64."""

  def __init__(self, meta: MetaConfig, bounds=ALL_BOUNDS, hidden_sizes=(), shared_torso=True,
               k=1, clip_rho=1.0, vtrace_lambda=0.9, optimizer="rmsprop", seed=0,
               continuous=False):
    self.network = networks_lib.make_network("mlp", (5,), (OBS,), ACTIONS, shared_torso,
                                             continuous=continuous)
    self.optimizer = learning.make_optimizer(optimizer, 0.05, 0.0, eps=1e-2)
    self.parameterisation = meta_params.Parameterisation(bounds, hidden_sizes=hidden_sizes,
                                                         context_size=3)
    batch = helpers.random_batch(SPEC._replace(continuous=continuous), 4 * (k + 1), T, seed=seed)
    chunks = _to64(meta_update.split_chunks(batch, k + 1))
    self.inner_batches = jax.tree.map(lambda x: x[:k], chunks)
    self.newest = jax.tree.map(lambda x: x[k], chunks)
    key = jax.random.PRNGKey(seed)
    self.params = _to64(self.network.init(key, np.zeros((1, OBS), np.float32)))
    self.opt_state = _to64(self.optimizer.init(self.params))
    # Move the optimiser state off its initial zeros, as in a running learner.
    warm = learning.agent_step(self.network, self.optimizer, self.params, self.opt_state,
                               self.newest, losses.LossHyperparams(), axis_name=None)
    self.opt_state = warm.opt_state
    self.meta_params = _to64(self.parameterisation.init(jax.random.fold_in(key, 1)))
    self.contexts = jnp.asarray(np.random.default_rng(seed).uniform(-1, 1, (k, 3)), jnp.float64)
    fixed = losses.LossHyperparams(discount=0.95, vtrace_lambda=vtrace_lambda, entropy_cost=0.01,
                                   baseline_cost=0.5)
    self.objective = meta_update.make_meta_objective(
        self.network, self.optimizer, self.parameterisation, fixed,
        fixed._replace(entropy_cost=0.01, baseline_cost=0.0), meta,
        losses.LossOptions(clip_rho_threshold=clip_rho, clip_pg_rho_threshold=clip_rho),
        axis_name=None)

  def inner(self, w):
    return self.objective.inner(w, self.params, self.opt_state, self.inner_batches,
                                self.contexts).params


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


@pytest.mark.parametrize("case", ["all_hyperparams_k1", "meta_network_k1", "entropy_k3",
                                  "gaussian_k1"])
def test_online_bmg_meta_gradient_matches_central_finite_differences(case):
  """d mu(x~, x^(K)(w)) / d w by autodiff equals central differences, x~ held fixed.

  x^(K)(w) recomputes K updates from a snapshot with the current w, each with
  the context of its own step; x~ is the agent's later parameters plus one
  outer step. With K = 1 every quantity the loss treats as constant (values,
  importance weights) is computed at the snapshot, which does not depend on
  w, so autodiff must agree with finite differences for all five
  hyperparameters. With K = 3 the later steps' V-trace targets are held fixed
  by design (semi-gradient), so the exact check uses the entropy cost alone,
  separate torsos (it cannot move the values), rho clipped everywhere and
  lambda = 0 (the traces lambda * min(1, rho) would carry the held-fixed
  importance weights). "gaussian_k1" is the first case with a Gaussian policy
  (continuous actions): its log-densities, entropy and KL.
  """
  eps, rtol = 1e-5, 1e-6
  with enable_x64():
    meta = _meta(method="bmg", inner_steps=1, target_steps=3, matching="kl_value",
                      hyperparams={"entropy_cost": {"init": 0.05}})
    if case == "entropy_k3":
      eps, rtol = 2e-5, 1e-5
      problem = Problem(meta, bounds={"entropy_cost": ALL_BOUNDS["entropy_cost"]},
                        shared_torso=False, clip_rho=1e-3, vtrace_lambda=0.0, k=3)
    else:
      problem = Problem(meta, hidden_sizes=(4, 4) if case == "meta_network_k1" else (),
                        continuous=case == "gaussian_k1")
    # The target: the snapshot moved by a few real updates, then the outer step.
    later = problem.params
    for i in range(2):
      later = learning.agent_step(problem.network, problem.optimizer, later, problem.opt_state,
                                  jax.tree.map(lambda x, i=i: x[i % x.shape[0]],
                                               problem.inner_batches),
                                  losses.LossHyperparams(), axis_name=None).params
    target = jax.tree.map(np.asarray, problem.objective.target(later, problem.opt_state,
                                                               problem.newest))

    def mu(w):
      return problem.objective.match(target, problem.inner(w), problem.newest)

    value, grads = jax.value_and_grad(mu)(problem.meta_params)
    assert float(value) > 1e-8
    for seed in range(3):
      direction = _random_direction(problem.meta_params, seed)
      fd = _directional_fd(mu, problem.meta_params, direction, eps)
      ad = _dot(grads, direction)
      assert abs(float(ad)) > 1e-9
      np.testing.assert_allclose(ad, fd, rtol=rtol, atol=1e-14)
    if case in ("all_hyperparams_k1", "gaussian_k1"):
      for name in ALL_BOUNDS:
        assert abs(float(grads[name])) > 1e-10, name


def test_l2_bmg_with_one_target_step_is_alpha_times_mg():
  """L = 1, mu = 0.5 ||x~ - x^(K)||^2, x~ = x^(K) - alpha grad l(x^(K)) => grad mu = alpha grad_w l."""
  alpha = 0.37
  with enable_x64():
    meta = _meta(method="bmg", inner_steps=2, target_steps=1, matching="l2",
                      target_update="sgd", target_learning_rate=alpha,
                      hyperparams={"entropy_cost": {"init": 0.05}})
    problem = Problem(meta, k=2)
    x_k = problem.inner(problem.meta_params)
    target = jax.tree.map(np.asarray, problem.objective.target(x_k, None, problem.newest))
    g_bmg = jax.grad(lambda w: problem.objective.match(target, problem.inner(w), None))(
        problem.meta_params)
    g_mg = jax.grad(lambda w: problem.objective.outer_loss(problem.inner(w), problem.newest))(
        problem.meta_params)
    for name in ALL_BOUNDS:
      assert abs(float(g_mg[name])) > 1e-8, name
      np.testing.assert_allclose(g_bmg[name], alpha * g_mg[name], rtol=1e-9, atol=1e-15)


def test_the_target_is_constant_in_w_and_the_kl_has_the_target_first():
  with enable_x64():
    problem = Problem(_meta(method="bmg", inner_steps=1, target_steps=2,
                                 hyperparams={"entropy_cost": {"init": 0.05}}))
    # The target is built from parameters that are functions of w; none of
    # that dependence may reach the meta-gradient.
    jac = jax.jacobian(lambda w: problem.objective.target(
        problem.inner(w), problem.opt_state, problem.newest))(problem.meta_params)
    for leaf in jax.tree.leaves(jac):
      assert not np.any(np.asarray(leaf)), "gradient flows into the target"

    x_k = problem.inner(problem.meta_params)
    target = problem.objective.target(x_k, problem.opt_state, problem.newest)
    obs = problem.newest.observation

    def probs(p):
      logits = np.asarray(problem.network.apply(p, obs)[0], np.float64)
      e = np.exp(logits - logits.max(-1, keepdims=True))
      return e / e.sum(-1, keepdims=True)
    p_target, p_k = probs(target), probs(x_k)
    forward = np.mean(np.sum(p_target * (np.log(p_target) - np.log(p_k)), -1))
    reverse = np.mean(np.sum(p_k * (np.log(p_k) - np.log(p_target)), -1))
    mu = problem.objective.match(target, x_k, problem.newest)
    np.testing.assert_allclose(mu, forward, rtol=1e-10)
    assert abs(forward - reverse) > 1e-3 * abs(forward), (forward, reverse)
    # The ablation puts pi_K first (mode-seeking).
    mu_reverse = meta_update.matching_loss(problem.network, target, x_k, problem.newest,
                                           "kl_reverse")
    np.testing.assert_allclose(mu_reverse, reverse, rtol=1e-10)


# -- the online update in the learner -------------------------------------------

def _config(**meta):
  base = dict(method="bmg", inner_steps=2, target_steps=2, context="reward",
              meta_hidden_sizes=(8, 8), meta_pretrain_steps=50, learning_rate=0.01,
              hyperparams={"entropy_cost": {"init": 0.02, "low": 0.0, "high": 0.2},
                           "discount": {"init": 0.97, "low": 0.9, "high": 1.0},
                           "learning_rate_scale": {"init": 1.0, "low": 0.2, "high": 2.0}})
  base.update(meta)
  return Config.from_mapping({"batch_size": 32, "unroll_length": 6, "hidden_sizes": [16],
                              "optimizer": "adam", "meta": base})


def _batches(n, batch_size=32, seed0=0):
  return [helpers.random_batch(SPEC, batch_size, 6, seed=seed0 + s) for s in range(n)]


def _sharded(learner, batch):
  n = learner.num_devices
  return jax.device_put_sharded(replay_lib.per_device(batch, n), learner.devices)


def _run(config, batches, devices=1, learner=None):
  """Steps a learner over the batches; returns it and each step's metrics (host)."""
  learner = learner or builder.make_learner(config, SPEC, devices=jax.devices()[:devices])
  metrics = []
  for batch in batches:
    m = jax.device_get(learner.step(_sharded(learner, batch)))
    metrics.append({k: np.asarray(v)[0] for k, v in m.items()})
  return learner, metrics


def _recorded(config, batches):
  """One-device learner stepped over the batches: the state before each step and
  after the last (len(batches) + 1 states), and each step's metrics."""
  learner = builder.make_learner(config, SPEC, devices=jax.devices()[:1])
  states, metrics = [learner.save()], []
  for batch in batches:
    metrics.append(_run(config, [batch], learner=learner)[1][0])
    states.append(learner.save())
  return states, metrics


def test_the_agent_is_never_rewound_its_trajectory_is_the_fixed_one():
  """Under online BMG the agent's parameters follow the ordinary update fed the
  meta-learned values of each step, exactly; only the meta-parameters differ."""
  config = _config(inner_steps=2, target_steps=3)
  batches = _batches(7)
  learner = builder.make_learner(config, SPEC, devices=jax.devices()[:1])
  network, optimizer = builder.make_network(config, SPEC), builder.make_optimizer(config)
  params, opt_state = learner.save().params, learner.save().opt_state
  fixed = builder.loss_hyperparams(config)
  step = jax.jit(lambda p, o, b, h, s: learning.agent_step(network, optimizer, p, o, b, h, s,
                                                           axis_name=None))
  for i, batch in enumerate(batches):
    m = _run(config, [batch], learner=learner)[1][0]
    hyper = fixed._replace(entropy_cost=m["meta/entropy_cost"], discount=m["meta/discount"])
    out = step(params, opt_state, batch, hyper, m["meta/learning_rate_scale"])
    params, opt_state = out.params, out.opt_state
    for a, b in zip(jax.tree.leaves(learner.save().params), jax.tree.leaves(params)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=f"step {i}")
    # The meta-update waits for the ring (K + L - 1 = 4 steps), then runs.
    assert m["meta_active"] == (1.0 if i >= 3 else 0.0), i


def test_the_ring_recomputes_from_the_right_snapshot_and_batches():
  """The update's meta-loss and meta-gradient equal a reference assembled by hand
  from the recorded agent trajectory: start K + L - 1 steps back, K updates with
  the current w, target = newest parameters plus one outer step."""
  k, l = 2, 3
  config = _config(inner_steps=k, target_steps=l, context="none", target_update="sgd",
                   target_learning_rate=0.3,
                   hyperparams={"entropy_cost": {"init": 0.05, "low": 0.0, "high": 0.5}})
  batches = _batches(6)
  states, metrics = _recorded(config, batches)
  t = len(batches) - 1  # the last step
  s = t - (k + l - 1) + 1
  network, optimizer = builder.make_network(config, SPEC), builder.make_optimizer(config)
  bounds = config.meta.hyperparams["entropy_cost"]
  fixed = builder.loss_hyperparams(config)
  outer = builder.outer_hyperparams(config)
  w_t = states[t].meta.params["entropy_cost"]

  def x_k(w):
    ec = bounds.low + (bounds.high - bounds.low) * jax.nn.sigmoid(w)
    p, o = states[s].params, states[s].opt_state
    for j in range(s, s + k):
      out = learning.agent_step(network, optimizer, p, o, batches[j],
                                fixed._replace(entropy_cost=ec), axis_name=None)
      p, o = out.params, out.opt_state
    return p

  newest = states[t + 1].params
  g_outer = jax.grad(lambda p: learning.batch_loss(network, p, batches[t], outer)[0])(
      newest)
  target = jax.tree.map(lambda p, g: np.asarray(p - 0.3 * g), newest, g_outer)
  mu, grad = jax.value_and_grad(lambda w: meta_update.matching_loss(
      network, target, x_k(w), batches[t]))(w_t)
  np.testing.assert_allclose(metrics[t]["meta_loss"], mu, rtol=1e-4)
  np.testing.assert_allclose(metrics[t]["meta_grad_norm"], abs(grad), rtol=1e-3)
  # Adam's step goes against the gradient.
  moved = states[t + 1].meta.params["entropy_cost"] - w_t
  assert np.sign(moved) == -np.sign(grad) and moved != 0


def test_mg_online_takes_the_outer_loss_on_the_newest_batch():
  k = 2
  config = _config(method="mg", inner_steps=k, context="none", outer_entropy_cost=0.1,
                   hyperparams={"entropy_cost": {"init": 0.05, "low": 0.0, "high": 0.5}})
  batches = _batches(4)
  states, metrics = _recorded(config, batches)
  t = len(batches) - 1
  network, optimizer = builder.make_network(config, SPEC), builder.make_optimizer(config)
  fixed = builder.loss_hyperparams(config)
  outer = builder.outer_hyperparams(config)
  w_t = states[t].meta.params["entropy_cost"]

  def outer_loss(w):
    p, o = states[t - k].params, states[t - k].opt_state
    for j in range(t - k, t):
      out = learning.agent_step(network, optimizer, p, o, batches[j],
                                fixed._replace(entropy_cost=0.5 * jax.nn.sigmoid(w)),
                                axis_name=None)
      p, o = out.params, out.opt_state
    return learning.batch_loss(network, p, batches[t], outer)[0]

  loss, grad = jax.value_and_grad(outer_loss)(w_t)
  assert [m["meta_active"] for m in metrics] == [0.0, 0.0, 1.0, 1.0]
  np.testing.assert_allclose(metrics[t]["meta_loss"], loss, rtol=1e-4)
  np.testing.assert_allclose(metrics[t]["meta_grad_norm"], abs(grad), rtol=1e-3)


@pytest.mark.parametrize("meta", [dict(method="bmg"), dict(method="mg", inner_steps=3),
                                  dict(method="bmg", target_data="last_inner")])
def test_meta_update_on_eight_devices_equals_one_device(meta):
  assert jax.local_device_count() >= 8
  config = _config(**meta)
  batches = _batches(5)
  results = []
  for n in (1, 8):
    learner, metrics = _run(config, batches, devices=n)
    results.append((learner.save(), metrics[-1]))
  (s1, m1), (s8, m8) = results
  for a, b in zip(jax.tree.leaves(s1), jax.tree.leaves(s8)):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
  for key in ["meta_loss", "meta_grad_norm", "meta/entropy_cost", "meta/discount", "loss"]:
    np.testing.assert_allclose(m1[key], m8[key], rtol=2e-4, atol=1e-7, err_msg=key)
  assert m1["meta_active"] == 1.0
  # The meta-parameters moved.
  initial = builder.make_learner(config, SPEC, devices=jax.devices()[:1]).save()
  moved = [np.abs(a - b).max() for a, b in zip(jax.tree.leaves(initial.meta.params),
                                               jax.tree.leaves(s1.meta.params))]
  assert max(moved) > 1e-4


def test_checkpoint_mid_run_then_continue_equals_the_uninterrupted_run(tmp_path):
  config = _config(inner_steps=2, target_steps=3)
  batches = _batches(8)
  whole, _ = _run(config, batches)
  first, _ = _run(config, batches[:5])
  checkpointer = builder.make_checkpointer(config, str(tmp_path))
  checkpointer.save(5, first.save(), {"env_steps": 5})
  resumed = builder.make_learner(config, SPEC, devices=jax.devices()[:1])
  state, _ = checkpointer.restore_latest(resumed.template)
  resumed.restore(state)
  ring = resumed.save().meta.ring
  assert int(ring.count) == 5 and ring.context.shape == (4, 10)
  resumed, _ = _run(config, batches[5:], learner=resumed)
  for a, b in zip(jax.tree.leaves(whole.save()), jax.tree.leaves(resumed.save())):
    np.testing.assert_array_equal(a, b)
  # A fixed-hyperparameter learner refuses a meta checkpoint.
  fixed = builder.make_learner(config.replace(meta={}), SPEC, devices=jax.devices()[:1])
  with pytest.raises(ValueError, match="does not match"):
    checkpointer.restore_latest(fixed.template)
  checkpointer.close()


def test_reward_context_is_lifetime_normalised_and_squashed():
  rewards = np.array([0.5, -1.0, 2.0, 0.0, 1.5, 3.0])
  ctx = context_lib.init(4)
  for r in rewards:
    ctx = context_lib.push(ctx, r)
  z = (rewards[::-1][:4] - rewards.mean()) / rewards.std()
  np.testing.assert_allclose(context_lib.features(ctx), np.tanh(z), rtol=1e-5)
  np.testing.assert_allclose(context_lib.features(ctx, "none"), rewards[::-1][:4])
  # Entries not yet filled stay 0.
  one = context_lib.push(context_lib.init(3), 2.0)
  np.testing.assert_array_equal(context_lib.features(one), [0.0, 0.0, 0.0])


def test_pretrained_meta_network_outputs_the_initial_values():
  bounds = {"entropy_cost": MetaParamConfig(0.5, 0.0, 1.0),
            "discount": MetaParamConfig(0.97, 0.9, 1.0)}
  p = meta_params.Parameterisation(bounds, hidden_sizes=(64, 64), context_size=10,
                                   pretrain_steps=1000)
  w = p.init(jax.random.PRNGKey(0))
  contexts = jax.random.uniform(jax.random.PRNGKey(1), (200, 10), minval=-1, maxval=1)
  values = jax.vmap(lambda c: p.values(w, c))(contexts)
  np.testing.assert_allclose(values["entropy_cost"], 0.5, atol=0.02)
  np.testing.assert_allclose(values["discount"], 0.97, atol=0.003)
  # A standard initialisation, not a zeroed output layer: the context matters.
  assert np.abs(np.asarray(w["out"]["w"])).max() > 1e-2


def test_bounded_transforms_round_trip_and_stay_in_range():
  for b in ALL_BOUNDS.values():
    w0 = jnp.float32(meta_params.unconstrained_init(b))
    np.testing.assert_allclose(meta_params.constrain(b, w0), b.init, rtol=1e-5)
    for raw in (-1e3, -5.0, 0.0, 5.0, 1e3):
      v = float(meta_params.constrain(b, jnp.float32(raw)))
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
    ({"method": "bmg", "hyperparams": {"entropy_cost": {"init": 0.1}},
      "target_outer_step": False}, "meta.target_outer_step"),
    ({"method": "bmg", "hyperparams": {"entropy_cost": {"init": 0.1}}, "target_data": "fresh"},
     "meta.target_data"),
    ({"method": "bmg", "hyperparams": {"entropy_cost": {"init": 0.1}},
      "meta_hidden_sizes": []}, "meta.meta_hidden_sizes"),
    ({"method": "bmg", "hyperparams": {"entropy_cost": {"init": 0.1}},
      "context_normalisation": "zscore"}, "meta.context_normalisation"),
    ({"method": "bmg"}, "meta.hyperparams"),
    ({"method": "reptile"}, "meta.method"),
    ({"metod": "bmg"}, "meta.metod"),
])
def test_bad_meta_config_names_the_field(meta, field):
  with pytest.raises(ValueError, match=f"'{field}'"):
    Config.from_mapping({"meta": meta})
