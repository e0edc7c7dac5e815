r"""Trains podmeta: flags -> Config -> Launchpad program -> launch.

  python -m launch.train --config=launch/configs/cartpole_impala.py \
      --num_actors=4 --lp_launch_type=local_mt --run_dir=runs/cartpole \
      --config.unroll_length=40

Any config field can be overridden with --config.<field>=<value>. Re-running
with the same --run_dir resumes from its latest checkpoint.
"""

import json
import os
import sys
import time

from absl import app
from absl import flags
from absl import logging
import launchpad as lp  # defines --lp_launch_type and --lp_termination_notice_secs
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", "launch/configs/cartpole_impala.py", "Path to a config file (get_config()).",
    lock_config=True)
_NUM_ACTORS = flags.DEFINE_integer("num_actors", None, "Number of actors (overrides the config).")
_RUN_DIR = flags.DEFINE_string("run_dir", None,
                               "Run directory (default: runs/<config>-<time>). Reused to resume.")


def _fail(message: str) -> None:
  print(f"podmeta: error: {message}", file=sys.stderr)
  sys.exit(2)


def main(argv):
  if len(argv) > 1:
    _fail(f"unexpected arguments: {' '.join(argv[1:])}")
  from podmeta import builder
  from podmeta.config import Config
  from podmeta.logging_setup import quiet_third_party_logs

  quiet_third_party_logs()

  try:
    values = _CONFIG.value.to_dict()
    if _NUM_ACTORS.value is not None:
      values["num_actors"] = _NUM_ACTORS.value
    config = Config.from_mapping(values)
    run_dir = _RUN_DIR.value or os.path.join(
        "runs", f"{os.path.splitext(os.path.basename(config_flags.get_config_filename(FLAGS['config'])))[0]}"
                f"-{time.strftime('%Y%m%d-%H%M%S')}")
    run_dir = os.path.abspath(run_dir)
    builder.preflight(config, run_dir)
  except ValueError as e:
    _fail(str(e))

  launch_type = FLAGS.lp_launch_type or "local_mt"
  if launch_type not in ("local_mt", "local_mp"):
    _fail(f"--lp_launch_type={launch_type} is not supported (use local_mt or local_mp)")
  builder.write_config(config, run_dir)
  logging.info("run directory: %s", run_dir)
  program = builder.make_program(config, run_dir)
  kwargs = {"terminal": "current_terminal"} if launch_type == "local_mp" else {}
  manager = lp.launch(program, launch_type=launch_type, **kwargs)
  manager.wait()
  summary_path = os.path.join(run_dir, "summary.json")
  if os.path.exists(summary_path):
    with open(summary_path) as f:
      summary = json.load(f)
    print(json.dumps(summary, indent=2))
  print(f"podmeta: run finished; results in {run_dir}")


FLAGS = flags.FLAGS

if __name__ == "__main__":
  app.run(main)
