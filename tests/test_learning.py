"""The pmapped learner step (8 forced CPU devices agree with 1 device) and the network."""

import jax
import numpy as np
import optax
import pytest

import envs
from podmeta import builder
from podmeta import checkpointing
from podmeta import learning
from podmeta import networks
from podmeta.config import Config
from podmeta import replay as replay_lib

from tests import helpers


def test_eight_device_update_equals_one_device_update():
  assert jax.local_device_count() >= 8, "run with XLA_FLAGS=--xla_force_host_platform_device_count=8"
  config = Config(batch_size=16, unroll_length=7, hidden_sizes=(32, 32))
  spec = envs.env_spec(config.env_id)
  batch = helpers.random_batch(spec, config.batch_size, config.unroll_length, seed=3)

  results = []
  for n in (1, 8):
    learner = builder.make_learner(config, spec, devices=jax.devices()[:n])
    assert learner.num_devices == n
    sharded = jax.device_put_sharded(replay_lib.per_device(batch, n), learner.devices)
    metrics = learner.step(sharded)
    metrics = {k: np.asarray(v) for k, v in jax.device_get(metrics).items()}
    # Every device holds identical state after the pmean-ed update.
    params = jax.device_get(learner._state.params)
    for leaf in jax.tree.leaves(params):
      np.testing.assert_array_equal(leaf, np.broadcast_to(leaf[0], leaf.shape))
    results.append((learner.get_variables()[1], metrics))

  (p1, m1), (p8, m8) = results
  for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p8)):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(m1["loss"][0], m8["loss"][0], atol=1e-5, rtol=1e-5)
  # The update moved the parameters.
  initial = builder.make_learner(config, spec).get_variables()[1]
  assert any(np.abs(a - b).max() > 1e-6 for a, b in zip(jax.tree.leaves(initial), jax.tree.leaves(p1)))


def test_learner_save_restore_round_trip():
  config = Config(batch_size=8, unroll_length=5, hidden_sizes=(16,))
  spec = envs.env_spec(config.env_id)
  learner = builder.make_learner(config, spec, devices=jax.devices()[:2])
  batch = helpers.random_batch(spec, 8, 5, seed=1)
  learner.step(jax.device_put_sharded(replay_lib.per_device(batch, 2), learner.devices))
  saved = learner.save()
  other = builder.make_learner(config.replace(seed=5), spec, devices=jax.devices()[:2])
  other.restore(saved)
  assert other.step_count == 1
  for a, b in zip(jax.tree.leaves(saved), jax.tree.leaves(other.save())):
    np.testing.assert_array_equal(a, b)
  wrong = builder.make_learner(config.replace(hidden_sizes=(8,)), spec, devices=jax.devices()[:2])
  with pytest.raises(ValueError, match="does not match"):
    wrong.restore(saved)


@pytest.mark.parametrize("meta", [{}, dict(method="bmg", hyperparams=dict(
    entropy_cost=dict(init=0.01, low=0.0, high=0.05)))])
def test_learner_trains_on_clipped_rewards(meta):
  """max_abs_reward: the same step as on a batch with the rewards clipped beforehand."""
  config = Config.from_mapping(dict(batch_size=4, unroll_length=5, hidden_sizes=(16,), meta=meta))
  spec = envs.env_spec(config.env_id)
  batch = helpers.random_batch(spec, 4, 5, seed=2)
  batch = batch._replace(reward=5.0 * batch.reward)
  clipped = batch._replace(reward=np.clip(batch.reward, -1.0, 1.0))

  def step(c, b):
    update, state = builder.make_update_and_state(c, spec, axis_name=None)
    new_state, metrics = jax.jit(update)(state, b)
    leaves = jax.tree.leaves(new_state.params) + [metrics["loss"]]
    if c.meta.enabled:
      # K = L = 1: the ring is full at once, so this step's meta-update is real.
      # The ring and the reward context keep the raw rewards, as the world paid them.
      assert metrics["meta_active"] == 1.0
      leaves += jax.tree.leaves((new_state.meta.params, new_state.meta.opt_state))
      leaves += [metrics["meta_loss"]]
    return leaves

  with_clipping = step(config.replace(max_abs_reward=1.0), batch)
  for a, b in zip(with_clipping, step(config, clipped)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  assert any(not np.allclose(a, b) for a, b in zip(with_clipping, step(config, batch)))


@pytest.mark.parametrize("torso,obs_shape,shared", [("mlp", (30,), False), ("mlp", (30,), True),
                                                    ("conv", (36, 36, 2), True)])
def test_policy_only_call_gives_apply_logits_from_the_same_params(torso, obs_shape, shared):
  """Acting calls network.policy, which skips the value torso: same params, same logits."""
  net = networks.make_network(torso, (32,), obs_shape, num_actions=5, shared_torso=shared)
  obs = jax.random.uniform(jax.random.PRNGKey(1), (3, 7) + obs_shape)
  params = net.init(jax.random.PRNGKey(0), obs[0])
  logits, values = net.apply(params, obs)
  assert values.shape == (3, 7)
  np.testing.assert_allclose(net.policy(params, obs), logits, rtol=1e-6, atol=1e-7)
  # The policy-only call ignores the value torso's params.
  bumped = {k: (jax.tree.map(lambda x: x + 1.0, v) if k.startswith("value_torso") else v)
            for k, v in params.items()}
  np.testing.assert_allclose(net.policy(bumped, obs), logits, rtol=1e-6, atol=1e-7)
  if not shared:
    assert not np.allclose(net.apply(bumped, obs)[1], values)


def test_layer_norm_torsos_match_a_numpy_reference():
  """torso_norm="layer": each MLP layer is linear -> LayerNorm -> ReLU, in both
  torsos, against the same computation written out in numpy."""
  config = Config(hidden_sizes=(16, 8), shared_torso=False, torso_norm="layer")
  spec = envs.env_spec(config.env_id)
  net = builder.make_network(config, spec)
  obs = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (5,) + spec.obs_shape))
  params = net.init(jax.random.PRNGKey(0), obs)
  # Non-trivial scales and offsets, so the test sees them used.
  params = {k: {n: (v + 0.3 * np.arange(v.size).reshape(v.shape) / v.size if k.count("norm")
                    else v) for n, v in p.items()} for k, p in params.items()}

  def torso(prefix):
    h = obs.reshape(len(obs), -1).astype(np.float64)
    for i in range(2):
      lin, norm = params[f"{prefix}/mlp/~/linear_{i}"], params[f"{prefix}/mlp/~/layer_norm_{i}"]
      h = h @ np.asarray(lin["w"]) + np.asarray(lin["b"])
      h = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-5)
      h = np.maximum(h * np.asarray(norm["scale"]) + np.asarray(norm["offset"]), 0.0)
    return h

  logits, values = net.apply(params, obs)
  want_logits = torso("mlp_torso") @ np.asarray(params["policy"]["w"]) + params["policy"]["b"]
  want_values = (torso("value_torso") @ np.asarray(params["value"]["w"]) + params["value"]["b"])
  np.testing.assert_allclose(logits, want_logits, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(values, want_values[:, 0], rtol=1e-4, atol=1e-5)
  # The default torso has no norm parameters and keeps its parameter names.
  plain = builder.make_network(config.replace(torso_norm="none"), spec).init(
      jax.random.PRNGKey(0), obs)
  assert sorted(plain) == sorted(k for k in params if "norm" not in k)


@pytest.mark.parametrize("towards", ["zero", "init"])
def test_weight_decay_adds_its_l2_gradient_after_the_clip(towards):
  """The optimiser's step with weight decay, against the SGD step written out:
  -lr * (clip(g) + wd * (params - anchor)), the clip leaving the penalty alone."""
  p0 = {"w": np.array([1.0, -2.0, 0.5], np.float32)}
  params = {"w": np.array([1.5, -1.0, 0.0], np.float32)}
  grads = {"w": np.array([3.0, 4.0, 0.0], np.float32)}  # global norm 5, clipped to 1
  opt = learning.make_optimizer("sgd", 0.1, 1.0, weight_decay=0.01, weight_decay_towards=towards)
  updates, _ = opt.update(grads, opt.init(p0), params)
  anchor = p0["w"] if towards == "init" else 0.0
  want = -0.1 * (grads["w"] / 5.0 + 0.01 * (params["w"] - anchor))
  np.testing.assert_allclose(updates["w"], want, rtol=1e-6)
  # Without weight decay the optimiser and its state are the plain one's.
  plain, bare = learning.make_optimizer("adam", 1e-3, 1.0), learning.make_optimizer(
      "adam", 1e-3, 1.0, weight_decay=0.0, weight_decay_towards=towards)
  assert jax.tree.structure(plain.init(p0)) == jax.tree.structure(bare.init(p0))


def test_learner_decays_towards_its_initial_params():
  """In the pmapped learner: the first SGD step equals the undecayed one
  (params are still at init), the second differs by exactly -lr * wd * (p1 - p0)."""
  base = Config(batch_size=8, unroll_length=5, hidden_sizes=(16,), optimizer="sgd",
                learning_rate=0.05, max_grad_norm=0.0)
  spec = envs.env_spec(base.env_id)
  batch = jax.device_put_sharded(
      replay_lib.per_device(helpers.random_batch(spec, 8, 5, seed=4), 2), jax.devices()[:2])
  runs = {}
  for wd in (0.0, 0.5):
    learner = builder.make_learner(base.replace(weight_decay=wd, weight_decay_towards="init"),
                                   spec, devices=jax.devices()[:2])
    trail = [learner.get_variables()[1]]
    for _ in range(2):
      learner.step(batch)
      trail.append(learner.get_variables()[1])
    runs[wd] = trail
  (p0, p1, p2), (q0, q1, q2) = runs[0.0], runs[0.5]
  for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(q1)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  for a0, a1, a2, b2 in zip(*(jax.tree.leaves(t) for t in (p0, p1, p2, q2))):
    np.testing.assert_allclose(b2 - a2, -0.05 * 0.5 * (a1 - a0), rtol=1e-3, atol=1e-6)
  assert any(np.abs(a1 - a0).max() > 1e-3 for a0, a1 in zip(jax.tree.leaves(p0),
                                                             jax.tree.leaves(p1)))


def test_initial_params_of_l2_init_survive_a_checkpoint(tmp_path):
  """The anchor of weight_decay_towards="init" lives in the optimiser state:
  saved and restored with it, so a resumed run keeps pulling towards the same
  parameters, not towards those it resumed with."""
  config = Config(batch_size=4, unroll_length=5, hidden_sizes=(16,), optimizer="sgd",
                  weight_decay=0.1, weight_decay_towards="init")
  spec = envs.env_spec(config.env_id)
  learner = builder.make_learner(config, spec, devices=jax.devices()[:1])
  initial = learner.get_variables()[1]
  batch = jax.device_put_sharded(
      replay_lib.per_device(helpers.random_batch(spec, 4, 5, seed=5), 1), learner.devices)
  learner.step(batch)
  ckpt = checkpointing.Checkpointer(str(tmp_path / "ckpt"))
  ckpt.save(1, learner.save(), {})
  fresh = builder.make_learner(config.replace(seed=config.seed + 1), spec,
                               devices=jax.devices()[:1])
  restored, _ = ckpt.restore_latest(fresh.save())
  # tree_get raises if more than one anchor is found and returns None if none.
  anchor = optax.tree_utils.tree_get(restored.opt_state, "init_params")
  assert anchor is not None
  for a, b in zip(jax.tree.leaves(anchor), jax.tree.leaves(initial), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  fresh.restore(restored)
  resumed, saved = fresh.get_variables()[1], learner.get_variables()[1]
  for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(saved)):
    np.testing.assert_array_equal(a, b)


def test_get_variables_serves_restored_params_and_matching_versions():
  """The variables actors pull: a restore that repeats a step count is not served
  from the old cache, and each version comes with the params of that many steps."""
  config = Config(batch_size=4, unroll_length=5, hidden_sizes=(16,))
  spec = envs.env_spec(config.env_id)
  learner = builder.make_learner(config, spec, devices=jax.devices()[:1])
  batch = jax.device_put_sharded(replay_lib.per_device(helpers.random_batch(spec, 4, 5, seed=2), 1),
                                 learner.devices)
  expected = [learner.get_variables()[1]]
  for _ in range(3):
    learner.step(batch)
    version, params = learner.get_variables()
    assert version == len(expected)
    expected.append(params)
  # Another learner's state at the same step count (1) as a cached version.
  other = builder.make_learner(config.replace(seed=9), spec, devices=jax.devices()[:1])
  other.step(batch)
  assert other.get_variables()[0] == 1
  other.restore(learner.save())
  version, params = other.get_variables()
  assert version == 3
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(expected[3])):
    np.testing.assert_array_equal(a, b)
  restored_at_one = builder.make_learner(config, spec, devices=jax.devices()[:1])
  restored_at_one.step(batch)
  restored_at_one.get_variables()
  state = learner.save()
  restored_at_one.restore(state._replace(step=np.asarray(1, np.int32)))
  version, params = restored_at_one.get_variables()
  assert version == 1
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(expected[3])):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("std", ["learned", "state"])
def test_gaussian_policy_head(std):
  """[mean (bounded by tanh), log std] per state; "learned" std is one parameter per dimension."""
  net = networks.make_network("mlp", (16,), (3,), num_actions=2, shared_torso=False,
                              continuous=True, gaussian_std=std, gaussian_init_std=0.5)
  obs = np.random.default_rng(0).normal(size=(7, 3)).astype(np.float32) * 100
  params = net.init(jax.random.PRNGKey(0), obs[:1])
  # Push the mean's pre-activation far out: the mean must stay in [-1, 1].
  params = jax.tree_util.tree_map_with_path(
      lambda path, x: x * 1e3 if "mean" in jax.tree_util.keystr(path) else x, params)
  logits, values = net.apply(params, obs)
  assert logits.shape == (7, 4) and values.shape == (7,)
  np.testing.assert_array_equal(net.policy(params, obs), logits)
  mean, log_std = np.asarray(logits[:, :2]), np.asarray(logits[:, 2:])
  assert np.all(np.abs(mean) <= 1.0) and np.abs(mean).max() > 0.99
  if std == "learned":
    np.testing.assert_allclose(log_std, np.log(0.5), rtol=1e-6)
    assert params["policy"]["log_std"].shape == (2,)
  else:
    assert np.all((log_std >= networks.LOG_STD_MIN) & (log_std <= networks.LOG_STD_MAX))
    assert np.std(log_std[:, 0]) > 0  # it depends on the state
  assert net.distribution.name == "gaussian" and net.distribution.num_params == 4


@pytest.mark.parametrize("shared", [True, False])
def test_lstm_unroll_equals_a_step_by_step_unroll_with_resets(shared):
  """The learner's unroll over a sequence = one step at a time, the state zeroed by hand
  wherever a step starts an episode (the reference never asks the network to reset)."""
  net = networks.make_network("mlp", (8,), (3,), num_actions=4, shared_torso=shared,
                              core="lstm", core_size=5)
  assert net.state_size == (10 if shared else 20) == networks.state_size("lstm", 5, shared)
  rng = np.random.default_rng(0)
  b, n = 3, 7
  obs = rng.normal(size=(b, n, 3)).astype(np.float32)
  is_first = np.zeros((b, n), bool)
  is_first[0, 3] = is_first[1, 0] = is_first[2, 2] = is_first[2, 5] = True
  state0 = rng.normal(size=(b, net.state_size)).astype(np.float32)
  params = net.init(jax.random.PRNGKey(0), obs[:, 0])
  logits, values, final = net.unroll(params, obs, is_first, state0)
  assert logits.shape == (b, n, 4) and values.shape == (b, n) and final.shape == state0.shape

  state, no_reset = state0, np.zeros((b, 1), bool)
  for t in range(n):
    state = np.where(is_first[:, t:t + 1], 0.0, state)
    step_logits, step_values, state = net.unroll(params, obs[:, t:t + 1], no_reset, state)
    np.testing.assert_allclose(logits[:, t], step_logits[:, 0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(values[:, t], step_values[:, 0], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(final, state, rtol=1e-5, atol=1e-6)
  # The state matters: another initial state changes the steps before the first reset only.
  other = net.unroll(params, obs, is_first, state0 + 1.0)[0]
  assert not np.allclose(other[0, :3], logits[0, :3])
  np.testing.assert_allclose(other[0, 3:], logits[0, 3:], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(other[1], logits[1], rtol=1e-5, atol=1e-6)
