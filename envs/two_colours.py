"""The non-stationary "two colours" grid world of the BMG paper.

Flennerhag et al. 2021, "Bootstrapped Meta-Learning" (arXiv 2109.04504), and
Luketina et al. 2022, "Meta-Gradients in Non-Stationary Environments". A 5x5
grid holds the agent, a blue item and a red item. Stepping onto an item
collects it, paying +1 if its colour is currently the rewarding one and -1
otherwise, "after which the agent and two objects are randomly re-spawned"
(Luketina et al., Sec. 4): three distinct uniformly random cells, the default
`respawn="all"`. `respawn="item"` (an option, what this env did before) moves
only the collected item, to a uniformly random free cell. Which colour
pays swaps every `swap_every` steps of the environment's lifetime, so a good
policy must keep re-learning which item to chase: the env tests how fast an
agent (and its meta-learned hyperparameters) adapts to non-stationarity.

Conventions: a position is (x, y) with x the column and y the row, y = 0 at
the top; actions are 0 up (y - 1), 1 right, 2 down, 3 left, and a move into a
wall leaves the agent in place. The observation is a float32 vector of 30, the
one-hot x (5) and one-hot y (5) of the agent, the blue item and the red item,
in that order. The lifetime step counter is never reset: the colour that pays
on a step is `positive_colour(step count before the step)`, 0 blue, 1 red.
The task is one continuing stream; the registered gymnasium env is cut into
episodes of `MAX_EPISODE_STEPS` by truncation only so that evaluators' episodes
end, and `reset` re-draws positions but keeps the lifetime counter.

Two implementations with identical dynamics (tests/test_two_colours.py checks
they agree step for step, bar the random respawn cells):
  * pure JAX functions (`reset`, `step`, `observation`) on `TwoColoursState`,
    for jit / vmap / lax.scan; `size`, `swap_every` and `respawn` must be
    static (pass them through functools.partial or static_argnames under jit);
  * `TwoColoursEnv`, a numpy gymnasium env for the actors' vector envs.
"""

from typing import NamedTuple, Optional, Tuple

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np

ENV_ID = "podmeta/TwoColours-v0"
SIZE = 5
SWAP_EVERY = 100_000
MAX_EPISODE_STEPS = 1000
NUM_ACTIONS = 4
BLUE, RED = 0, 1
RESPAWNS = ("all", "item")

# (dx, dy) per action: up, right, down, left.
_MOVES = ((0, -1), (1, 0), (0, 1), (-1, 0))


def positive_colour(step, swap_every: int = SWAP_EVERY):
  """The colour (0 blue, 1 red) that pays +1 on the step taken at `step`.

  Works on Python ints, numpy and JAX integers alike.
  """
  return (step // swap_every) % 2


def obs_size(size: int = SIZE) -> int:
  return 3 * 2 * size


# --------------------------------------------------------------------- JAX --


class TwoColoursState(NamedTuple):
  agent: jax.Array  # int32[2], (x, y).
  items: jax.Array  # int32[2, 2], row BLUE then row RED, each (x, y).
  step: jax.Array  # int32[], lifetime step counter.


def _cells(cell: jax.Array, size: int) -> jax.Array:
  """Flat cell indices (y * size + x) to (x, y) positions."""
  return jnp.stack([cell % size, cell // size], axis=-1).astype(jnp.int32)


def observation(state: TwoColoursState, size: int = SIZE) -> jax.Array:
  positions = jnp.concatenate([state.agent[None], state.items], axis=0)  # [3, 2]
  return jax.nn.one_hot(positions, size, dtype=jnp.float32).reshape(-1)


def reset(key: jax.Array, size: int = SIZE) -> Tuple[TwoColoursState, jax.Array]:
  """Three distinct uniformly random cells for agent, blue and red; step 0.

  To re-draw positions mid-stream without restarting the colour schedule, keep
  the old counter: `state._replace(step=old_state.step)`.
  """
  cells = jax.random.choice(key, size * size, shape=(3,), replace=False)
  positions = _cells(cells, size)
  state = TwoColoursState(agent=positions[0], items=positions[1:],
                          step=jnp.zeros((), jnp.int32))
  return state, observation(state, size)


def step(state: TwoColoursState, action: jax.Array, key: jax.Array, size: int = SIZE,
         swap_every: int = SWAP_EVERY, respawn: str = "all", step_reward: float = 0.0
         ) -> Tuple[TwoColoursState, jax.Array, jax.Array]:
  """One transition; returns (next state, next observation, float32 reward).

  `step_reward` is paid on every step that collects nothing: 0 in Luketina
  et al. 2022 (the default); -0.04 in another description of the domain
  (an ablation, RESULTS.md).

  `action` must be in [0, 4); JAX clamps out-of-range indices rather than
  raising. `key` is only used for the respawn after a collection.
  """
  colour = positive_colour(state.step, swap_every)
  move = jnp.asarray(_MOVES, jnp.int32)[action]
  agent = jnp.clip(state.agent + move, 0, size - 1)
  # Items never share a cell with each other or the agent, so at most one hits.
  hit = jnp.all(state.items == agent[None], axis=-1)  # [2]
  sign = jnp.where(jnp.arange(2) == colour, 1.0, -1.0)
  reward = jnp.where(jnp.any(hit), jnp.sum(jnp.where(hit, sign, 0.0)),
                     step_reward).astype(jnp.float32)

  if respawn == "all":
    cells = _cells(jax.random.choice(key, size * size, shape=(3,), replace=False), size)
    collected = jnp.any(hit)
    next_state = TwoColoursState(agent=jnp.where(collected, cells[0], agent),
                                 items=jnp.where(collected, cells[1:], state.items),
                                 step=state.step + 1)
    return next_state, observation(next_state, size), reward
  if respawn != "item":
    raise ValueError(f"respawn must be one of {RESPAWNS}, got {respawn!r}")
  # The collected item's old cell is the agent's new one, so masking the agent
  # and the items not collected leaves exactly the free cells.
  grid = _cells(jnp.arange(size * size), size)  # [cells, 2]
  on_agent = jnp.all(grid == agent, axis=-1)
  on_item = jnp.all(grid[:, None] == state.items[None], axis=-1) & ~hit[None]  # [cells, 2]
  free = ~on_agent & ~jnp.any(on_item, axis=-1)
  cell = jax.random.categorical(key, jnp.where(free, 0.0, -jnp.inf))
  items = jnp.where(hit[:, None], _cells(cell, size)[None], state.items)

  next_state = TwoColoursState(agent=agent, items=items, step=state.step + 1)
  return next_state, observation(next_state, size), reward


# ------------------------------------------------------------------- numpy --


def _np_observation(agent: np.ndarray, items: np.ndarray, size: int) -> np.ndarray:
  obs = np.zeros((3, 2, size), np.float32)
  positions = np.concatenate([agent[None], items], axis=0)
  obs[np.arange(3)[:, None], np.arange(2)[None], positions] = 1.0
  return obs.reshape(-1)


class TwoColoursEnv(gym.Env):
  """The numpy gymnasium version; same dynamics as `step` above.

  State attributes: `agent` int[2], `items` int[2, 2] (blue, red), each (x, y),
  and `lifetime_step`, which `reset` keeps so the colour schedule runs across
  episodes. Never terminates; the registration adds truncation.
  """

  metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
  _CELL = 16  # pixels per cell of a rendered frame

  def __init__(self, size: int = SIZE, swap_every: int = SWAP_EVERY, respawn: str = "all",
               render_mode: Optional[str] = None, step_reward: float = 0.0):
    if render_mode not in (None, "rgb_array"):
      raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
    self.render_mode = render_mode
    if respawn not in RESPAWNS:
      raise ValueError(f"respawn must be one of {RESPAWNS}, got {respawn!r}")
    if size < 2:
      raise ValueError(f"size must be >= 2 to fit three entities, got {size}")
    if swap_every < 1:
      raise ValueError(f"swap_every must be >= 1, got {swap_every}")
    self.size = size
    self.swap_every = swap_every
    self.step_reward = float(step_reward)
    self.respawn = respawn
    self.action_space = gym.spaces.Discrete(NUM_ACTIONS)
    self.observation_space = gym.spaces.Box(0.0, 1.0, (obs_size(size),), np.float32)
    self.agent = np.zeros(2, np.int64)
    self.items = np.zeros((2, 2), np.int64)
    self.lifetime_step = 0

  def render(self) -> np.ndarray:
    """uint8 [size * 16, size * 16, 3]: the agent white, the items blue and red,
    the item worth +1 now outlined in yellow."""
    frame = np.full((self.size, self.size, 3), 40, np.uint8)
    frame[self.items[BLUE][1], self.items[BLUE][0]] = (40, 90, 230)
    frame[self.items[RED][1], self.items[RED][0]] = (220, 50, 50)
    frame[self.agent[1], self.agent[0]] = (240, 240, 240)
    frame = frame.repeat(self._CELL, 0).repeat(self._CELL, 1)
    x, y = self.items[positive_colour(self.lifetime_step, self.swap_every)] * self._CELL
    c = self._CELL
    frame[y:y + c, [x, x + c - 1]] = frame[[y, y + c - 1], x:x + c] = (250, 220, 40)
    return frame

  def set_state(self, agent, items, lifetime_step: int) -> None:
    """Places the entities and sets the counter (tests, scripted runs)."""
    agent = np.array(agent, np.int64).reshape(2)
    items = np.array(items, np.int64).reshape(2, 2)
    positions = np.concatenate([agent[None], items], axis=0)
    if positions.min() < 0 or positions.max() >= self.size:
      raise ValueError(f"positions outside the {self.size}x{self.size} grid: {positions.tolist()}")
    if len({tuple(p) for p in positions.tolist()}) != 3:
      raise ValueError(f"agent and items must be on distinct cells: {positions.tolist()}")
    self.agent, self.items, self.lifetime_step = agent, items, int(lifetime_step)

  def _obs(self) -> np.ndarray:
    return _np_observation(self.agent, self.items, self.size)

  def _place_all(self) -> None:
    cells = self.np_random.choice(self.size * self.size, size=3, replace=False)
    positions = np.stack([cells % self.size, cells // self.size], axis=-1).astype(np.int64)
    self.agent, self.items = positions[0], positions[1:]

  def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
    super().reset(seed=seed)
    self._place_all()
    return self._obs(), {"positive_colour": positive_colour(self.lifetime_step, self.swap_every)}

  def step(self, action):
    if not self.action_space.contains(action):
      raise ValueError(f"invalid action {action!r} for {self.action_space}")
    colour = positive_colour(self.lifetime_step, self.swap_every)
    self.agent = np.clip(self.agent + np.array(_MOVES[int(action)]), 0, self.size - 1)
    reward = self.step_reward
    for i in (BLUE, RED):
      if np.array_equal(self.items[i], self.agent):
        reward = 1.0 if i == colour else -1.0
        if self.respawn == "all":
          self._place_all()
          break
        taken = {tuple(self.agent.tolist()), tuple(self.items[1 - i].tolist())}
        free = [c for c in range(self.size * self.size)
                if (c % self.size, c // self.size) not in taken]
        cell = free[self.np_random.integers(len(free))]
        self.items = self.items.copy()
        self.items[i] = (cell % self.size, cell // self.size)
        break  # Items never share a cell, so at most one is collected.
    self.lifetime_step += 1
    return self._obs(), reward, False, False, {"positive_colour": colour}


def register() -> None:
  """Registers `ENV_ID` with gymnasium; safe to call any number of times."""
  if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point="envs.two_colours:TwoColoursEnv",
                 max_episode_steps=MAX_EPISODE_STEPS, kwargs={"swap_every": SWAP_EVERY})
