"""The `podmeta` command (installed by pyproject.toml): `podmeta train ...`, `podmeta evaluate ...`.

The same as `python -m launch.train` and `python -m launch.evaluate`, with the
same flags.
"""

import sys

_USAGE = """usage: podmeta COMMAND [flags]

commands:
  train      train (python -m launch.train): podmeta train --config=launch/configs/cartpole_impala.py
  evaluate   evaluate a run's newest checkpoint: podmeta evaluate RUN_DIR [--episodes=N] [--video=F.gif]

podmeta COMMAND --help lists a command's flags."""


def main() -> None:
  if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help", "help"):
    print(_USAGE)
    sys.exit(0 if len(sys.argv) >= 2 else 2)
  command, rest = sys.argv[1], sys.argv[2:]
  # The commands read sys.argv themselves (absl; a pod host re-runs its own).
  sys.argv = [f"podmeta {command}", *rest]
  if command == "train":
    from launch import train  # pylint: disable=g-import-not-at-top
    train.run()
  elif command == "evaluate":
    from launch import evaluate  # pylint: disable=g-import-not-at-top
    evaluate.run()
  else:
    print(f"podmeta: error: unknown command {command!r} (train, evaluate)", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  main()
