"""Metric loggers: CSV files, TensorBoard event files and terminal lines.

Every node writes to `<run_dir>/logs/<label>.csv` and `<run_dir>/tb/<label>/`.
Rows are dicts of scalars; a resumed run appends to the same files.
"""

import csv
import datetime
import numbers
import os
import sys
import time
from typing import Dict, List, Mapping, Optional, Sequence

from absl import logging
import numpy as np


def _scalars(row: Mapping) -> Dict[str, float]:
  out = {}
  for k, v in row.items():
    if isinstance(v, (numbers.Number, np.number)) or (isinstance(v, np.ndarray) and v.size == 1):
      out[k] = float(np.asarray(v))
  return out


class CSVLogger:
  """Appends rows to a CSV file; a new column rewrites the header once."""

  def __init__(self, path: str):
    self._path = path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    self._fields: List[str] = []
    if os.path.exists(path) and os.path.getsize(path) > 0:
      with open(path, newline="") as f:
        self._fields = next(csv.reader(f), [])

  def write(self, row: Mapping) -> None:
    row = _scalars(row)
    new = [k for k in row if k not in self._fields]
    if new:
      self._rewrite_with(self._fields + new)
    with open(self._path, "a", newline="") as f:
      csv.DictWriter(f, fieldnames=self._fields).writerow(row)

  def _rewrite_with(self, fields: List[str]) -> None:
    rows = []
    if os.path.exists(self._path) and self._fields:
      with open(self._path, newline="") as f:
        rows = list(csv.DictReader(f))
    tmp = self._path + ".tmp"
    with open(tmp, "w", newline="") as f:
      writer = csv.DictWriter(f, fieldnames=fields)
      writer.writeheader()
      writer.writerows(rows)
    os.replace(tmp, self._path)
    self._fields = fields

  def close(self) -> None:
    pass


class TensorBoardLogger:

  def __init__(self, logdir: str, step_key: str):
    from tensorboardX import SummaryWriter  # heavy import, only where used
    self._writer = SummaryWriter(logdir=logdir)
    self._step_key = step_key

  def write(self, row: Mapping) -> None:
    row = _scalars(row)
    step = int(row.get(self._step_key, 0))
    for k, v in row.items():
      if k != self._step_key:
        self._writer.add_scalar(k, v, global_step=step)
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


def _select(row: Mapping, patterns: List[str]) -> List[str]:
  """Keys of `row` in the order of `patterns`; a pattern ending in '/' is a group."""
  keys = []
  for p in patterns:
    keys.extend(k for k in row if (k.startswith(p) if p.endswith("/") else k == p))
  return keys


class TerminalLogger:
  """One absl INFO line per write, at most every `every_seconds`.

  `keys` picks and orders what is printed; one ending in '/' stands for every
  key that starts with it (e.g. "meta/").
  """

  def __init__(self, label: str, every_seconds: float = 0.0, keys: Optional[List[str]] = None):
    self._label = label
    self._every = every_seconds
    self._keys = keys
    self._last = 0.0
    # A bar where a person watches (the learner's own terminal); the same
    # numbers without it where output goes to a file (a local_mp node's log).
    self._bar = sys.stderr.isatty()

  def write(self, row: Mapping) -> None:
    now = time.monotonic()
    if now - self._last < self._every:
      return
    self._last = now
    row = _scalars(row)
    keys = _select(row, self._keys) if self._keys else list(row)
    head = ""
    if "progress" in keys:
      head = progress_text(row["progress"], row.get("eta_seconds"), self._bar) + " | "
      keys = [k for k in keys if k not in ("progress", "eta_seconds")]
    logging.info("[%s] %s%s", self._label, head,
                 " | ".join(f"{k}={_fmt(row[k])}" for k in keys))

  def close(self) -> None:
    pass


def progress_text(fraction: float, eta_seconds: Optional[float], bar: bool = False,
                  width: int = 20) -> str:
  """'47% ETA 0:00:31', with a bar '[#########-----------] ' in front when `bar`."""
  text = f"{100 * fraction:3.0f}%"
  if bar:
    filled = int(round(width * fraction))
    text = "[" + "#" * filled + "-" * (width - filled) + "] " + text
  if eta_seconds is not None:
    text += f" ETA {datetime.timedelta(seconds=int(round(eta_seconds)))}"
  return text


def _fmt(v: float) -> str:
  if float(v).is_integer() and abs(v) < 1e15:
    return f"{int(v):,}"
  return f"{v:.4g}"


class Logger:
  """Writes each row to all of its sinks."""

  def __init__(self, sinks):
    self._sinks = list(sinks)

  def write(self, row: Mapping) -> None:
    for sink in self._sinks:
      sink.write(row)

  def close(self) -> None:
    for sink in self._sinks:
      sink.close()


def make_logger(run_dir: Optional[str], label: str, step_key: str,
                terminal_every: Optional[float] = None,
                terminal_keys: Optional[List[str]] = None) -> Logger:
  """CSV + TensorBoard under run_dir (if given), plus optional terminal lines."""
  sinks = []
  if run_dir:
    sinks.append(CSVLogger(os.path.join(run_dir, "logs", f"{label}.csv")))
    sinks.append(TensorBoardLogger(os.path.join(run_dir, "tb", label), step_key))
  if terminal_every is not None:
    sinks.append(TerminalLogger(label, terminal_every, terminal_keys))
  return Logger(sinks)


def read_csv(path: str) -> Dict[str, np.ndarray]:
  """Columns of a logger CSV as float arrays (missing cells are NaN)."""
  if not os.path.exists(path):
    return {}
  with open(path, newline="") as f:
    rows = list(csv.DictReader(f))
  if not rows:
    return {}
  return {k: np.array([float(r[k]) if r.get(k) not in (None, "") else np.nan for r in rows])
          for k in rows[0]}


def first_row_at_least(log: Mapping[str, Sequence[float]], column: str,
                       target: float) -> Optional[int]:
  """Index of the first row of a log (`read_csv`'s columns, or lists of them)
  whose `column` is at least `target` (missing values never are); None if
  no row is or the column is absent."""
  if column not in log:
    return None
  hit = np.flatnonzero(np.nan_to_num(np.asarray(log[column], float), nan=-np.inf) >= target)
  return int(hit[0]) if len(hit) else None
