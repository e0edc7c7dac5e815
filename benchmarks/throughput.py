r"""Throughput benchmark: where does an env step's time go?

Measures, in one run on this machine, for each env backend (gymnasium's
Python envs, EnvPool's C++ envs):
  (a) the raw step rate of the actors' vector env with random actions,
  (b) one actor's rate: env + jitted policy + Reverb writes (in-process server),
  (c) the learner's consumption rate: env steps/s through the pmapped update alone,
  (d) end-to-end env steps/s of the whole program for several actor counts and
      both local launch modes (steady state, from the learner's log), and with
      the policy evaluated on an acting device (`inference=accelerator`: actor
      threads in the learner's process, here on 2 forced CPU devices, one for
      acting and one for learning: the code path an accelerator runs).
And for an Atari config, per backend, in a process pinned to one core: (a),
(b) with the deep torso on the CPU and (b) with it on the learner's device
(`inference=accelerator`'s code path: parameters device to device, here a CPU
device), and the learner's updates/s on its batch.
Writes benchmarks/results/throughput.{json,png} and the table in
BENCHMARKS.md (between its markers).

  python -m benchmarks.throughput --num_actors=1,2,4 --seconds=40
  python -m benchmarks.throughput --backends=envpool --modes=local_mp
  python -m benchmarks.throughput --atari_only   # into the last run's table
"""

import json
import os
import platform
import subprocess
import sys
import threading
import time

from absl import app
from absl import flags
import numpy as np

from benchmarks import markdown
from benchmarks import runs

_CONFIG = flags.DEFINE_string("config", "launch/configs/cartpole_impala.py",
                              "Config of the gymnasium rows and of (c).")
_ENVPOOL_CONFIG = flags.DEFINE_string(
    "envpool_config", "launch/configs/cartpole_envpool.py",
    "Config of the EnvPool rows: its lean shape (many envs per actor, large batches); "
    "'' runs them on --config with env_backend=envpool.")
_NUM_ACTORS = flags.DEFINE_list("num_actors", ["1", "2", "4"], "Actor counts for (d).")
_MODES = flags.DEFINE_list("modes", ["local_mt", "local_mp"], "Launch modes for (d).")
_BACKENDS = flags.DEFINE_list("backends", ["gymnasium", "envpool"], "Env backends (a, b, d).")
_ATARI_CONFIG = flags.DEFINE_string(
    "atari_config", "launch/configs/pong_impala.py",
    "Config of the Atari rows ((a), (b) with the policy on the CPU and on the learner's "
    "device, per backend, and the learner's updates/s for its batch); '' leaves them out.")
_ATARI_ENVS = flags.DEFINE_integer("atari_envs_per_actor", 8, "Envs per actor in the Atari rows.")
_ATARI_ONLY = flags.DEFINE_bool(
    "atari_only", False, "Measure only the Atari rows, into the last run's throughput.json.")
_INFERENCE = flags.DEFINE_list("inference", ["cpu", "accelerator"],
                               "Where the policy runs in (d); accelerator runs local_mp only.")
_SECONDS = flags.DEFINE_float("seconds", 40.0, "Length of each end-to-end run.")
_WARMUP = flags.DEFINE_float("warmup", 12.0, "Seconds of each run ignored (start-up, compile).")
_OUT = flags.DEFINE_string("out", "benchmarks/results", "Directory for the JSON and the plot.")
_MARKDOWN = flags.DEFINE_string("markdown", "BENCHMARKS.md", "File whose table is replaced.")

BEGIN, END = "<!-- throughput:begin -->", "<!-- throughput:end -->"
_STARTUP_MARKS = ("learner_built", "first_batch", "first_learner_step")


def load_config(path=None):
  import importlib.util
  from podmeta.config import Config
  spec = importlib.util.spec_from_file_location("bench_config",
                                                os.path.join(runs.REPO, path or _CONFIG.value))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return Config.from_mapping(module.get_config().to_dict())


def raw_env_rate(config, seconds=3.0, repeats=3):
  """Best of `repeats` windows: other load on a shared machine only lowers a rate,
  and a low (a) would inflate every ratio to it."""
  from podmeta import builder
  env = builder.vector_env(config, config.envs_per_actor, seed=0)
  rng = np.random.default_rng(0)
  n = env.num_envs
  num_actions = env.single_action_space.n
  rates = []
  for _ in range(repeats):
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
      for _ in range(50):
        env.step(rng.integers(0, num_actions, n))
      steps += 50 * n
    rates.append(steps / (time.perf_counter() - start))
  return max(rates)


def actor_rate(config, seconds=8.0, on_device=False):
  """One actor's env steps/s, its policy on the CPU or (`on_device`) on the
  learner's device with parameters read there (OnDeviceVariables)."""
  import jax
  import reverb
  import envs
  from podmeta import builder
  from podmeta import learning
  from podmeta import replay as replay_lib
  from podmeta.acting import Actor
  spec = envs.env_spec(config.env_id, backend=config.env_backend)
  # A table large enough that the actor never waits for a learner.
  config = config.replace(replay_max_size=10_000_000)
  server = reverb.Server(builder.make_tables(config, spec), port=None)
  client = reverb.Client(f"localhost:{server.port}")
  learner = builder.make_learner(config, spec, devices=jax.devices()[:1])
  stop = threading.Event()
  actor = Actor(env=builder.vector_env(config, config.envs_per_actor, seed=0),
                network=builder.make_network(config, spec),
                variable_source=learning.OnDeviceVariables(learner) if on_device else learner,
                writer=replay_lib.UnrollWriter(client, builder.make_spec(config, spec),
                                               config.envs_per_actor),
                key=jax.random.PRNGKey(0),
                variable_update_period=config.variable_update_period, stop_event=stop,
                device=learner.devices[0] if on_device else None)
  result = {}

  def go():
    result["steps"] = actor.run()

  thread = threading.Thread(target=go)
  thread.start()
  time.sleep(2.0)  # compile and warm up
  before = time.perf_counter()
  size0 = client.server_info()[replay_lib.TABLE].current_size
  time.sleep(seconds)
  size1 = client.server_info()[replay_lib.TABLE].current_size
  elapsed = time.perf_counter() - before
  stop.set()
  thread.join()
  server.stop()
  # Table sizes count items of `unrolls_per_item` unrolls of T new env steps.
  return (size1 - size0) * builder.unrolls_per_item(config) * config.unroll_length / elapsed


def learner_rate(config, seconds=5.0, steps_per_sync=20):
  import jax
  import envs
  from podmeta import builder
  from podmeta.replay import per_device
  from tests.helpers import random_batch
  spec = envs.env_spec(config.env_id)
  learner = builder.make_learner(config, spec)
  batch = random_batch(spec, config.batch_size, config.unroll_length, seed=0)
  sharded = jax.device_put_sharded(per_device(batch, learner.num_devices), learner.devices)
  for _ in range(min(5, steps_per_sync)):
    jax.block_until_ready(learner.step(sharded))
  steps, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    for _ in range(steps_per_sync):
      metrics = learner.step(sharded)
    jax.block_until_ready(metrics)
    steps += steps_per_sync
  elapsed = time.perf_counter() - start
  return steps * config.batch_size * config.unroll_length / elapsed, learner.num_devices


# inference=accelerator in (d): the policy on device 1, the learner on device 0.
_ON_DEVICE = ["--config.inference=accelerator", "--config.actor_device_ids=(1,)",
              "--config.learner_device_ids=(0,)"]


def backend_config(backend):
  """(config path, Config) of a backend's rows."""
  path = _ENVPOOL_CONFIG.value if backend == "envpool" and _ENVPOOL_CONFIG.value else _CONFIG.value
  return path, load_config(path).replace(env_backend=backend)


def end_to_end_rate(num_actors, mode, seconds, warmup, extra_args=(), devices=1, config=None):
  """Env steps/s of a real launch (of `config`, a path; default --config), from
  the learner's log after `warmup` seconds, and its start-up (the summary's
  seconds from process start to the learner's milestones)."""
  run = runs.train([f"--config={config or _CONFIG.value}", f"--num_actors={num_actors}",
                    f"--lp_launch_type={mode}", "--config.max_env_steps=0",
                    f"--config.max_seconds={seconds}", "--config.log_every_seconds=2",
                    *extra_args], timeout=seconds + 240, devices=devices)
  t, steps = run.log["wall_seconds"], run.log["env_steps"]
  ok = t >= warmup
  if ok.sum() < 2:
    raise RuntimeError(f"{mode} x{num_actors}: too few log rows after warm-up")
  t, steps = t[ok], steps[ok]
  return (float((steps[-1] - steps[0]) / (t[-1] - t[0])),
          run.summary.get("startup_seconds") or {})


def atari_rows(config):
  """Per core (the caller pins this process to one): per backend the Atari env
  alone and one actor with the deep torso on the CPU and on the learner's
  device; the learner's updates/s on the config's batch."""
  config = config.replace(envs_per_actor=_ATARI_ENVS.value)
  print(f"{config.env_id}: (c) learner ...", flush=True)
  rate, devices = learner_rate(config, seconds=20.0, steps_per_sync=1)
  backends = {}
  for backend in _BACKENDS.value:
    cfg = config.replace(env_backend=backend)
    print(f"{config.env_id}, {backend}: (a) raw vector env, (b) one actor ...", flush=True)
    backends[backend] = {
        "raw_env_steps_per_second": raw_env_rate(cfg, seconds=5.0, repeats=2),
        "actor_env_steps_per_second": actor_rate(cfg, seconds=20.0),
        "actor_on_device_env_steps_per_second": actor_rate(cfg, seconds=20.0, on_device=True)}
  return {"date": time.strftime("%Y-%m-%d"), "config": _ATARI_CONFIG.value, "env_id": config.env_id,
          "envs_per_actor": config.envs_per_actor, "backends": backends,
          "learner_updates_per_second": rate / (config.batch_size * config.unroll_length),
          "learner_devices": devices, "batch_size": config.batch_size,
          "unroll_length": config.unroll_length}


def pin_to_one_core() -> int:
  """Pins this process (before JAX or EnvPool start their threads, which inherit
  it) to one core, so that the Atari rows are rates per core."""
  core = min(os.sched_getaffinity(0))
  os.sched_setaffinity(0, {core})
  return core


def _keep_previous_rows(results):
  """A run of some backends keeps the last run's rows of the others (dated),
  so that `--backends=envpool` does not drop the gymnasium rows, and the
  last Atari rows until its --atari_only process replaces them."""
  path = os.path.join(_OUT.value, "throughput.json")
  if not os.path.exists(path):
    return
  with open(path) as f:
    previous = json.load(f)
  for backend, rows in previous.get("backends", {}).items():
    if backend not in results["backends"]:
      rows.setdefault("date", previous.get("date"))
      rows.setdefault("config", previous.get("config"))
      rows.setdefault("envs_per_actor", previous.get("envs_per_actor"))
      rows.setdefault("batch_size", previous.get("batch_size"))
      results["backends"][backend] = rows
  if "atari" not in results and "atari" in previous:
    results["atari"] = previous["atari"]  # measured by its own --atari_only process


def write_outputs(results):
  os.makedirs(_OUT.value, exist_ok=True)
  with open(os.path.join(_OUT.value, "throughput.json"), "w") as f:
    json.dump(results, f, indent=2)
  _plot(results, os.path.join(_OUT.value, "throughput.png"))
  lines = [
      f"Measured {results['date']} on {results['machine']} with "
      f"`{results['command']}`, unrolls of {results['unroll_length']}. Each backend runs "
      f"its own config: " + "; ".join(
          f"{b} ({r['date']}): `{r['config']}`, {r['envs_per_actor']} envs per actor, "
          f"batches of {r['batch_size']}" for b, r in results["backends"].items())
      + ". Ratios are to the same backend's (a), at its envs per actor; (c) is "
      f"`{results['config']}`'s batch.",
      "",
      "| backend | what | env steps/s | ratio to (a) | start-up s: learner built / first "
      "batch / first update |",
      "|---|---|---:|---:|---|",
  ]
  for backend, rows in results["backends"].items():
    raw = rows["raw_env_steps_per_second"]
    lines += [
        f"| {backend} | (a) raw vector env, random actions | {raw:,.0f} | 1.00 | |",
        f"| {backend} | (b) one actor: env + jitted policy + Reverb writes "
        f"| {rows['actor_env_steps_per_second']:,.0f} "
        f"| {rows['actor_env_steps_per_second'] / raw:.2f} | |"]
    for row in rows["end_to_end"]:
      marks = row.get("startup_seconds") or {}
      startup = " / ".join(f"{marks[k]:.1f}" if k in marks else "-" for k in _STARTUP_MARKS)
      where = (", policy on an acting device (actor threads in the learner's process)"
               if row.get("inference") == "accelerator" else "")
      lines.append(f"| {backend} | (d) end to end, {row['mode']}{where}, {row['num_actors']} actor(s) "
                   f"| {row['env_steps_per_second']:,.0f} | {row['env_steps_per_second'] / raw:.2f} "
                   f"| {startup} |")
  lines.append(f"| | (c) learner alone: pmapped update on {results['learner_devices']} device(s) "
               f"| {results['learner_env_steps_per_second']:,.0f} | | |")
  atari = results.get("atari")
  if atari and "backends" in atari:
    lines += [
        "", f"Atari (measured {atari.get('date', 'before dates were kept')} by `make bench`'s "
        f"`--atari_only` process; `{atari['config']}`, {atari['env_id']}, "
        f"{atari['envs_per_actor']} envs per actor; one process pinned to one core):", "",
        "| backend | what | rate | ratio to (a) |", "|---|---|---:|---:|"]
    for backend, rows in atari["backends"].items():
      raw = rows["raw_env_steps_per_second"]
      lines += [
          f"| {backend} | (a) raw vector env, random actions | {raw:,.0f} env steps/s | 1.00 |",
          f"| {backend} | (b) one actor, the deep torso on the CPU | "
          f"{rows['actor_env_steps_per_second']:,.0f} env steps/s | "
          f"{rows['actor_env_steps_per_second'] / raw:.2f} |",
          f"| {backend} | (b) one actor, the deep torso on the learner's (CPU) device, "
          f"parameters device to device | {rows['actor_on_device_env_steps_per_second']:,.0f} "
          f"env steps/s | {rows['actor_on_device_env_steps_per_second'] / raw:.2f} |"]
    lines.append(
        f"| | (c) learner: pmapped update on {atari['learner_devices']} CPU device(s), batches "
        f"of {atari['batch_size']} x {atari['unroll_length']} | "
        f"{atari['learner_updates_per_second']:.2f} updates/s | |")
  lines += ["", "Start-up counts from the launcher's process start; the runs share JAX's "
            "persistent compilation cache (`--compilation_cache_dir`), so all but the first "
            "of a shape load their compiled programs."]
  lines += ["", "![throughput](benchmarks/results/throughput.png)"]
  markdown.replace_block(_MARKDOWN.value, BEGIN, END, "\n".join(lines), title="Benchmarks")


def _plot(results, path):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, len(results["backends"]), figsize=(6 * len(results["backends"]), 4),
                           squeeze=False)
  for ax, (backend, rows) in zip(axes[0], results["backends"].items()):
    kinds = sorted({(r["mode"], r.get("inference", "cpu")) for r in rows["end_to_end"]})
    for mode, inference in kinds:
      line = [r for r in rows["end_to_end"]
              if (r["mode"], r.get("inference", "cpu")) == (mode, inference)]
      label = mode if inference == "cpu" else f"{mode}, policy on an acting device"
      ax.plot([r["num_actors"] for r in line], [r["env_steps_per_second"] for r in line], "o-",
              label=f"end to end ({label})")
    ax.axhline(rows["raw_env_steps_per_second"], color="gray", ls="--", label="(a) raw env")
    ax.axhline(rows["raw_env_steps_per_second"] / 2, color="gray", ls=":", label="half of (a)")
    ax.axhline(rows["actor_env_steps_per_second"], color="tab:green", ls="--",
               label="(b) one actor")
    ax.set_xlabel("actors")
    ax.set_ylabel("env steps / s")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{backend} ({results['machine']})")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def main(argv):
  del argv
  from podmeta.logging_setup import quiet_third_party_logs
  quiet_third_party_logs()
  if _ATARI_ONLY.value:
    print(f"Atari rows pinned to core {pin_to_one_core()}", flush=True)
    with open(os.path.join(_OUT.value, "throughput.json")) as f:
      results = json.load(f)
    results["atari"] = atari_rows(load_config(_ATARI_CONFIG.value))
    write_outputs(results)
    print(json.dumps(results["atari"], indent=2))
    return
  config = load_config()
  results = {
      "date": time.strftime("%Y-%m-%d"),
      "machine": f"{os.cpu_count()} cores, {platform.machine()}",
      "command": "make bench  # python -m benchmarks.throughput " + " ".join(sys.argv[1:]),
      "config": _CONFIG.value, "envs_per_actor": config.envs_per_actor,
      "unroll_length": config.unroll_length, "batch_size": config.batch_size,
  }
  print("(c) learner alone ...", flush=True)
  rate, devices = learner_rate(config)
  results["learner_env_steps_per_second"], results["learner_devices"] = rate, devices
  results["backends"] = {}
  for backend in _BACKENDS.value:
    path, cfg = backend_config(backend)
    rows = results["backends"][backend] = {
        "config": path, "envs_per_actor": cfg.envs_per_actor, "batch_size": cfg.batch_size,
        "date": results["date"]}
    print(f"{backend}: (a) raw vector env ...", flush=True)
    rows["raw_env_steps_per_second"] = raw_env_rate(cfg)
    print(f"{backend}: (b) one actor ...", flush=True)
    rows["actor_env_steps_per_second"] = actor_rate(cfg)
    rows["end_to_end"] = []
    launches = [(mode, "cpu") for mode in _MODES.value if "cpu" in _INFERENCE.value]
    launches += [("local_mp", "accelerator")] if "accelerator" in _INFERENCE.value else []
    for mode, inference in launches:
      for n in [int(x) for x in _NUM_ACTORS.value]:
        print(f"{backend}: (d) {mode}, {inference} inference, {n} actor(s) ...", flush=True)
        on_device = inference == "accelerator"
        rate, startup = end_to_end_rate(
            n, mode, _SECONDS.value, _WARMUP.value,
            [f"--config.env_backend={backend}", *(_ON_DEVICE if on_device else [])],
            devices=2 if on_device else 1, config=path)
        rows["end_to_end"].append({"mode": mode, "inference": inference, "num_actors": n,
                                   "env_steps_per_second": rate, "startup_seconds": startup})
    # (a) again at the end, so a busy moment at the start cannot set the baseline.
    rows["raw_env_steps_per_second"] = max(rows["raw_env_steps_per_second"], raw_env_rate(cfg))
  _keep_previous_rows(results)
  write_outputs(results)
  print(json.dumps(results, indent=2))
  if _ATARI_CONFIG.value:
    # In a process of their own, pinned to one core from its start.
    subprocess.run([sys.executable, "-m", "benchmarks.throughput", "--atari_only",
                    f"--atari_config={_ATARI_CONFIG.value}",
                    f"--atari_envs_per_actor={_ATARI_ENVS.value}",
                    f"--backends={','.join(_BACKENDS.value)}", f"--out={_OUT.value}",
                    f"--markdown={_MARKDOWN.value}"], cwd=runs.REPO, check=True)
  print(f"wrote {_MARKDOWN.value} and {_OUT.value}/throughput.{{json,png}}")


if __name__ == "__main__":
  app.run(main)
