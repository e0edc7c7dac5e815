"""The EnvPool backend (envs.envpool_env) against gymnasium's own envs."""

import os

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs import envpool_env
from podmeta.config import Config
from tests import helpers


def _gymnasium_cartpole_from(obs: np.ndarray):
  env = gym.make("CartPole-v1").unwrapped
  env.reset(seed=0)
  env.state = obs.astype(np.float64)  # CartPole's state is its observation
  return env


def test_cartpole_steps_like_gymnasium_and_resets_on_the_next_step():
  """From the same state, the same actions give the same observations,
  rewards and episode ends; the step after an end is a reset paying 0."""
  pool = envs.make_vector_env("CartPole-v1", 3, seed=7, backend="envpool")
  assert pool.num_envs == 3 and pool.single_action_space == gym.spaces.Discrete(2)
  obs, _ = pool.reset()
  refs = [_gymnasium_cartpole_from(o) for o in obs]
  returns, ref_returns = np.zeros(3), np.zeros(3)
  ended = np.zeros(3, bool)
  episodes = [[] for _ in range(3)]
  rng = np.random.default_rng(0)
  for _ in range(300):
    actions = rng.integers(0, 2, size=3).astype(np.int32)
    obs, reward, terminated, truncated, info = pool.step(actions)
    assert not truncated.any()
    for i in range(3):
      if ended[i]:  # the next-step reset: action ignored, reward 0, a fresh start
        assert info["elapsed_step"][i] == 0 and reward[i] == 0 and not terminated[i]
        assert np.all(np.abs(obs[i]) <= 0.05)
        refs[i] = _gymnasium_cartpole_from(obs[i])
        ended[i] = False
        continue
      ref_obs, ref_reward, ref_terminated, _, _ = refs[i].step(int(actions[i]))
      np.testing.assert_allclose(obs[i], ref_obs, rtol=1e-4, atol=1e-5)
      assert bool(terminated[i]) == ref_terminated
      returns[i] += reward[i]
      ref_returns[i] += ref_reward
      if terminated[i]:
        episodes[i].append((returns[i], ref_returns[i]))
        returns[i] = ref_returns[i] = 0.0
        ended[i] = True
  assert min(len(e) for e in episodes) >= 3, episodes  # random actions: ~20 steps each
  for e in episodes:
    np.testing.assert_array_equal(*np.asarray(e).T)


def test_box_actions_are_rescaled_from_minus_one_to_one():
  pool = envs.make_vector_env("Pendulum-v1", 2, seed=0, backend="envpool")
  assert pool.single_action_space == gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
  spec = envs.env_spec("Pendulum-v1", backend="envpool")
  assert spec.continuous and spec.num_actions == 1 and spec.obs_shape == (3,)
  pool.reset()
  # Pendulum's torque bound is 2: an action of 1 is a torque of 2, and 5 is clipped to it.
  seen = []
  for a in (1.0, 5.0):
    p = envs.make_vector_env("Pendulum-v1", 1, seed=3, backend="envpool")
    obs, _ = p.reset()
    seen.append(p.step(np.full((1, 1), a, np.float32))[0])
  np.testing.assert_allclose(seen[0], seen[1])
  ref = gym.make("Pendulum-v1").unwrapped
  ref.reset(seed=0)
  p = envs.make_vector_env("Pendulum-v1", 1, seed=3, backend="envpool")
  obs, _ = p.reset()
  ref.state = np.array([np.arctan2(obs[0, 1], obs[0, 0]), obs[0, 2]])
  np.testing.assert_allclose(seen[0][0], ref.step(np.array([2.0]))[0], rtol=1e-4, atol=1e-5)


def test_atari_matches_the_gymnasium_backends_preprocessing_pixel_for_pixel():
  """podmeta/Pong-v0 from both backends, from the same start (one no-op, no sticky
  actions), on the same random actions: equal frames, rewards, episode ends and
  returns, through a finished game and the next-step reset after it."""
  kwargs = {"noop_max": 1, "repeat_action_probability": 0.0}
  pools = [envs.make_vector_env("podmeta/Pong-v0", 1, seed=0, backend=b, **kwargs)
           for b in ("gymnasium", "envpool")]
  assert pools[1].single_observation_space == pools[0].single_observation_space
  first = [p.reset(seed=0)[0] for p in pools]
  np.testing.assert_array_equal(*first)
  assert first[0].shape == (1, 84, 84, 4) and first[0].std() > 0
  returns, ends = np.zeros(2), 0
  for action in np.random.default_rng(0).integers(0, 6, size=1200):
    steps = [p.step(np.array([action])) for p in pools]
    (obs, reward, terminated, truncated, _), (obs_e, reward_e, terminated_e, truncated_e, _) = steps
    assert (reward[0], terminated[0], truncated[0]) == (reward_e[0], terminated_e[0],
                                                        truncated_e[0])
    if terminated[0]:
      # A game that ends inside a frame skip: EnvPool does not max-pool its last frame.
      np.testing.assert_array_equal(obs[..., :-1], obs_e[..., :-1])
      ends += 1
    else:
      np.testing.assert_array_equal(obs, obs_e)
    returns += [reward[0], reward_e[0]]
  assert ends >= 1  # random play loses a game of Pong in ~900 steps
  assert returns[0] == returns[1] and returns[0] < 0
  for p in pools:
    p.close()
  with pytest.raises(ValueError, match="'env_id'.*'podmeta/Pong-v0'.*not EnvPool's 'Pong-v5'"):
    envpool_env.VectorEnv("Pong-v5", 1, 0)
  with pytest.raises(ValueError, match="'env_kwargs'.*render_mode"):
    envpool_env.VectorEnv("podmeta/Pong-v0", 1, 0, env_kwargs={"render_mode": "rgb_array"})


def test_bad_envpool_input_names_the_field():
  with pytest.raises(ValueError, match="'env_id'.*EnvPool has no env 'CartPol-v1'"):
    envs.check_env_id("CartPol-v1", backend="envpool")
  with pytest.raises(ValueError, match="'env_wrappers'.*gymnasium envs only"):
    Config.from_mapping({"env_backend": "envpool",
                         "env_wrappers": ("gymnasium.wrappers:FlattenObservation",)})
  with pytest.raises(ValueError, match="'env_backend' must be one of"):
    Config.from_mapping({"env_backend": "brax"})
  with pytest.raises(ValueError, match="'env_kwargs': envpool.make"):
    envpool_env.VectorEnv("CartPole-v1", 2, 0, env_kwargs={"no_such_option": 1})
  with pytest.raises(ValueError, match="'envpool_threads' must be at least 0"):
    Config.from_mapping({"env_backend": "envpool", "envpool_threads": -1})


def test_the_actors_envpool_runs_on_the_configured_threads():
  from podmeta import builder
  for threads in (1, 3):
    config = Config.from_mapping({"env_backend": "envpool", "envpool_threads": threads})
    pool = builder.vector_env(config, 4, seed=0)
    assert pool._pool.spec.config.num_threads == threads  # pylint: disable=protected-access
    pool.close()


def test_the_lean_envpool_config_learns_cartpole(tmp_path):
  from podmeta import loggers
  run_dir, cache = str(tmp_path / "run"), tmp_path / "jax_cache"
  code, out, left = helpers.run(
      helpers.train_command(run_dir, "--config=launch/configs/cartpole_envpool.py",
                            "--config.max_env_steps=1000000", "--config.log_every_seconds=1",
                            f"--compilation_cache_dir={cache}"),
      timeout=600, env_overrides={"XLA_FLAGS": "--xla_force_host_platform_device_count=1"})
  assert code == 0, out[-5000:]
  assert not left
  s = helpers.summary(run_dir)
  assert s["exit_reason"] == "max_env_steps" and s["env_errors"] == 0
  # Random actions average ~22; 128 envs per actor and batches of 128 pass
  # 475 by 450k-630k steps (BENCHMARKS.md, time to 475).
  assert s["episode_return_mean"] >= 400, s
  # Start-up, from the launcher's process start, in the order it happens.
  marks = s["startup_seconds"]
  assert 0 < marks["learner_built"] <= marks["first_batch"] <= marks["first_learner_step"]
  assert marks["first_learner_step"] < s["wall_seconds"] + marks["learner_built"] + 5
  # Every log row is dated from the launcher's process start too: after the
  # learner was built, increasing, and the first row whose mean return
  # reached 400 is found in them.
  log = loggers.read_csv(os.path.join(run_dir, "logs", "learner.csv"))
  since = log["seconds_since_launch"]
  assert since[0] >= marks["learner_built"] and np.all(np.diff(since) > 0), since
  i = loggers.first_row_at_least(log, "episode_return_mean", 400.0)
  assert i is not None and since[i] > 0 and 0 < log["env_steps"][i] <= s["env_steps"], i
  # CartPole-v1's returns stop at 500.
  assert loggers.first_row_at_least(log, "episode_return_mean", 501.0) is None
  # The compiled update and policy are in the persistent cache for the next run.
  names = [p.name for p in cache.iterdir()]
  assert any(n.startswith("pmap_update") for n in names), names
  assert any(n.startswith("jit_policy") for n in names), names
