"""The grid-world experiment: the JAX agent learns, the protocol resumes, the report is written.

The agent is the distributed learner's own update function run under
jit/vmap with the JAX-native env (benchmarks/two_colours_lib.py).
"""

import concurrent.futures
import json
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import psutil
import pytest

from benchmarks import two_colours_lib as lib
from benchmarks import two_colours_report as report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_jax_agent_learns_the_two_colours_grid_world():
  settings = [lib.Setting("fixed", entropy_cost=0.1)] * 2
  results = lib.run_lanes(settings, [0, 1], steps=100_000, log_every=10_000,
                          swap_every=1_000_000)
  reward = np.asarray([r["reward"] for r in results]) / results[0]["point_steps"]
  assert reward.shape == (2, 10)
  # A random policy earns 0 per step in expectation (both colours are equally
  # likely to be met); a learner chasing the rewarding colour earns well above.
  assert np.all(reward[:, -5:].mean(axis=1) > 0.08), reward
  assert np.all(reward[:, -5:].mean(axis=1) > reward[:, 0] + 0.05), reward


def test_lanes_share_one_program_and_each_lane_is_its_own_run():
  """Settings that differ in a vmapped value run as lanes of one program, and a
  lane's result does not depend on which other lanes ran beside it."""
  a = lib.Setting("mg_ctx", meta_lr=1e-3, k=1, outer_entropy=0.1)
  b = lib.Setting("mg_ctx", meta_lr=1e-5, k=1, outer_entropy=0.1)
  assert a.program == b.program and a.name != b.name
  together = lib.run_lanes([a, b], [0, 1], steps=2_000, log_every=1_000, swap_every=1_000)
  alone = lib.run_lanes([b], [1], steps=2_000, log_every=1_000, swap_every=1_000)
  np.testing.assert_allclose(together[1]["entropy_cost"], alone[0]["entropy_cost"], rtol=1e-4)
  np.testing.assert_allclose(together[1]["reward"], alone[0]["reward"])
  # The faster meta learning rate moved the entropy cost further from its start.
  start = lib.META["hyperparams"]["entropy_cost"]["init"]
  move = [np.max(np.abs(np.asarray(r["entropy_cost"]) - start)) for r in together]
  assert move[0] > 3 * move[1] and move[0] > 1e-3, move


def test_protocol_resumes_from_shards_and_partial_state_and_writes_the_report(tmp_path):
  out = str(tmp_path / "shards")
  settings = lib.grid("fixed")[:2]
  jobs = [("tune", s, seed, 4_096) for s in settings for seed in (0, 1)]
  # Stopped by its deadline before the end: the lanes' state is saved, no shard yet.
  assert not lib.run_jobs(jobs, out, 1_024, 2_048, save_every_seconds=1e9, deadline=0.0)
  assert not lib.load_shards(out, "tune")
  assert len(os.listdir(os.path.join(out, "_partial", "tune"))) == 1
  assert len(os.listdir(os.path.join(out, lib.RESUME_DIR, "tune"))) == 1
  assert lib.run_jobs(jobs, out, 1_024, 2_048, save_every_seconds=1e9, deadline=None)
  shards = lib.load_shards(out, "tune")
  assert len(shards) == 4 and not os.listdir(os.path.join(out, "_partial", "tune"))
  assert not os.listdir(os.path.join(out, lib.RESUME_DIR, "tune"))
  assert all(s["ring_refills"] == 0 for s in shards)
  assert all(len(s["reward"]) == 4 and s["env_steps"] == 4_096 for s in shards)
  # The resumed run equals one that was never stopped.
  fresh = lib.run_lanes([j[1] for j in jobs], [j[2] for j in jobs], 4_096, 1_024, 2_048)
  by_name = {(s["setting"], s["seed"]): s for s in shards}
  for r in fresh:
    np.testing.assert_allclose(by_name[(r["setting"], r["seed"])]["reward"], r["reward"])
  # Finished shards are not run again.
  path = lib.shard_path(out, "tune", settings[0], 0)
  before = os.path.getmtime(path)
  assert lib.run_jobs(jobs, out, 1_024, 2_048, save_every_seconds=1e9, deadline=None)
  assert os.path.getmtime(path) == before
  # A shard made with another agent configuration is neither reported nor kept.
  with open(path) as f:
    stale = json.load(f)
  with open(path, "w") as f:
    json.dump(dict(stale, agent="another-agent"), f)
  assert len(lib.load_shards(out, "tune")) == 3
  assert lib.run_jobs(jobs, out, 1_024, 2_048, save_every_seconds=1e9, deadline=None)
  assert len(lib.load_shards(out, "tune")) == 4
  with open(path) as f:
    assert json.load(f)["agent"] == lib.agent_digest()

  # A final shard per method for the report (two seeds each, so the CIs exist).
  for method, setting in (("fixed", settings[0]), ("bmg_ctx", lib.Setting("bmg_ctx", meta_lr=1e-4))):
    for seed, scale in ((100, 1.0), (101, 1.1)):
      shard = dict(by_name[(settings[0].name, 0)], setting=setting.name, method=method,
                   seed=seed)
      shard["reward"] = [r * scale + (5.0 if method == "bmg_ctx" else 0.0)
                         for r in shard["reward"]]
      path = lib.shard_path(out, "final", setting, seed)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with open(path, "w") as f:
        json.dump(shard, f)
  md = tmp_path / "RESULTS.md"
  md.write_text(f"# Results\n\nprose kept\n\n{report.BEGIN}\nold\n{report.END}\n")
  report.write(out, str(md))
  text = md.read_text()
  assert "prose kept" in text and "\nold\n" not in text
  assert "| best fixed entropy cost | `fixed-ec0` | 2 | 4,096 |" in text
  assert "| MG + reward context | (pending) |" in text
  assert "BMG + reward context vs best fixed entropy cost: Welch t" in text
  assert "| best fixed entropy cost | 2 of 5 | 2 x 4,096 |" in text
  assert os.path.exists(os.path.join(out, "final.png"))
  assert os.path.exists(os.path.join(out, "entropy_cost_swaps.png"))


def test_a_run_resumes_from_its_portable_state_after_refilling_the_meta_ring(tmp_path):
  """The committed state lacks the meta ring: a resume from it holds the
  meta-parameters for the K+L-1 learner steps that refill the ring (as at a
  run's start); a resume from the whole state equals a run never stopped."""
  setting, ring = lib.Setting("bmg", meta_lr=1e-2, k=1, l=3), 3
  steps, point = 16 * 8, 16  # one learner step per curve point
  fresh = lib.run_lanes([setting], [0], steps, point, 1_000)[0]
  whole, portable = str(tmp_path / "whole.pkl"), str(tmp_path / "resume" / "portable.pkl")

  def stop_after_one_point():
    assert lib.run_lanes([setting], [0], steps, point, 1_000, whole, 1e9, 0.0, portable) is None

  stop_after_one_point()
  assert os.path.getsize(portable) < os.path.getsize(whole) / 2
  # The interim report finds the saved curves under the setting's name.
  from benchmarks import two_colours_interim as interim
  saved = interim.load_lanes(str(tmp_path / "resume"))
  assert list(saved) == [setting.name] and saved[setting.name]["reward"].shape == (1, 1)
  resumed = lib.run_lanes([setting], [0], steps, point, 1_000, whole, 1e9, None, portable)[0]
  np.testing.assert_array_equal(resumed["entropy_cost"], fresh["entropy_cost"])
  assert resumed["ring_refills"] == 0
  # The caller discards the saved states only once it has stored the results.
  assert os.path.exists(whole) and os.path.exists(portable)
  lib.discard_saved(whole, portable)

  # The portable state got further than the whole one (the whole one is an
  # older copy): the resume takes the portable one and refills the ring.
  stop_after_one_point()
  older = open(whole, "rb").read()
  stop_after_one_point()
  with open(whole, "wb") as f:
    f.write(older)
  resumed = lib.run_lanes([setting], [0], steps, point, 1_000, whole, 1e9, None, portable)[0]
  assert resumed["ring_refills"] == 1 and len(resumed["reward"]) == 8
  assert resumed["reward"][:2] == fresh["reward"][:2]
  lib.discard_saved(whole, portable)

  stop_after_one_point()
  os.remove(whole)
  # A saved state resumes only a run with its curve points and swaps.
  before = open(portable, "rb").read()
  with pytest.raises(ValueError, match=r"portable.pkl was saved by a run with point_steps=16"):
    lib.run_lanes([setting], [0], steps, 2 * point, 1_000, whole, 1e9, None, portable)
  with pytest.raises(ValueError, match=r"swap_every=1000, this one has 2000"):
    lib.run_lanes([setting], [0], steps, point, 2_000, whole, 1e9, None, portable)
  assert open(portable, "rb").read() == before
  resumed = lib.run_lanes([setting], [0], steps, point, 1_000, whole, 1e9, None, portable)[0]
  assert resumed["ring_refills"] == 1 and len(resumed["reward"]) == 8
  start = lib.META["hyperparams"]["entropy_cost"]["init"]
  # A fresh run first moves its entropy cost once its ring is full (point
  # `ring`); the resumed one holds it through points 1..ring while refilling.
  assert np.all(np.asarray(fresh["entropy_cost"][:ring]) == start)
  assert fresh["entropy_cost"][ring] != start
  assert np.all(np.asarray(resumed["entropy_cost"][:ring + 1]) == start)
  assert resumed["entropy_cost"][ring + 1] != start
  # Acting before the stop is untouched.
  assert resumed["reward"][0] == fresh["reward"][0]


def test_sigterm_stops_the_protocol_with_its_state_saved_and_the_next_run_resumes(tmp_path):
  out = str(tmp_path / "shards")
  cmd = [sys.executable, "-m", "benchmarks.two_colours", "--phase=tune", "--methods=fixed",
         "--tune_seeds=1", "--tune_steps=20000", "--log_every=1000", "--workers=1",
         f"--out={out}", f"--partial_dir={tmp_path / 'whole'}",
         f"--results_md={tmp_path / 'RESULTS.md'}"]
  proc = subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.PIPE, text=True)
  seen = []
  for line in proc.stderr:  # the worker has its handlers once it names its program
    seen.append(line)
    if "tune: fixed, 5 lanes" in line:
      break
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode not in (0, None), "".join(seen) + err
  assert "stopped by a signal during the tune phase" in err.strip().splitlines()[-1]
  assert not lib.load_shards(out, "tune")
  assert len(os.listdir(os.path.join(out, lib.RESUME_DIR, "tune"))) == 1
  assert len(os.listdir(tmp_path / "whole" / "tune")) == 1
  assert out not in subprocess.run(["ps", "-eo", "args"], capture_output=True,
                                   text=True).stdout  # no worker left behind
  done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  assert "resuming" in done.stderr
  shards = lib.load_shards(out, "tune")
  assert len(shards) == 5 and all(len(s["reward"]) == 20 for s in shards)


@pytest.mark.parametrize("sig, says", [(signal.SIGTERM, "was stopped by a signal"),
                                       (signal.SIGKILL, "failed (killed by SIGKILL)")])
def test_a_worker_stopped_on_its_own_stops_the_run_with_an_error_naming_it(tmp_path, sig, says):
  """Not only a signal to the parent: a worker killed or stopped by itself
  ends the run at once with a non-zero exit naming it (never a deadline's
  "continue later" and exit 0), and the other worker saves its program."""
  out = str(tmp_path / "shards")
  # Five fixed lanes as programs of 3 and 2, one per worker.
  proc = subprocess.Popen(
      [sys.executable, "-m", "benchmarks.two_colours", "--phase=tune", "--methods=fixed",
       "--tune_seeds=1", "--tune_steps=2000000", "--log_every=1000", "--workers=2",
       "--max_lanes=3", f"--out={out}", f"--partial_dir={tmp_path / 'whole'}",
       f"--results_md={tmp_path / 'RESULTS.md'}"],
      cwd=REPO, stderr=subprocess.PIPE, text=True)
  seen = []
  for line in proc.stderr:  # both workers have their handlers once they name their program
    seen.append(line)
    if sum("tune: fixed, " in l for l in seen) == 2:
      break
  workers = {int(a.split("=")[1]): c for c in psutil.Process(proc.pid).children()
             for a in c.cmdline() if a.startswith("--worker_index=")}
  workers[1].send_signal(sig)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode not in (0, None), "".join(seen) + err
  assert f"tune worker 1 {says}" in err.strip().splitlines()[-1], err[-2000:]
  assert not lib.load_shards(out, "tune")
  saved = os.listdir(os.path.join(out, lib.RESUME_DIR, "tune"))
  assert len(saved) == (2 if sig == signal.SIGTERM else 1)  # SIGKILL: no save
  assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE
                 for p in workers.values())


def test_a_program_too_wide_for_max_lanes_runs_as_even_parts(tmp_path):
  assert [len(p) for p in lib.split_lanes(list(range(10)), 8)] == [5, 5]
  assert [len(p) for p in lib.split_lanes(list(range(7)), 3)] == [2, 2, 3]
  assert lib.split_lanes(list(range(10)), 0) == [list(range(10))]
  assert sum(lib.split_lanes(list(range(10)), 4), []) == list(range(10))
  # Three lanes as programs of one and two: each lane's run is the one it has
  # in a single program (lanes are independent).
  out = str(tmp_path / "shards")
  jobs = [("tune", s, 0, 2_048) for s in lib.grid("fixed")[1:4]]
  assert lib.run_jobs(jobs, out, 1_024, 1_024, save_every_seconds=1e9, deadline=None,
                      max_lanes=2)
  shards = {s["setting"]: s for s in lib.load_shards(out, "tune")}
  assert sorted(s["lanes"] for s in shards.values()) == [1, 2, 2]
  whole = lib.run_lanes([j[1] for j in jobs], [0] * 3, 2_048, 1_024, 1_024)
  for r in whole:
    np.testing.assert_allclose(shards[r["setting"]]["reward"], r["reward"])


def test_a_saved_program_resumes_under_another_grouping_and_splits_for_an_idle_worker(tmp_path):
  """Lanes that have run stay with their saved state whatever --max_lanes a
  later run has, and a program far behind the others is cut so that every
  worker has a share: each part starts from its lanes of the wider program's
  state, and every lane's run is the one it had in a run never stopped."""
  setting = lib.Setting("mg_ctx", meta_lr=1e-2, k=1, outer_entropy=0.1)
  steps, point = 16 * 6, 16  # one learner step per curve point
  seeds = (0, 1, 2)
  jobs = [("tune", setting, seed, steps) for seed in seeds]
  out, whole = str(tmp_path / "shards"), str(tmp_path / "whole")
  resume_dir = os.path.join(out, lib.RESUME_DIR, "tune")
  fresh = lib.run_lanes([setting] * 3, list(seeds), steps, point, 1_000)

  def run_workers(deadline):
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
      return list(pool.map(lambda w: lib.run_jobs(jobs, out, point, 1_000, 1e9, deadline,
                                                  (w, 2), whole, max_lanes=8), range(2)))

  # One program of three lanes, stopped after its first point.
  assert not lib.run_jobs(jobs, out, point, 1_000, 1e9, 0.0, partial_dir=whole)
  [parent] = os.listdir(resume_dir)
  # A narrower --max_lanes does not start the lanes afresh.
  [[program]] = lib.plan(jobs, out, whole, 1, 1)
  assert len(program.jobs) == 3 and program.done_steps == point
  # Two workers: the three lanes are cut into programs of one and two.
  shares = lib.plan(jobs, out, whole, 8, 2)
  assert sorted(len(p.jobs) for share in shares for p in share) == [1, 2]
  assert all(p.source[1].endswith(parent) and p.done_steps == point
             for share in shares for p in share)
  assert run_workers(0.0) == [False, False]  # each part saves its state after a point
  assert len(os.listdir(resume_dir)) == 3
  # The interim report counts each lane once, from the part that got further.
  from benchmarks import two_colours_interim as interim
  curves = interim.load_lanes(resume_dir)[setting.name]["reward"]
  np.testing.assert_allclose(curves.T, [run["reward"][:2] for run in fresh])
  # The parts got further than the program they came from: the next plan
  # discards its state, and the parts resume their own.
  shares = lib.plan(jobs, out, whole, 8, 2)
  assert sorted(os.listdir(resume_dir)) == sorted(os.listdir(os.path.join(whole, "tune")))
  assert parent not in os.listdir(resume_dir) and len(os.listdir(resume_dir)) == 2
  assert sorted(p.done_steps for share in shares for p in share) == [2 * point] * 2
  assert run_workers(None) == [True, True]
  assert not os.listdir(resume_dir) and not os.listdir(os.path.join(whole, "tune"))
  shards = {s["seed"]: s for s in lib.load_shards(out, "tune")}
  assert sorted(s["lanes"] for s in shards.values()) == [1, 2, 2]
  for seed, run in zip(seeds, fresh):
    assert shards[seed]["ring_refills"] == 0 and len(shards[seed]["reward"]) == 6
    np.testing.assert_allclose(shards[seed]["reward"], run["reward"])
    np.testing.assert_allclose(shards[seed]["entropy_cost"], run["entropy_cost"], rtol=1e-4)
  assert fresh[0]["entropy_cost"][-1] != fresh[0]["entropy_cost"][0]  # the meta side moved


def test_published_ci_and_welch_against_references():
  mean, half = report.mean_ci([1.0, 2.0, 3.0])
  # t(0.975, 2) = 4.3027; sd = 1; half-width = 4.3027 / sqrt(3).
  np.testing.assert_allclose([mean, half], [2.0, 4.302653 / np.sqrt(3)], rtol=1e-5)
  t, df, p = report.welch([1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0])
  # By hand: means 2.5 / 4, variances 1.6667 / 4.
  va, vb = 1.6666667 / 4, 4.0 / 3
  np.testing.assert_allclose(t, (2.5 - 4.0) / np.sqrt(va + vb), rtol=1e-6)
  np.testing.assert_allclose(df, (va + vb) ** 2 / (va ** 2 / 3 + vb ** 2 / 2), rtol=1e-6)
  assert 0.2 < p < 0.4


def test_a_method_with_one_final_seed_so_far_gets_its_row_without_a_ci():
  shard = {"setting": "mg-lr1e-03-K1-oe0.1", "reward": [300.0, 100.0], "env_steps": 4_000,
           "grad_clipped": [0.25, 0.75]}
  row = [r for r in report.final_table({"mg": [shard]}).splitlines() if r.startswith("| MG |")]
  assert row == ["| MG | `mg-lr1e-03-K1-oe0.1` | 1 | 4,000 | 0.1000 (one seed: no CI) | "
                 "1.00 (one seed: no CI) | 1.29 ± 0.08 | 50.0% |"]


def test_mg_with_reward_context_answers_a_colour_swap_with_its_entropy_cost():
  """Luketina et al.'s observation (Sec. 6): with the reward context the
  meta-learned entropy cost rises at a colour swap, while the agent's reward
  is down, and falls again as the reward recovers (here the best MG +
  context tuning setting of the clip-5 agent's protocol, swaps at 100k and
  200k steps). Measured on the mean of seeds 0 and 1: one seed's run is
  chaotic in its float rounding (the same seed, on another CPU or as one
  lane instead of three, once rose by only 0.01 at its first swap)."""
  setting = lib.Setting("mg_ctx", meta_lr=1e-3, k=1, outer_entropy=0.1)
  runs = lib.run_lanes([setting] * 2, [0, 1], steps=300_000, log_every=10_000,
                       swap_every=100_000)
  per = runs[0]["swap_every"] // runs[0]["point_steps"]
  ec = np.mean([np.reshape(r["entropy_cost"], (3, per)) for r in runs], axis=0)
  reward = np.mean([np.reshape(r["reward"], (3, per)) for r in runs], axis=0)
  reward /= runs[0]["point_steps"]
  jumps = np.mean([report.swap_jumps(r) for r in runs], axis=0)
  assert len(jumps) == 2 and np.all(jumps > 0.05), jumps  # up at both swaps
  for period in (1, 2):  # the periods that start with a swap
    assert reward[period, -1] > reward[period, 0] + 0.1, reward  # the agent recovers
    assert ec[period, per // 2:].min() < ec[period, 0] - 0.1, ec  # and the cost comes down


def test_an_ablation_setting_changes_only_what_it_names():
  base = lib.Setting("bmg", meta_lr=1e-3, k=1, l=8)
  variant = lib.Setting("bmg", meta_lr=1e-3, k=1, l=8, meta_extra=(("matching", "kl_reverse"),),
                        agent_extra=(("batch_size", 4),), init_entropy_cost=0.1)
  a, b = base.config(), variant.config()
  assert (a.meta.matching, b.meta.matching) == ("kl", "kl_reverse")
  assert (a.batch_size, b.batch_size) == (1, 4)
  assert (a.meta.hyperparams["entropy_cost"].init, b.meta.hyperparams["entropy_cost"].init) == (
      0.5, 0.1)
  assert a.replace(batch_size=4, meta=b.meta) == b  # and nothing else
  assert variant.program != base.program and variant.name != base.name
  # The protocol's own settings keep their names (their shards are found again).
  assert base.name == "bmg-lr1e-03-K1-L8"


def test_a_longer_run_begins_with_the_shorter_run():
  """The saturation table reads the agent's row from the first steps of the
  final runs; that is the same as running only those steps."""
  from benchmarks import two_colours_saturation as saturation
  settings = [lib.Setting("fixed", entropy_cost=0.1)] * 2
  long = lib.run_lanes(settings, [100, 101], steps=4_096, log_every=1_024, swap_every=2_048)
  short = lib.run_lanes(settings, [100, 101], steps=2_048, log_every=1_024, swap_every=2_048)
  for a, b in zip(long, short):
    cut = saturation._truncated(a, 2_048)
    assert cut["env_steps"] == b["env_steps"] == 2_048
    for key in lib.CURVES:
      np.testing.assert_allclose(cut[key], b[key], rtol=1e-6)


def test_a_saved_run_is_named_by_the_agent_it_ran_with():
  """A row that overrode a field of AGENT stays valid when AGENT later takes
  that value, and a run of another agent is found stale."""
  now = (("max_grad_norm", lib.AGENT["max_grad_norm"]),)
  other = (("max_grad_norm", lib.AGENT["max_grad_norm"] + 3.0),)
  assert lib.agent_digest(now) == lib.agent_digest()
  assert lib.agent_digest(other) != lib.agent_digest()
  run = {"spec": {"agent_extra": [list(p) for p in other]}, "agent": lib.agent_digest(other)}
  assert lib.made_with_this_agent(run)
  assert not lib.made_with_this_agent(dict(run, agent=lib.agent_digest()))
  assert not lib.made_with_this_agent({"spec": {}, "agent": lib.agent_digest(other)})
  assert lib.made_with_this_agent({"spec": {}, "agent": lib.agent_digest()})  # older shards


def test_the_distributed_config_runs_the_protocols_agent_and_meta_setup():
  """launch/configs/two_colours_bmg.py changes only the scale of the protocol's agent."""
  from launch.configs import two_colours_bmg
  from podmeta.config import Config
  config = Config.from_mapping(two_colours_bmg.get_config().to_dict())
  scale = {"batch_size", "replay_max_size", "min_replay_size", "max_env_steps"}
  for name, value in lib.AGENT.items():
    if name not in scale:
      assert getattr(config, name) == value, name
  assert config.num_actors * config.envs_per_actor >= config.batch_size > 1
  for name, value in lib.META.items():
    if name != "hyperparams":
      assert getattr(config.meta, name) == value, name
  assert config.meta.hyperparams["entropy_cost"].init == 0.5
  assert (config.meta.method, config.meta.context, config.meta.target_steps) == ("bmg", "reward", 8)


def test_the_interim_report_finds_where_a_lasting_saturation_began():
  """benchmarks.two_colours_interim: the onset of the first run of saturated
  points long enough to count, placed within its colour-swap period."""
  from benchmarks import two_colours_interim as interim
  entropy = np.ones(40)
  entropy[12:36] = 0.0  # 24 saturated points from point 12
  assert interim.lasting_saturation_onset(entropy, 20) == 12
  assert interim.lasting_saturation_onset(entropy, 25) is None
  broken = entropy.copy()
  broken[20] = 1.0  # two runs of 8 and 15 points
  assert interim.lasting_saturation_onset(broken, 20) is None
  curves = {"reward": np.full((40, 2), 100.0),  # each point sums 10k steps' rewards
            "entropy": np.stack([entropy, np.ones(40)], 1),
            "entropy_cost": np.full((40, 2), 0.05)}
  lines = interim.report(curves, point_steps=10_000, every=200_000, lasting=20)
  assert lines[0] == "2 lanes, 400,000 env steps each"
  assert "| 0.0-0.2M | 0.010 0.010 | 0.010 | 0.050 | 20% |" in lines  # 8 of 40 points
  assert "| 0.2-0.4M | 0.010 0.010 | 0.010 | 0.050 | 40% |" in lines  # 16 of 40
  onset, = [l for l in lines if l.startswith("  lane 0:")]
  assert "from 120,000 env steps, 20,000 after a colour swap" in onset
  assert "unsaturated on 50% of later points" in onset  # points 32-39: 4 of 8
  assert "  lane 1: none" in lines


def test_the_plasticity_probe_sees_every_state_and_measures_rank_and_dormancy():
  from benchmarks import two_colours_probes as probes
  obs = np.asarray(probes.all_observations())
  assert obs.shape == (25 * 24 * 23, 30)
  assert np.all(obs.sum(axis=1) == 6)  # one-hot x and y of agent, blue and red
  assert len({row.tobytes() for row in obs}) == len(obs)
  # srank_0.01 of equal singular values is all of them; of a rank-2 matrix, 2.
  assert int(probes.effective_rank(np.eye(8, dtype=np.float32))) == 8
  u = np.random.default_rng(0).normal(size=(50, 2)).astype(np.float32)
  assert int(probes.effective_rank(u @ u[:8].T)) == 2
  # A fresh agent: a near-uniform policy; a unit whose bias keeps it negative
  # on every state is dead (and tau-dormant).
  setting = lib.Setting("fixed", entropy_cost=0.1)
  params = jax.tree.map(lambda x: x[0], lib.initial_carry([setting], [0])[2].params)
  fresh = probes.probe(params, obs)
  assert abs(float(fresh["entropy"]) - np.log(4)) < 1e-3 and float(fresh["policy_dead1"]) == 0
  layer = "mlp_torso/mlp/~/linear_0"
  killed = dict(params, **{layer: dict(params[layer], b=params[layer]["b"].at[:64].set(-100.0))})
  out = probes.probe(killed, obs)
  assert float(out["policy_dead1"]) == 0.25 and float(out["policy_dormant1"]) >= 0.25
  assert float(out["value_dead1"]) == float(fresh["value_dead1"])
