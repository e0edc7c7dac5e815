"""Checkpoints: a repeated save of a step keeps its newest counters; the state is written once."""

import json
import os

import numpy as np
import pytest

from podmeta import checkpointing


def _state(value):
  return {"w": np.full((3,), value, np.float32), "step": np.asarray(int(value), np.int32)}


def test_a_second_save_of_the_same_step_keeps_the_newer_counters(tmp_path):
  ckpt = checkpointing.Checkpointer(str(tmp_path / "ckpt"))
  ckpt.save(5, _state(5), {"env_steps": 100})
  # The final save: no learner step since, but the actors kept counting. The
  # state of a step is written once: a second one (here made different, so
  # that a rewrite would show) leaves the first in place.
  ckpt.save(5, _state(6), {"env_steps": 160})
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


def _damage(step_dir, how):
  for root, _, files in os.walk(os.path.join(step_dir, "state")):
    for name in files:
      if name.startswith("_"):
        continue
      path = os.path.join(root, name)
      if how == "truncate":
        with open(path, "r+b") as f:
          f.truncate(max(os.path.getsize(path) // 3, 1))
      else:
        with open(path, "wb") as f:
          f.write(b"\x00garbage")


@pytest.mark.parametrize("how", ["truncate", "garbage"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, how, caplog):
  ckpt = checkpointing.Checkpointer(str(tmp_path / "ckpt"))
  ckpt.save(5, _state(5), {"env_steps": 100})
  ckpt.save(7, _state(7), {"env_steps": 200})
  ckpt.close()
  _damage(os.path.join(str(tmp_path / "ckpt"), "7"), how)
  reopened = checkpointing.Checkpointer(str(tmp_path / "ckpt"))
  with caplog.at_level("WARNING"):
    state, counters = reopened.restore_latest(_state(0))
  np.testing.assert_array_equal(state["w"], _state(5)["w"])
  assert counters == {"env_steps": 100}
  assert "resumed from checkpoint step 5" in caplog.text and "7" in caplog.text
  # Kept, not deleted, and out of the way of the resumed run's next saves.
  assert os.path.isdir(os.path.join(reopened.directory, "corrupt-7"))
  assert reopened.latest_step() == 5
  reopened.save(6, _state(6), {"env_steps": 150})
  state, counters = reopened.restore_latest(_state(0))
  np.testing.assert_array_equal(state["w"], _state(6)["w"])
  assert counters == {"env_steps": 150}


def test_no_readable_checkpoint_raises_and_moves_nothing(tmp_path):
  ckpt = checkpointing.Checkpointer(str(tmp_path / "ckpt"))
  ckpt.save(3, _state(3), {"env_steps": 10})
  _damage(os.path.join(ckpt.directory, "3"), "garbage")
  with pytest.raises(checkpointing.CheckpointError, match="unreadable checkpoint"):
    ckpt.restore_latest(_state(0))
  assert os.path.isdir(os.path.join(ckpt.directory, "3"))


def test_a_read_only_reader_falls_back_past_a_damaged_checkpoint_and_changes_nothing(tmp_path):
  """preflight (every host of a pod) and `evaluate` read beside the run: they
  skip an unreadable newest checkpoint as the learner does, but leave it in
  place for the learner to set aside, and never create or write anything."""
  directory = str(tmp_path / "ckpt")
  with pytest.raises(checkpointing.CheckpointError, match="no checkpoint directory"):
    checkpointing.Checkpointer(directory, read_only=True)
  assert not os.path.exists(directory)
  ckpt = checkpointing.Checkpointer(directory)
  ckpt.save(5, _state(5), {"env_steps": 100})
  ckpt.save(7, _state(7), {"env_steps": 200})
  ckpt.close()
  _damage(os.path.join(directory, "7"), "garbage")
  before = sorted(os.listdir(directory))
  reader = checkpointing.Checkpointer(directory, read_only=True)
  state, counters = reader.restore_latest(_state(0))
  np.testing.assert_array_equal(state["w"], _state(5)["w"])
  assert counters == {"env_steps": 100}
  with pytest.raises(checkpointing.CheckpointError, match="read-only"):
    reader.save(8, _state(8), {"env_steps": 300})
  reader.close()
  assert sorted(os.listdir(directory)) == before
  # The learner's own restore then sets the damaged one aside.
  learner = checkpointing.Checkpointer(directory)
  assert learner.restore_latest(_state(0))[1] == {"env_steps": 100}
  assert "corrupt-7" in os.listdir(directory)
