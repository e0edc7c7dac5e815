r"""Actor scaling: end-to-end env steps/s for 1 to 64 actors in local_mp, in one run.

  python -m benchmarks.actor_scaling            # `make bench-actors`

Actors are packed `actors_per_node` to a process (threads), so 64 actors run in
at most `--processes` actor processes (default: one per CPU core). Each count is
a real launch (`launch.train`, a `max_seconds` budget); its rate is the
learner's env-step counter after a warm-up, reported beside the raw vector-env
rate measured in the same run (see BENCHMARKS.md for why ratios).
Writes benchmarks/results/actor_scaling.{json,png} and the table in BENCHMARKS.md.
"""

import json
import math
import os
import platform
import time

from absl import app
from absl import flags
from absl import logging

from benchmarks import markdown
from benchmarks import throughput

_COUNTS = flags.DEFINE_list("counts", ["1", "2", "4", "8", "16", "32", "64"], "Actor counts.")
_PROCESSES = flags.DEFINE_integer("processes", os.cpu_count(),
                                  "At most this many actor processes.")

BEGIN, END = "<!-- actor_scaling:begin -->", "<!-- actor_scaling:end -->"


def main(argv):
  del argv
  config = throughput.load_config()
  raw_before = throughput.raw_env_rate(config)
  rows = []
  for n in (int(c) for c in _COUNTS.value):
    per_node = math.ceil(n / min(n, _PROCESSES.value))
    nodes = math.ceil(n / per_node)
    logging.info("%d actors: %d per process, %d processes", n, per_node, nodes)
    rate, _ = throughput.end_to_end_rate(n, "local_mp", throughput._SECONDS.value,
                                      throughput._WARMUP.value,
                                      [f"--config.actors_per_node={per_node}",
                                       "--config.eval_episodes=0"])
    rows.append({"actors": n, "actors_per_process": per_node, "actor_processes": nodes,
                 "env_steps_per_second": rate})
    logging.info("%d actors: %.0f env steps/s", n, rate)
  raw = max(raw_before, throughput.raw_env_rate(config))
  for r in rows:
    r["ratio_to_raw"] = r["env_steps_per_second"] / raw
  results = {"raw_env_steps_per_second": raw, "rows": rows, "config": throughput._CONFIG.value,
             "envs_per_actor": config.envs_per_actor, "cores": os.cpu_count(),
             "machine": platform.machine(), "date": time.strftime("%Y-%m-%d"),
             "seconds": throughput._SECONDS.value, "warmup": throughput._WARMUP.value}
  os.makedirs(throughput._OUT.value, exist_ok=True)
  with open(os.path.join(throughput._OUT.value, "actor_scaling.json"), "w") as f:
    json.dump(results, f, indent=2)
  plot_path = os.path.join(throughput._OUT.value, "actor_scaling.png")
  _plot(results, plot_path)
  _write_table(results, plot_path)


def _plot(results, path):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  rows = results["rows"]
  fig, ax = plt.subplots(figsize=(7, 4))
  ax.plot([r["actors"] for r in rows], [r["env_steps_per_second"] for r in rows], "o-",
          label="end to end (local_mp)")
  ax.axhline(results["raw_env_steps_per_second"], color="k", ls="--", lw=0.8,
             label="raw vector env, one core")
  ax.set_xscale("log", base=2)
  ax.set_xlabel("actors")
  ax.set_ylabel("env steps / s")
  ax.set_title(f"Actor scaling, {results['cores']} cores")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _write_table(results, plot_path):
  lines = [f"Measured {results['date']} on {results['cores']} cores, {results['machine']}, with "
           f"`python -m benchmarks.actor_scaling` (config `{results['config']}`, "
           f"{results['envs_per_actor']} envs per actor, {results['seconds']:.0f} s runs, "
           f"{results['warmup']:.0f} s warm-up). Raw vector env: "
           f"{results['raw_env_steps_per_second']:,.0f} steps/s.", "",
           "| actors | actors per process | actor processes | env steps/s | ratio to raw |",
           "|---:|---:|---:|---:|---:|"]
  for r in results["rows"]:
    lines.append(f"| {r['actors']} | {r['actors_per_process']} | {r['actor_processes']} | "
                 f"{r['env_steps_per_second']:,.0f} | {r['ratio_to_raw']:.2f} |")
  table = throughput._MARKDOWN.value
  # The image's path is relative to the file that shows it.
  image = os.path.relpath(plot_path, os.path.dirname(os.path.abspath(table)))
  lines += ["", f"![actor scaling]({image})"]
  markdown.replace_block(table, BEGIN, END, "\n".join(lines), title="Benchmarks",
                         heading="## Actor scaling (CartPole-v1, local_mp)\n\n")


if __name__ == "__main__":
  app.run(main)
