"""What a node's process imports: each imports what it runs (start-up time)."""

import json
import subprocess
import sys

_HEAVY = ("tensorflow", "reverb", "rlax", "orbax.checkpoint", "podmeta.learning", "matplotlib")

# Builds one node the way its local_mp process does (through podmeta.builder),
# with a stand-in for the learner's courier handle, and prints which of the
# heavy modules got imported.
_BUILD_NODE = """
import json, sys
import jax, numpy as np
from podmeta import builder
from podmeta.config import Config

config = Config(envs_per_actor=4, batch_size=4, replay_max_size=64, min_replay_size=4)
spec = builder.env_spec(config)
params = builder.make_network(config, spec).init(
    jax.random.PRNGKey(0), np.zeros((1,) + spec.obs_shape, spec.obs_dtype))

class Learner:
  def get_variables(self):
    return 0, params
  def report_eval(self, *args, **kwargs):
    pass
  def report_actor(self, *args, **kwargs):
    pass

if sys.argv[1] == "evaluator":
  builder.build_evaluator(config, None, Learner())
else:
  import reverb
  server = reverb.Server(builder.make_tables(config, spec), port=None)
  builder.build_actor(config, 0, None, reverb.Client(f"localhost:{server.port}"), Learner())
print(json.dumps([m for m in %r if m in sys.modules]))
""" % (_HEAVY,)


def _imported_by(node: str):
  out = subprocess.run([sys.executable, "-c", _BUILD_NODE, node], capture_output=True,
                       text=True, timeout=300, check=True).stdout
  return json.loads(out.strip().splitlines()[-1])


def test_the_evaluator_imports_neither_tensorflow_nor_the_learner():
  assert _imported_by("evaluator") == []


def test_an_actor_imports_reverb_but_not_the_learner():
  assert _imported_by("actor") == ["tensorflow", "reverb"]
