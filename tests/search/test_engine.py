"""run_search with the inline engine: results, files, failures, continuing a directory."""

import json
import os
import sys

import pytest

from nasfpn_tf.architecture_spec import parse_spec
from nasfpn_tf.configs.experiment import ConfigError
from nasfpn_tf.search import SearchSpace, SimilarityReward, read_journal, run_search
from nasfpn_tf.search.journal import Journal
from nasfpn_tf.search.search_directory import JOURNAL_FILE

FAST = dict(progress_bar=False, controller={"units": 16})



@pytest.fixture(scope="module")
def reward():
  return SimilarityReward(SearchSpace(), floor=0.5, seed=0)


def test_inline_search_returns_journals_and_reports(tmp_path, reward):
  trials = run_search(reward, 45, str(tmp_path), batch_size=10, seed=1, **FAST)
  assert [t.trial for t in trials] == list(range(45))
  assert all(t.ok and t.wall_time_s >= 0 for t in trials)
  assert [t.reward for t in trials] == [reward(t.spec) for t in trials]
  assert len({t.proposal for t in trials}) == 45
  assert [t.to_json() for t in read_journal(str(tmp_path / JOURNAL_FILE))] == \
         [t.to_json() for t in trials]
  # 4 full batches and a final partial one: 5 updates; policy versions show it.
  assert [t.policy_version for t in trials[::10]] == [0, 1, 2, 3, 4]
  state = json.load(open(tmp_path / "checkpoints" / "ckpt-000005" / "search_state.json"))
  assert state["trials_consumed"] == 45
  # Best specs: ordered by reward, loadable, usable as a decoder spec.
  best = [parse_spec(str(tmp_path / f"best_{k}.yaml")) for k in range(1, 6)]
  best_rewards = [reward(s) for s in best]
  assert best_rewards == sorted(best_rewards, reverse=True)
  assert best_rewards[0] == max(t.reward for t in trials)
  assert (tmp_path / "search_progress.png").stat().st_size > 1000
  assert (tmp_path / "best_architecture.png").stat().st_size > 1000
  assert os.listdir(tmp_path / "tensorboard")
  assert not [n for n in os.listdir(tmp_path) if ".tmp" in n]


def test_continuing_a_directory_keeps_earlier_trials(tmp_path, reward):
  first = run_search(reward, 20, str(tmp_path), batch_size=10, **FAST)
  more = run_search(reward, 35, str(tmp_path), batch_size=10, **FAST)
  assert [t.to_json() for t in more[:20]] == [t.to_json() for t in first]
  assert len(more) == 35 and len({t.proposal for t in more}) == 35
  events = [json.loads(line) for line in open(tmp_path / "events.jsonl")]
  assert [e["event"] for e in events] == ["start", "resume"]
  assert events[1]["trials"] == 20 and events[1]["round"] == 2


def test_failing_trials_are_recorded_and_do_not_stop_the_search(tmp_path, reward):
  def diverges(spec):
    return spec.cells[0].op == "sum" and spec.cells[0].inputs[0] == 0

  def flaky(spec):
    if diverges(spec):
      raise RuntimeError("child diverged")
    return reward(spec)

  trials = run_search(flaky, 60, str(tmp_path), batch_size=10, **FAST)
  failed = [t for t in trials if not t.ok]
  assert len(trials) == 60 and failed
  assert all(t.reward is None and "child diverged" in t.error for t in failed)
  assert [t.ok for t in trials] == [not diverges(t.spec) for t in trials]


def test_random_algorithm_and_stop_reward(tmp_path):
  reward = SimilarityReward(SearchSpace(), floor=0.9, seed=0)
  trials = run_search(reward, 5000, str(tmp_path), algorithm="random", stop_reward=0.95,
                      tensorboard=False, progress_bar=False)
  assert trials[-1].reward >= 0.95 and all(t.reward < 0.95 for t in trials[:-1])
  assert not os.path.exists(tmp_path / "checkpoints" / "ckpt-000000")


def test_a_directory_refuses_a_different_search(tmp_path, reward):
  run_search(reward, 5, str(tmp_path), batch_size=5, **FAST)
  with pytest.raises(ConfigError, match="algorithm"):
    run_search(reward, 10, str(tmp_path), algorithm="random", batch_size=5, **FAST)


def test_bad_options_name_the_key(tmp_path, reward):
  with pytest.raises(ConfigError, match="learning_rat"):
    run_search(reward, 5, str(tmp_path), ppo={"learning_rat": 1.0})
  with pytest.raises(ConfigError, match="ppo.learning_rate"):
    run_search(reward, 5, str(tmp_path), ppo={"learning_rate": -1.0})
  with pytest.raises(ConfigError, match="max_concurent"):
    run_search(reward, 5, str(tmp_path), max_concurent=2)
  with pytest.raises(ConfigError, match="engine"):
    run_search(reward, 5, str(tmp_path), engine="spark")


def test_ray_engine_without_ray_says_how_to_install(tmp_path, reward, monkeypatch):
  monkeypatch.setitem(sys.modules, "ray", None)
  monkeypatch.delitem(sys.modules, "nasfpn_tf.search.ray_engine", raising=False)
  with pytest.raises(ImportError, match=r"pip install nasfpn_tf\[search\]"):
    run_search(reward, 5, str(tmp_path), engine="ray")


def test_torn_journal_line_is_dropped(tmp_path, reward):
  run_search(reward, 6, str(tmp_path), batch_size=3, **FAST)
  path = tmp_path / JOURNAL_FILE
  with open(path, "a") as f:
    f.write('{"trial": 6, "propos')   # a kill mid-write
  assert len(read_journal(str(path))) == 6
  Journal(str(path))
  assert open(path).read().endswith("}\n")
  trials = run_search(reward, 9, str(tmp_path), batch_size=3, **FAST)
  assert [t.trial for t in trials] == list(range(9))
