"""The Ray Tune engine on a local 2-CPU cluster, with the synthetic reward."""

import json
import os
import time

import numpy as np
import pytest

pytest.importorskip("ray.tune")

from nasfpn_tf.search import SearchSpace, SimilarityReward, run_search  # noqa: E402
from nasfpn_tf.search.controller import Controller  # noqa: E402

SETTINGS = dict(engine="ray", batch_size=4, max_concurrent=2, ray_num_cpus=2, trial_cpus=1,
                seed=0, progress_bar=False, tensorboard=False, controller={"units": 16})


def _crash_once_reward(marker):
  """The first trial to run raises; every other one takes 1 s and scores the similarity."""
  base = SimilarityReward(SearchSpace(), floor=0.89, seed=0)

  def reward(spec):
    try:
      os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
      time.sleep(1.0)   # long enough for the two trials of a batch to overlap
      return base(spec)
    raise RuntimeError("deliberate crash")

  return reward


def _latest_weights(directory):
  root = os.path.join(directory, "checkpoints")
  latest = sorted(n for n in os.listdir(root) if n.startswith("ckpt-"))[-1]
  controller = Controller(units=16)
  controller.load_weights_file(os.path.join(root, latest, "controller.weights.h5"))
  return controller.get_state(), json.load(open(os.path.join(root, latest, "agent.json")))


@pytest.mark.slow
def test_parallel_trials_a_crash_and_controller_updates(tmp_path):
  directory = str(tmp_path / "search")
  reward = _crash_once_reward(str(tmp_path / "crashed"))
  trials = run_search(reward, 8, directory, **SETTINGS)

  assert [t.trial for t in trials] == list(range(8))
  failed = [t for t in trials if not t.ok]
  assert len(failed) == 1 and failed[0].reward is None
  assert "deliberate crash" in failed[0].error
  ok = [t for t in trials if t.ok]
  assert all(t.wall_time_s >= 1.0 for t in ok)
  overlapping = [(a.trial, b.trial) for a in ok for b in ok
                 if a.trial < b.trial and a.start_time < b.end_time and b.start_time < a.end_time]
  assert overlapping, [(t.start_time, t.end_time) for t in ok]

  # Rewards arrived, the controller was updated and checkpointed, and later trials
  # were sampled by the updated policy.
  weights, agent_state = _latest_weights(directory)
  assert agent_state["num_updates"] >= 1 and agent_state["baseline"] is not None
  initial = Controller(units=16, seed=0).get_state()
  assert any(not np.allclose(a, b) for a, b in zip(weights, initial))
  assert max(t.policy_version for t in trials) >= 1
  assert os.path.exists(os.path.join(directory, "best_1.yaml"))

  # Starting again with the same directory continues: 2 more trials, the 8 kept.
  more = run_search(reward, 10, directory, **SETTINGS)
  assert [t.to_json() for t in more[:8]] == [t.to_json() for t in trials]
  assert len(more) == 10 and all(t.ok for t in more[8:])
  assert len({t.proposal for t in more}) == 10


def test_searcher_state_survives_pickling_and_save_restore(tmp_path):
  import pickle

  from nasfpn_tf.configs.search_config import ControllerConfig, SearchConfig
  from nasfpn_tf.search.ray_engine import ControllerSearcher

  config = SearchConfig(directory=str(tmp_path), max_trials=3, batch_size=2,
                        controller=ControllerConfig(units=16), progress_bar=False,
                        tensorboard=False)
  searcher = ControllerSearcher(config)
  suggested = [searcher.suggest(f"t{i}") for i in range(3)]
  assert [s["proposal"] for s in suggested] == [0, 1, 2]
  assert searcher.suggest("t3") == "FINISHED"   # max_trials are all in flight
  searcher.on_trial_result("t0", {"reward": 0.5, "start_time": 1.0, "end_time": 2.0})
  path = str(tmp_path / "searcher.pkl")
  searcher.save(path)

  # What Tuner.restore does: unpickle the Tuner's copy (no TensorFlow inside), then restore.
  clone = pickle.loads(pickle.dumps(searcher))
  assert clone._driver is None
  clone.restore(path)
  assert clone.driver.num_finished == 1                   # rebuilt from the journal
  clone.on_trial_result("t0", {"reward": 0.5})             # a re-run trial: not journaled twice
  clone.on_trial_result("t1", {"reward": 0.7})             # completes the batch: an update
  clone.on_trial_complete("t2", error=True)
  trials = clone.driver.finish()
  assert [(t.proposal, t.status) for t in trials] == [(0, "ok"), (1, "ok"), (2, "failed")]
  assert trials[1].actions == searcher._proposals["t1"].actions
  assert clone.driver.agent.num_updates == 1


def test_time_limit_stops_a_slow_trial():
  from nasfpn_tf.architecture_spec import parse_spec
  from nasfpn_tf.search.ray_engine import TrialTimeoutError, call_with_time_limit

  spec = parse_spec("nasfpn")
  start = time.time()
  with pytest.raises(TrialTimeoutError, match="0.2 s"):
    call_with_time_limit(lambda s: time.sleep(5), spec, 0.2)
  assert time.time() - start < 2
  assert call_with_time_limit(lambda s: 0.25, spec, 1.0) == 0.25
  with pytest.raises(ValueError, match="bad child"):
    call_with_time_limit(lambda s: (_ for _ in ()).throw(ValueError("bad child")), spec, 1.0)
