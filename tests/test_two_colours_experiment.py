"""The grid-world experiment's JAX agent: it learns, and its report is written.

The agent is the distributed learner's own update function run under
jit/vmap with the JAX-native env (benchmarks/two_colours.py).
"""

import os

import numpy as np

from benchmarks import two_colours as experiment


def test_jax_agent_learns_the_two_colours_grid_world():
  methods = experiment.methods()
  result = experiment.run_method("fixed_0.1", methods["fixed_0.1"], steps=100_000, seeds=2,
                                 log_every=10_000, swap_every=1_000_000)
  reward = np.asarray(result["reward"]) / result["point_steps"]  # [seed, point] per step
  assert reward.shape == (2, 10)
  # A random policy earns 0 per step in expectation (both colours are equally
  # likely to be met); a learner chasing the rewarding colour earns well above.
  assert np.all(reward[:, -5:].mean(axis=1) > 0.08), reward
  assert np.all(reward[:, -5:].mean(axis=1) > reward[:, 0] + 0.05), reward


def test_meta_methods_run_and_the_report_is_written(tmp_path):
  methods = experiment.methods()
  results = {}
  for name in ("fixed_0.2", "mg_ctx", "bmg"):
    results[name] = experiment.run_method(name, methods[name], steps=4_000, seeds=2,
                                          log_every=1_000, swap_every=2_000)
  for name in ("mg_ctx", "bmg"):
    cost = np.asarray(results[name]["entropy_cost"])
    assert cost.shape == (2, 4) and np.all(np.isfinite(cost))
    assert np.all((cost > 0) & (cost < 1))
    assert np.abs(cost - 0.1).max() > 1e-5  # the meta-gradient moved it from its initial value
  paths = experiment.plot(results, str(tmp_path), swap_every=2_000)
  assert [os.path.basename(p) for p in paths] == ["two_colours.png", "two_colours_entropy.png"]
  md = tmp_path / "RESULTS.md"
  md.write_text("# Results\n\nprose kept\n\n<!-- two_colours:begin -->\nold\n<!-- two_colours:end -->\n")
  experiment.update_results_md(str(md), experiment.table(results))
  text = md.read_text()
  assert "prose kept" in text and "old" not in text
  assert text.count("| BMG, L = 4 |") == 1 and "| MG + reward context |" in text
