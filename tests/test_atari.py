"""Atari: the preprocessed ALE env, the deep IMPALA torso and a real launch on Pong."""

import os

import gymnasium as gym
import jax
import numpy as np
import pytest

import envs
from envs import atari
from podmeta import networks

from tests import helpers


@pytest.fixture(scope="module", autouse=True)
def _registered():
  envs.register()


def test_registered_ids_and_spec():
  assert atari.env_id("Pong") == "podmeta/Pong-v0" == atari.env_id("pong")
  assert atari.env_id("ms_pacman") == "podmeta/MsPacman-v0"
  for game in ["Pong", "Breakout", "MsPacman", "SpaceInvaders"]:
    envs.check_env_id(atari.env_id(game))
    assert gym.spec(atari.env_id(game)).max_episode_steps == 27_000
  spec = envs.env_spec("podmeta/Pong-v0")
  assert spec == envs.EnvSpec((84, 84, 4), np.dtype(np.uint8), 6)  # the minimal action set
  with pytest.raises(ValueError, match="podmeta/NoSuchGame-v0"):
    envs.check_env_id("podmeta/NoSuchGame-v0")


def _area_matrix(size_in, size_out):
  """Resizing by area as a matrix: entry (i, j) is the overlap of output pixel i's
  source interval [i * s, (i + 1) * s) with source pixel j, over s."""
  s = size_in / size_out
  lo = np.arange(size_out)[:, None] * s
  j = np.arange(size_in)[None, :]
  return np.clip(np.minimum(lo + s, j + 1) - np.maximum(lo, j), 0, None) / s


def _reference_frames(seed: int, actions):
  """The preprocessing written out on a bare ALE env: what the last channel must hold."""
  env = gym.make("ALE/Pong-v5", frameskip=1, obs_type="grayscale",
                 repeat_action_probability=0.25, max_num_frames_per_episode=None)
  screen, _ = env.reset(seed=seed)
  for _ in range(env.unwrapped.np_random.integers(1, 31)):  # no-op reset
    screen, *_ = env.step(0)

  def resize(x):
    return np.rint(_area_matrix(210, 84) @ x.astype(np.float64) @ _area_matrix(160, 84).T)

  frames = [resize(screen)]
  for a in actions:
    screens = [env.step(a)[0] for _ in range(4)]
    frames.append(resize(np.maximum(screens[-2], screens[-1])))
  env.close()
  return frames


def test_preprocessed_observations_stack_skip_and_max_pool():
  env = gym.make("podmeta/Pong-v0")
  assert env.observation_space.shape == (84, 84, 4)
  assert env.observation_space.dtype == np.uint8
  ale = env.unwrapped.ale
  assert ale.getFloat("repeat_action_probability") == pytest.approx(0.25)  # sticky actions
  obs, _ = env.reset(seed=3)
  assert 1 <= ale.getEpisodeFrameNumber() <= 30  # no-ops after the reset
  assert obs.shape == (84, 84, 4) and obs.dtype == np.uint8
  assert all(np.array_equal(obs[..., i], obs[..., 0]) for i in range(4))

  actions = np.random.default_rng(0).integers(0, 6, size=60)
  expected = _reference_frames(3, actions)
  # Within 1 grey level: float64 here, float32 in the env (and in OpenCV).
  np.testing.assert_allclose(obs[..., -1], expected[0], atol=1, rtol=0)
  for t, a in enumerate(actions, start=1):
    frames_before = ale.getEpisodeFrameNumber()
    previous = obs
    obs, *_ = env.step(a)
    assert ale.getEpisodeFrameNumber() - frames_before == 4  # frame skip
    # Newest frame last; the others shift down by one channel.
    np.testing.assert_array_equal(obs[..., :-1], previous[..., 1:])
    np.testing.assert_allclose(obs[..., -1], expected[t], atol=1, rtol=0)
  # The screen changed over 60 steps: the frames are not all the same.
  assert np.abs(obs[..., -1] - expected[0]).max() > 1
  env.close()


def test_rewards_are_the_raw_game_score():
  env = gym.make("podmeta/SpaceInvaders-v0")  # any ALE game, through the generic ids
  env.reset(seed=0)
  rng = np.random.default_rng(0)
  rewards = []
  for _ in range(400):
    _, r, terminated, truncated, _ = env.step(int(rng.integers(env.action_space.n)))
    rewards.append(r)
    if terminated or truncated:
      break
  env.close()
  assert max(rewards) >= 5  # an alien is worth 5 to 30 points, not a clipped 1


def test_terminal_on_life_loss_continues_the_game():
  env = gym.wrappers.TimeLimit(atari.make_env("Breakout", terminal_on_life_loss=True), 27_000)
  env.reset(seed=0)
  ale = env.unwrapped.ale
  lives = ale.lives()
  rng = np.random.default_rng(0)
  for _ in range(5000):
    _, _, terminated, truncated, _ = env.step(int(rng.integers(env.action_space.n)))
    if terminated or truncated:
      break
  assert terminated and ale.lives() == lives - 1 and not ale.game_over()
  env.reset()
  assert ale.lives() == lives - 1  # the same game goes on
  env.close()


def test_deep_torso_shapes_and_parameter_count():
  net = networks.make_network("impala_deep", (256,), (84, 84, 4), num_actions=6)
  # Shapes only: the orthogonal initialiser's QR of the 3872x256 layer takes
  # seconds to compile on CPU, and the launch test below runs the real thing.
  params = jax.eval_shape(net.init, jax.random.PRNGKey(0), np.zeros((1, 84, 84, 4), np.uint8))
  logits, values = jax.eval_shape(net.apply, params, np.zeros((3, 2, 84, 84, 4), np.uint8))
  assert logits.shape == (3, 2, 6) and values.shape == (3, 2)

  def conv(c_in, c_out):
    return 3 * 3 * c_in * c_out + c_out

  expected = 0
  for c_in, c_out in [(4, 16), (16, 32), (32, 32)]:
    expected += conv(c_in, c_out) + 4 * conv(c_out, c_out)  # conv + two residual blocks
  # 84 -> 42 -> 21 -> 11 after three stride-2 pools (SAME padding).
  expected += 11 * 11 * 32 * 256 + 256
  expected += 256 * 6 + 6 + 256 + 1  # policy and value heads
  assert sum(x.size for x in jax.tree.leaves(params)) == expected == 1_091_031
  assert params["deep_conv_torso/mlp/~/linear_0"]["w"].shape == (11 * 11 * 32, 256)


@pytest.mark.parametrize("backend", ["gymnasium", "envpool"])
def test_pong_program_launches_and_stops_cleanly(tmp_path, backend):
  run_dir = str(tmp_path / "run")
  code, out, left = helpers.run(
      helpers.train_command(run_dir, "--config=launch/configs/pong_impala.py",
                            f"--config.env_backend={backend}",
                            "--lp_launch_type=local_mt", "--num_actors=1",
                            "--config.envs_per_actor=2", "--config.batch_size=2",
                            "--config.unroll_length=5", "--config.max_learner_steps=3",
                            "--config.eval_episodes=0", "--config.replay_max_size=16",
                            "--config.min_replay_size=2", "--config.log_every_seconds=1"),
      timeout=180, env_overrides={"XLA_FLAGS": "--xla_force_host_platform_device_count=1"})
  assert code == 0, out[-5000:]
  assert not left, f"processes left behind: {[p.cmdline() for p in left]}"
  s = helpers.summary(run_dir)
  assert s["exit_reason"] == "max_learner_steps"
  assert s["learner_steps"] >= 3
  assert os.path.exists(os.path.join(run_dir, "logs", "actor_0.csv"))
