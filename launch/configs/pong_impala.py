"""IMPALA on Atari Pong with the deep ResNet torso (Espeholt et al. 2018, arXiv 1802.01561).

The paper's Atari settings where our config has the field: unrolls of 20,
batches of 32, RMSProp (learning rate 6e-4, decay 0.99, epsilon 0.01),
gradients clipped to norm 40, entropy cost 0.01, baseline cost 0.5, discount
0.99 and rewards clipped to [-1, 1] by the learner. Left out: the paper's
LSTM (the agent sees four stacked frames instead), its linear decay of the
learning rate to 0, its hundreds of actors. Preprocessing: `envs/atari.py`.

Budget: 50M env (agent) steps, 200M frames, the usual Atari budget of the
paper. Pong is the easy game: IMPALA-style agents typically climb from -21 to
near +21 well within it. Not tuned on, nor run to the end on, this machine:
on a CPU-only host the learner's deep torso is the bottleneck (README.md,
"Atari"), so a run of this budget needs a GPU learner.
"""

import dataclasses

import ml_collections

from envs import atari
from podmeta.config import Config


def atari_config(game: str, **overrides) -> Config:
  """The settings shared by the Atari configs."""
  values = dict(
      env_id=atari.env_id(game),
      num_actors=2,
      # One Reverb item (32 unrolls) per batch: fewer, larger Reverb calls.
      envs_per_actor=32,
      torso="impala_deep",
      hidden_sizes=(256,),
      shared_torso=True,
      unroll_length=20,
      batch_size=32,
      optimizer="rmsprop",
      learning_rate=6e-4,
      rmsprop_decay=0.99,
      optimizer_eps=0.01,
      max_grad_norm=40.0,
      entropy_cost=0.01,
      baseline_cost=0.5,
      discount=0.99,
      max_abs_reward=1.0,
      # An unroll of 21 stacked frames is 0.6 MB. When the learner is the
      # bottleneck (on CPU) the queue stays full and its length in batches
      # sets the policy lag: 4 batches, 75 MB.
      replay_max_size=128,
      min_replay_size=32,
      # Greedy Atari episodes can last the full 27,000 steps.
      eval_episodes=4,
      eval_every_seconds=600.0,
      checkpoint_every_seconds=60.0,
      log_every_seconds=30.0,
  )
  values.update(overrides)
  return Config(**values)


def get_config() -> ml_collections.ConfigDict:
  config = atari_config("Pong", max_env_steps=50_000_000)
  return ml_collections.ConfigDict(dataclasses.asdict(config))
