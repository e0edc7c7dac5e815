"""A user's own environment, named module:EnvId, learnt by the command README gives."""

import os
import re
import shlex
import sys

from tests import helpers


def _readme_command():
  with open(os.path.join(helpers.REPO, "README.md")) as f:
    text = f.read()
  block = re.search(r"<!-- user-env-example -->\n```bash\n(.+?)\n```", text, re.S).group(1)
  words = shlex.split(block)
  env = dict(w.split("=", 1) for w in words[:1])
  assert words[1] == ".venv/bin/python", words
  return env, words[2:]


def test_the_readme_example_learns_a_user_env_from_its_own_package(tmp_path):
  env, args = _readme_command()
  assert env == {"PYTHONPATH": "examples"}
  run_dir = str(tmp_path / "corridor")
  args = [a if not a.startswith("--run_dir=") else f"--run_dir={run_dir}" for a in args]
  code, out, left = helpers.run([sys.executable, *args], timeout=300, env_overrides={
      **env, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"})
  assert code == 0, out[-5000:]
  assert not left
  s = helpers.summary(run_dir)
  # The best return is 1 - 0.01 * 7 = 0.93; a uniformly random policy
  # averages 0.37 (2,000 episodes), a greedy one that never turns right -1.
  assert s["episode_return_mean"] > 0.85, s
  assert s["eval_return_mean"] > 0.85, s
  assert s["env_steps"] >= 100_000
