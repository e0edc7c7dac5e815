"""Keeps the terminal readable: podmeta's own INFO lines, only warnings from libraries.

Orbax, JAX and Reverb log many INFO lines per checkpoint or compile through
absl; a filter on the absl handler drops those below WARNING. Called by the
launcher and by each node constructor (local_mp nodes are fresh processes).
"""

import logging as std_logging
import os

from absl import logging

_OWN_DIRS = tuple(os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep + d + os.sep
                  for d in ("podmeta", "launch", "envs", "benchmarks"))


class _OwnInfoFilter(std_logging.Filter):

  def filter(self, record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.WARNING or record.pathname.startswith(_OWN_DIRS)


def quiet_third_party_logs() -> None:
  handler = logging.get_absl_handler()
  if not any(isinstance(f, _OwnInfoFilter) for f in handler.filters):
    handler.addFilter(_OwnInfoFilter())
  # JAX logs through the standard logging tree too.
  std_logging.getLogger("jax").setLevel(std_logging.WARNING)
