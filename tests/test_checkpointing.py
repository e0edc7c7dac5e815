"""Checkpoints: a repeated save of a step keeps its newest counters; the state is written once."""

import json
import os

import numpy as np

from podmeta import checkpointing


def _state(value):
  return {"w": np.full((3,), value, np.float32), "step": np.asarray(int(value), np.int32)}


def test_a_second_save_of_the_same_step_keeps_the_newer_counters(tmp_path):
  ckpt = checkpointing.Checkpointer(str(tmp_path / "ckpt"))
  ckpt.save(5, _state(5), {"env_steps": 100})
  # The final save: no learner step since, but the actors kept counting.
  ckpt.save(5, _state(5), {"env_steps": 160})
  ckpt.close()
  reopened = checkpointing.Checkpointer(str(tmp_path / "ckpt"))
  assert reopened.latest_step() == 5
  state, counters = reopened.restore_latest(_state(0))
  np.testing.assert_array_equal(state["w"], _state(5)["w"])
  assert counters == {"env_steps": 160}

  # A newer step brings its own counters; the side file of an older step is
  # never applied to it.
  reopened.save(7, _state(7), {"env_steps": 200})
  with open(os.path.join(reopened.directory, "latest_counters.json"), "w") as f:
    json.dump({"step": 5, "counters": {"env_steps": 999}}, f)
  state, counters = reopened.restore_latest(_state(0))
  np.testing.assert_array_equal(state["w"], _state(7)["w"])
  assert counters == {"env_steps": 200}
  assert sorted(int(d) for d in os.listdir(reopened.directory) if d.isdigit()) == [5, 7]
