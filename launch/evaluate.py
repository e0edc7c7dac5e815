r"""Evaluates a run's newest checkpoint, and films an episode.

  python -m launch.evaluate runs/cartpole --episodes=20
  python -m launch.evaluate runs/cartpole --video=cartpole.gif
  python -m launch.evaluate runs/pendulum --video=pendulum.mp4
  podmeta evaluate runs/cartpole --video=cartpole.gif

Loads RUN_DIR/config.json and the newest checkpoint in RUN_DIR/checkpoints,
runs `--episodes` episodes with the trained policy (greedy, as the run's
evaluator does, unless --nogreedy), prints the mean and standard deviation
of their returns, and with `--video` writes one more episode of the env's
rgb_array rendering (at most --video_max_frames frames), as an MP4 (H.264, by
the ffmpeg that imageio-ffmpeg ships) or an animated GIF, by the file's
extension.
"""

import json
import os
import sys

from absl import app
from absl import flags

_EPISODES = flags.DEFINE_integer("episodes", 10, "Episodes to average over.")
_GREEDY = flags.DEFINE_bool("greedy", True, "Take the most likely action (else sample).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the episodes' envs and of sampling.")
_VIDEO = flags.DEFINE_string("video", None, "Write one episode to this .mp4 or .gif file.")
_VIDEO_FORMATS = (".mp4", ".gif")
_VIDEO_MAX_FRAMES = flags.DEFINE_integer("video_max_frames", 1000, "Frames at most in --video.")
_VIDEO_FPS = flags.DEFINE_integer("video_fps", 30, "Frames per second of --video.")


def _fail(message: str) -> None:
  print(f"podmeta: error: {message}", file=sys.stderr)
  sys.exit(2)


def load(run_dir: str):
  """(config, params, learner step) of the run's newest checkpoint; ValueError if none."""
  from podmeta import builder
  from podmeta.checkpointing import read_latest_counters
  from podmeta.config import Config
  path = os.path.join(run_dir, "config.json")
  if not os.path.isfile(path):
    raise ValueError(f"{run_dir} is not a run directory (no config.json)")
  with open(path) as f:
    config = Config.from_mapping(json.load(f))
  spec = builder.env_spec(config)
  ckpt_dir = os.path.join(run_dir, "checkpoints")
  if not os.path.isdir(ckpt_dir):
    raise ValueError(f"no checkpoint in {ckpt_dir}")
  # A pod's checkpoint holds a meta ring of the whole pod's batch.
  _, counters = read_latest_counters(ckpt_dir)
  _, template = builder.make_update_and_state(
      config, spec, axis_name=None, num_processes=int((counters or {}).get("num_processes", 1)))
  # Read-only: evaluating (perhaps beside a live run) moves and creates nothing.
  checkpointer = builder.make_checkpointer(config, run_dir, read_only=True)
  try:
    restored = checkpointer.restore_latest(template)
  finally:
    checkpointer.close()
  if restored is None:
    raise ValueError(f"no checkpoint in {ckpt_dir}")
  state, counters = restored
  return config, state.params, int(counters.get("learner_steps", state.step))


def film(config, network, policy, params, key, path: str, max_frames: int, fps: int) -> dict:
  """One episode rendered to an MP4 or animated GIF; returns its length and return."""
  import numpy as np
  from PIL import Image
  import envs
  from podmeta.acting import initial_state
  kwargs = dict(config.env_make_kwargs, render_mode="rgb_array")
  env = envs.make_env(config.env_id, kwargs, config.env_wrappers)
  try:
    obs, _ = env.reset(seed=_SEED.value)
    frame = env.render()
    if frame is None:
      raise ValueError(f"env {config.env_id!r} renders no rgb_array frames")
    frames, total, steps, done = [frame], 0.0, 0, False
    state = initial_state(network, 1)
    while not done and len(frames) < max_frames:
      action, _, state, key = policy(params, key, obs[None], np.array([steps == 0]), state)
      action = np.asarray(action)[0]
      obs, reward, terminated, truncated, _ = env.step(action.item() if action.ndim == 0
                                                       else action)
      total, steps, done = total + float(reward), steps + 1, terminated or truncated
      frames.append(env.render())
  finally:
    env.close()
  if path.endswith(".mp4"):
    import imageio
    # H.264 in yuv420p needs even sides; 2 keeps every env's frame unscaled
    # but an odd one (imageio's default of 16 would rescale most).
    with imageio.get_writer(path, fps=fps, codec="libx264", macro_block_size=2) as writer:
      for f in frames:
        writer.append_data(np.asarray(f, np.uint8))
  else:
    images = [Image.fromarray(np.asarray(f, np.uint8)) for f in frames]
    # Identical consecutive frames are merged by the GIF writer, their
    # durations added: the file's total duration is len(frames) / fps.
    images[0].save(path, save_all=True, append_images=images[1:], duration=1000 // fps, loop=0)
  return {"video": path, "video_frames": len(frames), "video_episode_steps": steps,
          "video_episode_return": total, "video_episode_complete": bool(done)}


def main(argv):
  if len(argv) != 2:
    _fail("usage: evaluate RUN_DIR [--episodes=N] [--video=FILE.mp4|FILE.gif]")
  run_dir = argv[1]
  if _EPISODES.value < 1:
    _fail(f"--episodes must be at least 1 (got {_EPISODES.value})")
  if _VIDEO.value is not None and not _VIDEO.value.endswith(_VIDEO_FORMATS):
    _fail(f"--video must name a .mp4 or .gif file (got {_VIDEO.value!r})")
  if _VIDEO_MAX_FRAMES.value < 1 or _VIDEO_FPS.value < 1:
    _fail("--video_max_frames and --video_fps must be at least 1")
  from podmeta.logging_setup import quiet_third_party_logs
  quiet_third_party_logs()
  import jax
  import numpy as np
  from podmeta import builder
  from podmeta.acting import make_policy
  from podmeta.evaluation import run_episodes
  try:
    config, params, step = load(run_dir)
  except ValueError as e:
    _fail(str(e))
  network = builder.make_network(config, builder.env_spec(config))
  policy = make_policy(network, greedy=_GREEDY.value)
  key = jax.random.PRNGKey(_SEED.value)
  env = builder.vector_env(config, _EPISODES.value, _SEED.value)
  try:
    returns = run_episodes(env, network, policy, params, key)
  finally:
    env.close()
  result = {"run_dir": run_dir, "learner_steps": step, "env_id": config.env_id,
            "greedy": _GREEDY.value, "episodes": len(returns),
            "return_mean": float(np.mean(returns)), "return_std": float(np.std(returns)),
            "returns": returns}
  if _VIDEO.value:
    try:
      result.update(film(config, network, policy, params, jax.random.fold_in(key, 1), _VIDEO.value,
                         _VIDEO_MAX_FRAMES.value, _VIDEO_FPS.value))
    except ValueError as e:
      _fail(str(e))
  print(json.dumps(result, indent=2))
  print(f"podmeta: {run_dir} at learner step {step}: return {result['return_mean']:.2f} "
        f"+- {result['return_std']:.2f} over {len(returns)} episodes"
        + (f"; video in {_VIDEO.value}" if _VIDEO.value else ""))


def run(argv=None) -> None:
  app.run(main, argv=argv)


if __name__ == "__main__":
  run()
