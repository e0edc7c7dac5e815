"""IMPALA on Atari Breakout with the deep ResNet torso (Espeholt et al. 2018, arXiv 1802.01561).

The same agent as `pong_impala.py` (the paper's Atari settings; see there),
with a budget of 200M env (agent) steps, i.e. 800M frames, four times the
paper's usual 200M frames: Breakout learns far more slowly than Pong and keeps
improving long after the first returns of a few tens. Not tuned on, nor run
to the end on, this machine: on a CPU-only host the learner's deep torso is
the bottleneck.
"""

import dataclasses

import ml_collections

from launch.configs.pong_impala import atari_config


def get_config() -> ml_collections.ConfigDict:
  config = atari_config("Breakout", max_env_steps=200_000_000)
  return ml_collections.ConfigDict(dataclasses.asdict(config))
