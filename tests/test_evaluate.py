"""`podmeta evaluate`: a run's newest checkpoint evaluated, an episode filmed."""

import json
import os
import sys

import numpy as np
from PIL import Image
import pytest

import envs
from envs import two_colours
from tests import helpers

ONE_DEVICE = {"XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
PODMETA = os.path.join(os.path.dirname(sys.executable), "podmeta")


@pytest.fixture(scope="module")
def cartpole_run(tmp_path_factory):
  run_dir = str(tmp_path_factory.mktemp("eval") / "run")
  code, out, _ = helpers.run(helpers.train_command(
      run_dir, "--num_actors=1", "--config.envs_per_actor=8", "--config.batch_size=8",
      "--config.max_env_steps=30000", "--config.eval_episodes=0"),
      timeout=240, env_overrides=ONE_DEVICE)
  assert code == 0, out[-3000:]
  return run_dir


def _evaluate(run_dir: str, *flags: str):
  """`podmeta evaluate RUN_DIR FLAGS...` in a subprocess: (exit code, output, leftovers)."""
  return helpers.run([PODMETA, "evaluate", run_dir, *flags], timeout=120,
                     env_overrides=ONE_DEVICE)


def _json_of(out: str) -> dict:
  return json.loads(out[out.index("{\n"):out.rindex("\n}") + 2])


def test_evaluate_reports_returns_and_writes_a_gif_of_one_episode(cartpole_run, tmp_path):
  video = str(tmp_path / "episode.gif")
  code, out, left = _evaluate(cartpole_run, "--episodes=4", f"--video={video}",
                              "--video_max_frames=40", "--video_fps=20")
  assert code == 0 and not left, out[-3000:]
  result = _json_of(out)
  summary = helpers.summary(cartpole_run)
  assert result["learner_steps"] == summary["latest_checkpoint_step"]
  assert result["episodes"] == len(result["returns"]) == 4
  assert result["return_mean"] == pytest.approx(np.mean(result["returns"]))
  assert all(r >= 1 for r in result["returns"])  # CartPole: +1 per step
  # The episode's frames: the first observation's, then one per step, capped.
  frames = result["video_frames"]
  assert frames == min(result["video_episode_steps"] + 1, 40)
  with Image.open(video) as gif:
    assert gif.size == (600, 400)  # CartPole's rgb_array frame
    # The writer merges identical consecutive frames (adding their
    # durations), so the frames are counted by the total duration.
    total = 0
    for i in range(gif.n_frames):
      gif.seek(i)
      total += gif.info["duration"]
  assert total == frames * (1000 // 20)
  assert f"podmeta: {cartpole_run} at learner step" in out.strip().splitlines()[-1]


def test_evaluate_films_a_continuous_action_run_to_mp4(tmp_path):
  """Pendulum (a Gaussian policy): evaluated, and an MP4 that decodes to every frame."""
  run_dir = str(tmp_path / "pendulum")
  code, out, _ = helpers.run(helpers.train_command(
      run_dir, "--config=launch/configs/pendulum_impala.py", "--num_actors=1",
      "--config.envs_per_actor=8", "--config.batch_size=8", "--config.max_env_steps=10000",
      "--config.eval_episodes=0"), timeout=240, env_overrides=ONE_DEVICE)
  assert code == 0, out[-3000:]
  video = str(tmp_path / "episode.mp4")
  code, out, left = _evaluate(run_dir, "--episodes=2", f"--video={video}",
                              "--video_max_frames=30", "--video_fps=15")
  assert code == 0 and not left, out[-3000:]
  result = _json_of(out)
  assert result["episodes"] == 2
  # Pendulum's reward is in [-16.3, 0] per step, 200 steps an episode.
  assert all(-16.3 * 200 <= r <= 0 for r in result["returns"])
  assert result["video_frames"] == 30 and not result["video_episode_complete"]
  import imageio  # pylint: disable=g-import-not-at-top
  with imageio.get_reader(video) as reader:
    frames = [frame for frame in reader]
    assert reader.get_meta_data()["fps"] == 15
  assert len(frames) == 30
  assert frames[0].shape == (500, 500, 3)  # Pendulum's rgb_array frame


@pytest.mark.parametrize("make_dir, must_mention", [
    (lambda d: d, "is not a run directory (no config.json)"),
    (None, "no checkpoint in"),
])
def test_evaluate_refuses_what_it_cannot_evaluate(cartpole_run, tmp_path, make_dir, must_mention):
  run_dir = str(tmp_path / "empty")
  os.makedirs(run_dir)
  if make_dir is None:  # a run directory whose checkpoints are gone
    with open(os.path.join(cartpole_run, "config.json")) as f:
      config = f.read()
    with open(os.path.join(run_dir, "config.json"), "w") as f:
      f.write(config)
  code, out, _ = _evaluate(run_dir)
  errors = [l for l in out.splitlines() if l.startswith("podmeta: error:")]
  assert code == 2 and len(errors) == 1 and must_mention in errors[0], out[-2000:]
  assert "Traceback" not in out


def test_the_grid_world_and_atari_render_rgb_frames():
  env = envs.make_env(two_colours.ENV_ID, {"render_mode": "rgb_array"})
  env.reset(seed=0)
  inner = env.unwrapped
  inner.set_state(agent=(0, 0), items=[(4, 4), (2, 3)], lifetime_step=0)
  frame = env.render()
  assert frame.shape == (80, 80, 3) and frame.dtype == np.uint8
  assert tuple(frame[8, 8]) == (240, 240, 240)  # the agent at cell (0, 0)
  assert tuple(frame[4 * 16 + 8, 4 * 16 + 8]) == (40, 90, 230)  # blue at (4, 4)
  assert tuple(frame[3 * 16 + 8, 2 * 16 + 8]) == (220, 50, 50)  # red at x=2, y=3
  env.close()
  pong = envs.make_env("podmeta/Pong-v0", {"render_mode": "rgb_array"})
  pong.reset(seed=0)
  assert pong.render().shape == (210, 160, 3)
  pong.close()


def test_evaluation_carries_a_recurrent_policy_state():
  """run_episodes with an LSTM agent = each env's episode replayed alone, the state carried
  by hand from step to step (greedy, so both are deterministic)."""
  import jax  # pylint: disable=g-import-not-at-top
  from podmeta import builder, evaluation  # pylint: disable=g-import-not-at-top
  from podmeta.acting import make_policy  # pylint: disable=g-import-not-at-top
  from podmeta.config import Config  # pylint: disable=g-import-not-at-top
  config = Config(env_id=envs.memory.NO_VELOCITY_ID, core="lstm", core_size=8)
  spec = builder.env_spec(config)
  network = builder.make_network(config, spec)
  params = network.init(jax.random.PRNGKey(3), np.zeros((1,) + spec.obs_shape, np.float32))
  policy = make_policy(network, greedy=True)
  env = envs.make_vector_env(config.env_id, 2, seed=5)
  returns = evaluation.run_episodes(env, network, policy, params, jax.random.PRNGKey(0))
  env.close()
  for i, expected in enumerate(returns):
    single = envs.make_env(config.env_id)
    single.reset(seed=5 + i)  # as make_vector_env seeds env i; run_episodes resets again
    obs, _ = single.reset()
    state, total, done = np.zeros((1, network.state_size), np.float32), 0.0, False
    while not done:
      logits, _, state = network.unroll(params, obs[None, None], np.zeros((1, 1), bool), state)
      obs, r, terminated, truncated, _ = single.step(int(np.argmax(logits[0, 0])))
      total, done = total + r, terminated or truncated
    assert total == expected
    assert total >= 8  # CartPole episodes last at least 8 steps
