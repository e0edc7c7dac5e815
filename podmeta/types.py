"""Types shared by the actors, the replay and the learner; no Reverb or TF here.

The trajectory schema is defined once (`Trajectory`, `trajectory_spec`) and
used by the writer (actors), the reader (learner) and the meta-learning ring
buffer, so that code which only does math imports neither Reverb nor
TensorFlow.
"""

import math
from typing import NamedTuple, Sequence

import numpy as np

# The name of the learner's pmap axis (podmeta.learning.AXIS).
DEVICE_AXIS = "devices"


class Trajectory(NamedTuple):
  """One unroll (leading axis T+1), or a batch of them ([B, T+1, ...]).

  At step t: `observation` x_t; `reward` and `discount` (0 if x_t is a terminal
  observation, else 1) arrived with x_t; `is_first` marks x_t as an episode's
  first observation; `action` a_t was taken at x_t with `behaviour_logits`
  (the acting policy's distribution parameters: logits, or a Gaussian's mean
  and log std);
  `policy_version` is the learner step of the parameters that chose a_t.
  `core_state` has one entry per unroll, not per step (time axis of length
  1): a recurrent network's state before x_0, from which the learner unrolls
  it; a feed-forward network stores one ignored zero.
  """
  observation: np.ndarray
  action: np.ndarray
  reward: np.ndarray
  discount: np.ndarray
  is_first: np.ndarray
  behaviour_logits: np.ndarray
  policy_version: np.ndarray
  core_state: np.ndarray


class Spec(NamedTuple):
  shape: tuple
  dtype: np.dtype


def trajectory_spec(obs_shape: Sequence[int], obs_dtype, num_actions: int,
                    unroll_length: int, group: int = 1, continuous: bool = False,
                    state_size: int = 0) -> Trajectory:
  """Shapes and dtypes of one replay item: `group` unrolls of T+1 steps, time-major.

  Discrete actions are int32 with `num_actions` logits; continuous ones are
  float32 vectors of `num_actions` dimensions with a Gaussian's mean and log
  std (2 x num_actions) in `behaviour_logits`.
  """
  n = (unroll_length + 1, group)
  if continuous:
    action, num_params = Spec(n + (num_actions,), np.dtype(np.float32)), 2 * num_actions
  else:
    action, num_params = Spec(n, np.dtype(np.int32)), num_actions
  return Trajectory(
      observation=Spec(n + tuple(obs_shape), np.dtype(obs_dtype)),
      action=action,
      reward=Spec(n, np.dtype(np.float32)),
      discount=Spec(n, np.dtype(np.float32)),
      is_first=Spec(n, np.dtype(np.bool_)),
      behaviour_logits=Spec(n + (num_params,), np.dtype(np.float32)),
      policy_version=Spec(n, np.dtype(np.int32)),
      core_state=Spec((1, group, core_state_width(state_size)), np.dtype(np.float32)),
  )


def core_state_width(state_size: int) -> int:
  """Width of a stored core state: the network's, or one ignored zero for a feed-forward one."""
  return max(state_size, 1)


def per_unroll(spec: Spec) -> bool:
  """Whether a field holds one entry per unroll (core_state) rather than one per step."""
  return spec.shape[0] == 1


def zeros_batch(spec: Trajectory, batch_size: int) -> Trajectory:
  """A batch-major [batch_size, T+1, ...] batch of zeros for an item spec (time-major)."""
  return Trajectory(*[np.zeros((batch_size, s.shape[0]) + tuple(s.shape[2:]), s.dtype)
                      for s in spec])


def unrolls_per_item(envs_per_actor: int, batch_size: int) -> int:
  """The largest group of an actor's envs that also divides the batch size."""
  return math.gcd(envs_per_actor, batch_size)
