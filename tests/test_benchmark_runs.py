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


def test_the_actor_scaling_benchmark_writes_its_json_and_table(tmp_path):
  """`make bench-actors` end to end, on one count and short runs: a real local_mp
  launch, its rate beside the raw env rate of the same run, the table written."""
  import sys
  from tests import helpers
  # Its markers, not imported: the benchmark's flags would clash with other
  # benchmark modules' in this process.
  table = tmp_path / "BENCH.md"
  table.write_text("# Benchmarks\n\n<!-- actor_scaling:begin -->\nold\n"
                   "<!-- actor_scaling:end -->\n")
  code, out, left = helpers.run(
      [sys.executable, "-m", "benchmarks.actor_scaling", "--counts=1", "--seconds=16",
       "--warmup=4", f"--out={tmp_path}", f"--markdown={table}"],
      timeout=400, env_overrides={"XLA_FLAGS": "--xla_force_host_platform_device_count=1"})
  assert code == 0 and not left, out[-3000:]
  with open(tmp_path / "actor_scaling.json") as f:
    results = json.load(f)
  (row,) = results["rows"]
  assert (row["actors"], row["actors_per_process"], row["actor_processes"]) == (1, 1, 1)
  assert row["env_steps_per_second"] > 0 and results["raw_env_steps_per_second"] > 0
  assert math.isclose(row["ratio_to_raw"],
                      row["env_steps_per_second"] / results["raw_env_steps_per_second"])
  text = table.read_text()
  assert "old" not in text and "| 1 | 1 | 1 |" in text
  assert (tmp_path / "actor_scaling.png").stat().st_size > 0
