"""Benchmarks keep their finished runs across stops and settings changes."""

import json
import math

from benchmarks import runs


def test_saved_runs_are_kept_only_for_the_same_settings(tmp_path):
  path = str(tmp_path / "sub" / "bench.json")
  assert runs.load_matching(path, steps=10) == {"results": {}, "steps": 10}
  saved = {"results": {"a": [{"final_return": 1.0}]}, "steps": 10, "poor_scale": 0.1}
  runs.save(saved, path)
  assert runs.load_matching(path, steps=10, poor_scale=0.1) == saved
  assert runs.load_matching(path, steps=20, poor_scale=0.1) == {
      "results": {}, "steps": 20, "poor_scale": 0.1}
  # Another budget starts afresh in memory; the file stays as it was until a run finishes.
  with open(path) as f:
    assert json.load(f) == saved
  with open(path, "w") as f:
    f.write("{not json")
  assert runs.load_matching(path, steps=10) == {"results": {}, "steps": 10}


def test_first_crossing_is_the_env_steps_of_the_first_row_at_the_threshold():
  result = {"env_steps": [100, 200, 300, 400], "episode_return_mean": [10, 480, 470, 500]}
  assert runs.first_crossing(result, 475) == 200
  assert runs.first_crossing(result, 500) == 400
  assert math.isnan(runs.first_crossing(result, 501))
