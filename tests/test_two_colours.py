"""The two colours grid world: gymnasium compliance, JAX/numpy agreement, respawn, swap."""

import functools

import gymnasium as gym
from gymnasium.utils.env_checker import check_env
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs import two_colours as tc

SIZE = tc.SIZE
# Written out independently of the module's table: (dx, dy) with y = 0 at the top.
EXPECTED_MOVE = {0: (0, -1), 1: (1, 0), 2: (0, 1), 3: (-1, 0)}


def _one_hot_blocks(obs):
  """The observation as [..., 6, 5]: agent x, agent y, blue x, blue y, red x, red y."""
  return np.asarray(obs).reshape(obs.shape[:-1] + (6, SIZE))


def _decode(obs):
  """(x, y) of agent, blue, red from one observation, checking it is one-hot."""
  blocks = _one_hot_blocks(obs)
  assert set(np.unique(blocks).tolist()) <= {0.0, 1.0}
  np.testing.assert_array_equal(blocks.sum(-1), 1.0)
  return blocks.argmax(-1).reshape(3, 2)


def _jax_state(agent, items, lifetime_step):
  return tc.TwoColoursState(agent=jnp.asarray(agent, jnp.int32),
                            items=jnp.asarray(items, jnp.int32),
                            step=jnp.asarray(lifetime_step, jnp.int32))


def test_gymnasium_checker_and_registration():
  spec = envs.env_spec(tc.ENV_ID)
  assert spec == envs.EnvSpec((30,), np.dtype(np.float32), 4)
  # Made through the registry so the checker finds a spec (else it warns).
  check_env(gym.make(tc.ENV_ID).unwrapped)
  envs.check_env_id(tc.ENV_ID)
  tc.register()  # Idempotent: a second registration would warn / override.

  env = gym.make(tc.ENV_ID, swap_every=7)
  assert env.unwrapped.swap_every == 7
  obs, _ = env.reset(seed=3)
  assert obs.shape == (30,) and obs.dtype == np.float32
  assert len({tuple(p) for p in _decode(obs).tolist()}) == 3
  # Truncated after MAX_EPISODE_STEPS, never terminated; reset keeps the counter.
  for t in range(tc.MAX_EPISODE_STEPS):
    obs, reward, terminated, truncated, _ = env.step(t % 4)
    assert not terminated and reward in (-1.0, 0.0, 1.0)
    assert truncated == (t == tc.MAX_EPISODE_STEPS - 1)
  env.reset()
  assert env.unwrapped.lifetime_step == tc.MAX_EPISODE_STEPS


def _random_cases(rng, n, swap_every):
  """States biased towards walls, items next to the agent, and swap boundaries."""
  agents, items, steps, actions = [], [], [], []
  for _ in range(n):
    if rng.random() < 0.5:  # On the border, where some moves hit a wall.
      fixed = rng.integers(2)
      agent = [0, 0]
      agent[fixed] = rng.choice([0, SIZE - 1])
      agent[1 - fixed] = rng.integers(SIZE)
    else:
      agent = list(rng.integers(SIZE, size=2))
    action = int(rng.integers(4))
    taken = {tuple(agent)}
    placed = [None, None]
    target = (agent[0] + EXPECTED_MOVE[action][0], agent[1] + EXPECTED_MOVE[action][1])
    if rng.random() < 0.5 and 0 <= min(target) and max(target) < SIZE:
      i = int(rng.integers(2))  # This item gets collected.
      placed[i] = target
      taken.add(target)
    for i in range(2):
      if placed[i] is None:
        free = [(x, y) for x in range(SIZE) for y in range(SIZE) if (x, y) not in taken]
        placed[i] = free[rng.integers(len(free))]
        taken.add(placed[i])
    boundary = swap_every * int(rng.integers(1, 4))
    step = int(rng.choice([boundary - 1, boundary, boundary + 1, rng.integers(4 * swap_every)]))
    agents.append(agent)
    items.append(placed)
    steps.append(step)
    actions.append(action)
  return (np.array(agents), np.array(items), np.array(steps), np.array(actions))


@pytest.mark.parametrize("swap_every, respawn, step_reward",
                         [(10, "all", 0.0), (100_000, "all", 0.0), (10, "item", 0.0),
                          (10, "all", -0.04)])
def test_jax_and_numpy_agree(swap_every, respawn, step_reward):
  n = 2000
  rng = np.random.default_rng(swap_every)
  agents, items, steps, actions = _random_cases(rng, n, swap_every)
  keys = jax.random.split(jax.random.PRNGKey(swap_every), n)
  step = jax.jit(jax.vmap(functools.partial(tc.step, swap_every=swap_every, respawn=respawn,
                                            step_reward=step_reward)))
  j_state, j_obs, j_reward = jax.device_get(step(
      _jax_state(agents, items, steps), jnp.asarray(actions, jnp.int32), keys))

  env = tc.TwoColoursEnv(swap_every=swap_every, respawn=respawn, step_reward=step_reward)
  env.reset(seed=swap_every)
  collections = 0
  for k in range(n):
    env.set_state(agents[k], items[k], steps[k])
    n_obs, n_reward, terminated, truncated, info = env.step(actions[k])
    assert not terminated and not truncated

    dx, dy = EXPECTED_MOVE[int(actions[k])]
    expected_agent = np.clip(agents[k] + [dx, dy], 0, SIZE - 1)
    hit = np.all(items[k] == expected_agent, axis=-1)
    colour = (steps[k] // swap_every) % 2
    expected_reward = ((1.0 if hit[colour] else 0.0) - (1.0 if hit[1 - colour] else 0.0)
                       if hit.any() else step_reward)
    collections += hit.any()
    assert info["positive_colour"] == colour

    # float32 in JAX: -0.04 is not exact there.
    assert n_reward == expected_reward and j_reward[k] == np.float32(expected_reward)
    assert env.lifetime_step == j_state.step[k] == steps[k] + 1
    for impl_agent, impl_items, impl_obs in ((env.agent, env.items, n_obs),
                                             (j_state.agent[k], j_state.items[k], j_obs[k])):
      decoded = _decode(impl_obs)
      np.testing.assert_array_equal(decoded[0], impl_agent)
      np.testing.assert_array_equal(decoded[1:], impl_items)
      assert len({tuple(p) for p in decoded.tolist()}) == 3
      assert decoded.min() >= 0 and decoded.max() < SIZE
      if respawn == "item" or not hit.any():
        np.testing.assert_array_equal(impl_agent, expected_agent)
      if respawn == "item":
        # The collected item always moves (its old cell is now the agent's),
        # the other never does.
        np.testing.assert_array_equal(np.any(impl_items != items[k], axis=-1), hit)
      elif not hit.any():
        np.testing.assert_array_equal(impl_items, items[k])
  assert 0.3 * n < collections < 0.7 * n  # The cases did exercise collection.


def _chi_square(counts, free):
  expected = counts[free].sum() / free.sum()
  return float(((counts[free] - expected) ** 2 / expected).sum())


# 22 degrees of freedom (23 free cells): P(chi2 > 60) ~ 2e-5.
CHI2_BOUND = 60.0


def test_item_respawn_is_uniform_over_free_cells():
  n = 4600  # About 200 per free cell.
  agent, other = (2, 2), (4, 0)
  # The agent at (1, 2) moves right onto blue at (2, 2); red stays at (4, 0).
  free = np.ones((SIZE, SIZE), bool)  # [x, y]
  free[agent], free[other] = False, False

  keys = jax.random.split(jax.random.PRNGKey(0), n)
  state = _jax_state((1, 2), (agent, other), 0)
  step = jax.jit(jax.vmap(functools.partial(tc.step, respawn="item"), in_axes=(None, None, 0)))
  new_state, _, reward = jax.device_get(step(state, jnp.int32(1), keys))
  np.testing.assert_array_equal(reward, 1.0)
  np.testing.assert_array_equal(new_state.agent, np.broadcast_to(agent, (n, 2)))
  np.testing.assert_array_equal(new_state.items[:, 1], np.broadcast_to(other, (n, 2)))
  counts = np.zeros((SIZE, SIZE))
  np.add.at(counts, (new_state.items[:, 0, 0], new_state.items[:, 0, 1]), 1)
  assert counts[~free].sum() == 0
  assert _chi_square(counts, free) < CHI2_BOUND

  env = tc.TwoColoursEnv(respawn="item")
  env.reset(seed=0)
  counts = np.zeros((SIZE, SIZE))
  for _ in range(n):
    env.set_state((1, 2), (agent, other), 0)
    env.step(1)
    counts[tuple(env.items[0])] += 1
  assert counts[~free].sum() == 0
  assert _chi_square(counts, free) < CHI2_BOUND


def test_collection_respawns_all_three_on_distinct_uniform_cells():
  """The paper's rule: after a pickup, agent and both items re-spawn at random."""
  n = 5000  # 200 per cell.
  keys = jax.random.split(jax.random.PRNGKey(2), n)
  state = _jax_state((1, 2), ((2, 2), (4, 0)), 0)  # moving right collects blue
  step = jax.jit(jax.vmap(tc.step, in_axes=(None, None, 0)))
  new_state, obs, reward = jax.device_get(step(state, jnp.int32(1), keys))
  np.testing.assert_array_equal(reward, 1.0)
  env = tc.TwoColoursEnv()
  env.reset(seed=2)
  numpy_positions = []
  for _ in range(n):
    env.set_state((1, 2), ((2, 2), (4, 0)), 0)
    assert env.step(1)[1] == 1.0
    numpy_positions.append(np.concatenate([env.agent[None], env.items]))
  for positions in (np.concatenate([new_state.agent[:, None], new_state.items], axis=1),
                    np.asarray(numpy_positions)):
    cells = positions[..., 1] * SIZE + positions[..., 0]  # [n, 3]
    assert np.all((cells[:, 0] != cells[:, 1]) & (cells[:, 0] != cells[:, 2])
                  & (cells[:, 1] != cells[:, 2]))
    for entity in range(3):  # each uniform over all 25 cells; 24 dof: P(chi2 > 65) ~ 1e-5
      counts = np.bincount(cells[:, entity], minlength=SIZE * SIZE)
      assert _chi_square(counts, np.ones(SIZE * SIZE, bool)) < 65.0


def test_reset_draws_distinct_uniform_cells():
  n = 2000
  keys = jax.random.split(jax.random.PRNGKey(1), n)
  states, _ = jax.device_get(jax.jit(jax.vmap(tc.reset))(keys))
  positions = np.concatenate([states.agent[:, None], states.items], axis=1)  # [n, 3, 2]
  cells = positions[..., 1] * SIZE + positions[..., 0]
  assert np.all((cells[:, 0] != cells[:, 1]) & (cells[:, 0] != cells[:, 2])
                & (cells[:, 1] != cells[:, 2]))
  np.testing.assert_array_equal(states.step, 0)
  # 24 degrees of freedom: P(chi2 > 65) ~ 1e-5.
  counts = np.bincount(cells[:, 0], minlength=SIZE * SIZE)
  assert _chi_square(counts, np.ones(SIZE * SIZE, bool)) < 65.0


def test_rewards_follow_the_colour_schedule():
  """A scripted run: each step collects blue or red, or bumps a wall (no reward)."""
  swap_every, n = 10, 45
  env = tc.TwoColoursEnv(swap_every=swap_every)
  env.reset(seed=0)
  j_step = jax.jit(functools.partial(tc.step, swap_every=swap_every))
  j_state, _ = tc.reset(jax.random.PRNGKey(0))
  key = jax.random.PRNGKey(1)
  seen = {}  # (phase, colour collected) -> rewards.
  for t in range(n):
    positive = (t // swap_every) % 2
    kind = t % 3  # 0: collect blue, 1: collect red, 2: bump into the left wall.
    if kind == 2:
      agent, items, action, expected = (0, 2), ((3, 3), (4, 4)), 3, 0.0
    else:
      agent, items, action = (2, 2), [(0, 0), (4, 4)], 1
      items[kind] = (3, 2)
      expected = 1.0 if kind == positive else -1.0
    # The counter is carried over from the previous step, never set by hand.
    env.set_state(agent, items, env.lifetime_step)
    _, reward, _, _, info = env.step(action)
    assert info["positive_colour"] == positive
    assert reward == expected, t

    key, sub = jax.random.split(key)
    j_state = _jax_state(agent, items, j_state.step)
    j_state, _, j_reward = j_step(j_state, jnp.int32(action), sub)
    assert float(j_reward) == expected, t
    if kind != 2:
      seen.setdefault((positive, kind), set()).add(reward)
  assert env.lifetime_step == int(j_state.step) == n
  # Blue pays on steps 0-9, 20-29, 40-44; red on 10-19 and 30-39.
  assert seen == {(0, 0): {1.0}, (0, 1): {-1.0}, (1, 0): {-1.0}, (1, 1): {1.0}}


def test_jax_jit_vmap_scan():
  num_steps, num_envs = 100, 4

  def rollout(key):
    reset_key, key = jax.random.split(key)
    state, obs = tc.reset(reset_key)

    def body(state, key):
      action_key, step_key = jax.random.split(key)
      action = jax.random.randint(action_key, (), 0, 4)
      state, obs, reward = tc.step(state, action, step_key, swap_every=30)
      return state, (obs, reward)

    final, (obs_seq, rewards) = jax.lax.scan(body, state, jax.random.split(key, num_steps))
    return final, obs, obs_seq, rewards

  final, obs0, obs_seq, rewards = jax.device_get(
      jax.jit(jax.vmap(rollout))(jax.random.split(jax.random.PRNGKey(0), num_envs)))
  assert obs0.shape == (num_envs, 30) and obs0.dtype == np.float32
  assert obs_seq.shape == (num_envs, num_steps, 30) and obs_seq.dtype == np.float32
  assert rewards.shape == (num_envs, num_steps) and rewards.dtype == np.float32
  assert final.agent.shape == (num_envs, 2) and final.items.shape == (num_envs, 2, 2)
  np.testing.assert_array_equal(final.step, num_steps)
  assert np.all(np.isfinite(obs_seq)) and np.all(np.isfinite(rewards))
  assert set(np.unique(rewards).tolist()) <= {-1.0, 0.0, 1.0}
  for obs in obs_seq.reshape(-1, 30):
    assert len({tuple(p) for p in _decode(obs).tolist()}) == 3


def test_vector_env():
  num_envs = 4
  env = envs.make_vector_env(tc.ENV_ID, num_envs, seed=0)
  try:
    assert env.single_observation_space.shape == (30,)
    assert env.single_action_space.n == 4
    rng = np.random.default_rng(0)
    for _ in range(50):
      obs, reward, terminated, truncated, _ = env.step(rng.integers(4, size=num_envs))
      assert obs.shape == (num_envs, 30) and obs.dtype == np.float32
      blocks = _one_hot_blocks(obs)
      assert set(np.unique(blocks).tolist()) <= {0.0, 1.0}
      np.testing.assert_array_equal(blocks.sum(-1), 1.0)
      assert set(np.unique(reward).tolist()) <= {-1.0, 0.0, 1.0}
      assert not terminated.any() and not truncated.any()
  finally:
    env.close()
