"""Atari 2600 games (ALE, through ale-py) with the standard agent-side preprocessing.

The protocol of Machado et al. 2018, "Revisiting the Arcade Learning
Environment" (arXiv 1709.06009), with the frame processing of DQN (Mnih et al.
2015) and IMPALA (Espeholt et al. 2018, arXiv 1802.01561):

  * sticky actions: the emulator repeats the previous action with probability
    0.25 on every frame (ALE v5's default; ALE itself applies it, so it holds
    inside the frame skip too);
  * frame skip 4: an agent action lasts four emulator frames, rewards summed;
    the observation is the pixel-wise max of the last two, since some games
    draw sprites only on alternate frames;
  * greyscale (ALE's palette), resized to 84x84 by area averaging: OpenCV's
    INTER_AREA, which gymnasium's AtariPreprocessing and EnvPool use, written
    out in numpy (`area_resize`; OpenCV is not a dependency here), so the
    EnvPool backend (`envs.envpool_env`) gives the same pixels;
  * the last four processed frames stacked on the channel axis, newest last:
    observations are uint8 [84, 84, 4], as podmeta's conv torsos expect;
  * up to 30 no-op actions after each reset, for varied start states;
  * the minimal action set; life loss is not a terminal by default (Machado
    et al. advise against it);
  * episodes truncated at 27,000 agent steps (108,000 frames, 30 minutes of
    play).

Rewards are the raw game score: clipping to [-1, 1] belongs to the learner
(`Config.max_abs_reward`), so the episode returns actors log are game scores.

`register()` adds `podmeta/<Game>-v0` for every ROM ale-py ships, e.g.
"podmeta/Pong-v0", "podmeta/Breakout-v0", "podmeta/MsPacman-v0".
"""

import collections
from typing import NamedTuple, Optional

import gymnasium as gym
import numpy as np

ENV_ID_PREFIX = "podmeta/"
ENV_ID_SUFFIX = "-v0"
FRAME_SKIP = 4
SCREEN_SIZE = 84
STACK = 4
NOOP_MAX = 30
REPEAT_ACTION_PROBABILITY = 0.25
MAX_EPISODE_STEPS = 27_000  # agent steps: 108,000 emulator frames


def game_name(game: str) -> str:
  """ALE's PascalCase name of a game given in PascalCase ("MsPacman") or as a ROM id ("ms_pacman")."""
  if "_" in game or game.islower():
    return game.title().replace("_", "")
  return game


def env_id(game: str) -> str:
  """The podmeta id of an ALE game, e.g. env_id("pong") == "podmeta/Pong-v0"."""
  return f"{ENV_ID_PREFIX}{game_name(game)}{ENV_ID_SUFFIX}"


class _AreaTaps(NamedTuple):
  """A 1-D area resize: output pixel i is sum_k weight[i, k] * input[index[i, k]]."""
  index: np.ndarray   # [size_out, taps] source pixels
  weight: np.ndarray  # [size_out, taps] the share of output pixel i each covers


def _area_taps(size_in: int, size_out: int) -> _AreaTaps:
  """Output pixel i covers the source interval [i * s, (i + 1) * s), s = size_in / size_out;
  each source pixel weighs the length of its overlap with it, over s."""
  scale = size_in / size_out
  taps = int(np.ceil(scale)) + 1
  index = np.zeros((size_out, taps), np.intp)
  weight = np.zeros((size_out, taps), np.float32)
  for i in range(size_out):
    lo, hi = i * scale, (i + 1) * scale
    for k, j in enumerate(range(int(np.floor(lo)), min(int(np.ceil(hi)), size_in))):
      index[i, k] = j
      weight[i, k] = (min(hi, j + 1) - max(lo, j)) / scale
  return _AreaTaps(index, weight)


def area_resize(frame: np.ndarray, rows: _AreaTaps, cols: _AreaTaps) -> np.ndarray:
  """A uint8 [H, W] frame resized by area averaging, as OpenCV's INTER_AREA does
  for a non-integer scale: columns first, in float32, rounded half to even.
  The same order and rounding make it pixel-exact against OpenCV (EnvPool)."""
  across = (frame[:, cols.index] * cols.weight).sum(-1, dtype=np.float32)
  down = (across[rows.index] * rows.weight[:, :, None]).sum(1)
  return np.rint(down).astype(np.uint8)


class AtariPreprocessing(gym.Wrapper):
  """Frame skip with max-pooling, greyscale 84x84, no-op reset, optional episodic life.

  Wraps an ALE env created with frameskip=1 and obs_type="grayscale", so that
  the skipping happens here and the max-pool sees the frames in between.
  Observations are uint8 [84, 84].

  With `terminal_on_life_loss`, losing a life terminates the episode but the
  next reset continues the same game (DQN's "episodic life"), so the agent
  still sees the later lives; the returns the actors log are then per life.
  """

  def __init__(self, env: gym.Env, frame_skip: int = FRAME_SKIP, screen_size: int = SCREEN_SIZE,
               noop_max: int = NOOP_MAX, terminal_on_life_loss: bool = False):
    super().__init__(env)
    if frame_skip < 1:
      raise ValueError(f"frame_skip must be at least 1, got {frame_skip}")
    if getattr(env.unwrapped, "_frameskip", None) != 1:
      raise ValueError("the ALE env must be made with frameskip=1: this wrapper skips frames")
    if noop_max > 0 and env.unwrapped.get_action_meanings()[0] != "NOOP":
      raise ValueError("no-op resets need action 0 to be NOOP")
    self._frame_skip = frame_skip
    self._noop_max = noop_max
    self._terminal_on_life_loss = terminal_on_life_loss
    self._lives = 0
    # Whether the last step ended an episode by a life loss alone.
    self._life_lost = False
    self.observation_space = gym.spaces.Box(0, 255, (screen_size, screen_size), np.uint8)
    height, width = env.observation_space.shape[:2]
    self._taps = (_area_taps(height, screen_size), _area_taps(width, screen_size))

  def _resize(self, frame: np.ndarray) -> np.ndarray:
    return area_resize(frame, *self._taps)

  def reset(self, *, seed: Optional[int] = None, options=None):
    if self._life_lost and seed is None:
      # A life was lost, not the game: carry on from where it stopped. (After
      # a truncation by the outer TimeLimit the flag is off, so the game restarts.)
      self._life_lost = False
      frame, _, terminated, truncated, info = self.env.step(0)
      if not (terminated or truncated):
        self._lives = self.env.unwrapped.ale.lives()
        return self._resize(frame), info
    self._life_lost = False
    frame, info = self.env.reset(seed=seed, options=options)
    noops = self.env.unwrapped.np_random.integers(1, self._noop_max + 1) if self._noop_max else 0
    for _ in range(noops):
      frame, _, terminated, truncated, info = self.env.step(0)
      if terminated or truncated:
        frame, info = self.env.reset(options=options)
    self._lives = self.env.unwrapped.ale.lives()
    return self._resize(frame), info

  def step(self, action):
    total_reward = 0.0
    previous = frame = None
    terminated = truncated = False
    info = {}
    for _ in range(self._frame_skip):
      previous = frame
      frame, reward, terminated, truncated, info = self.env.step(action)
      total_reward += reward
      if terminated or truncated:
        break
    if self._terminal_on_life_loss:
      lives = self.env.unwrapped.ale.lives()
      self._life_lost = lives < self._lives and not (terminated or truncated)
      terminated = terminated or self._life_lost
      self._lives = lives
    if previous is not None:
      frame = np.maximum(frame, previous)
    return self._resize(frame), total_reward, terminated, truncated, info


class FrameStack(gym.ObservationWrapper):
  """The last `num_frames` observations stacked on a new last axis, newest last.

  After a reset every slot holds the first frame.
  """

  def __init__(self, env: gym.Env, num_frames: int = STACK):
    super().__init__(env)
    space = env.observation_space
    self._frames = collections.deque(maxlen=num_frames)
    self.observation_space = gym.spaces.Box(0, 255, space.shape + (num_frames,), space.dtype)

  def reset(self, *, seed: Optional[int] = None, options=None):
    frame, info = self.env.reset(seed=seed, options=options)
    self._frames.extend([frame] * self._frames.maxlen)
    return np.stack(self._frames, axis=-1), info

  def observation(self, frame):
    # One pass over the output; shifting a channels-last array in place costs 4x.
    self._frames.append(frame)
    return np.stack(self._frames, axis=-1)


def make_env(game: str, terminal_on_life_loss: bool = False, noop_max: int = NOOP_MAX,
             repeat_action_probability: float = REPEAT_ACTION_PROBABILITY,
             full_action_space: bool = False, render_mode: Optional[str] = None) -> gym.Env:
  """The preprocessed env of one ALE game ("Pong", snake_case "ms_pacman" also works).

  The gymnasium entry point of the registered ids; `gym.make` adds the time limit.
  """
  register()
  # ALE's own frame cap is switched off: the TimeLimit, in agent steps, is the
  # one truncation, and ALE's would also count the no-op frames.
  env = gym.make(f"ALE/{game_name(game)}-v5", frameskip=1, obs_type="grayscale",
                 repeat_action_probability=repeat_action_probability,
                 full_action_space=full_action_space, max_num_frames_per_episode=None,
                 render_mode=render_mode)
  env = AtariPreprocessing(env, noop_max=noop_max, terminal_on_life_loss=terminal_on_life_loss)
  return FrameStack(env)


def register() -> None:
  """Registers `podmeta/<Game>-v0` for every ALE ROM; safe to call any number of times."""
  if env_id("Pong") in gym.registry:
    return
  import ale_py  # importing it registers the ALE/* ids the entry point builds on
  gym.register_envs(ale_py)
  # Otherwise every emulator prints ALE's banner to stderr, in every node.
  ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
  from ale_py import roms
  for rom in roms.get_all_rom_ids():
    if f"ALE/{game_name(rom)}-v5" not in gym.registry:
      continue  # a ROM with only a multi-player game
    gym.register(id=env_id(rom), entry_point="envs.atari:make_env",
                 max_episode_steps=MAX_EPISODE_STEPS, kwargs={"game": rom})
