"""Kill a running search with SIGKILL, start it again: nothing lost, nothing rerun."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import types

import numpy as np
import pytest

from nasfpn_tf.search import SearchSpace, SimilarityReward, run_search
from nasfpn_tf.search.controller import Controller
from nasfpn_tf.search.journal import read_journal
from nasfpn_tf.search.search_directory import EVENTS_FILE, JOURNAL_FILE, weights_digest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAX_TRIALS, BATCH, KILL_AFTER = 60, 10, 25
SETTINGS = dict(batch_size=BATCH, seed=0, progress_bar=False, tensorboard=False,
                controller={"units": 16})

SCRIPT = textwrap.dedent(f"""
    import os, sys, time
    sys.path.insert(0, {REPO!r})
    from nasfpn_tf.search import run_search, SearchSpace, SimilarityReward
    directory, calls_log = sys.argv[1], sys.argv[2]
    base = SimilarityReward(SearchSpace(), floor=0.5, seed=0)

    def reward(spec):
      time.sleep(0.05)   # a trial takes a while, so the kill lands inside one
      with open(calls_log, "a") as f:
        f.write(spec.to_string() + "\\n")
        f.flush()
        os.fsync(f.fileno())
      return base(spec)

    run_search(reward, {MAX_TRIALS}, directory, **{SETTINGS!r})
""")


def _start(tmp_path, directory):
  script = tmp_path / "search.py"
  script.write_text(SCRIPT)
  return subprocess.Popen([sys.executable, str(script), directory, str(tmp_path / "calls.log")],
                          start_new_session=True, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)


def _journal_lines(directory):
  path = os.path.join(directory, JOURNAL_FILE)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [line for line in f if line.endswith("\n")]


def _load(ckpt_dir):
  controller = Controller(units=16)
  controller.load_weights_file(os.path.join(ckpt_dir, "controller.weights.h5"))
  return controller


def _checkpoint_digest(ckpt_dir):
  return weights_digest(types.SimpleNamespace(controller=_load(ckpt_dir)))


@pytest.mark.slow
def test_sigkill_then_restart_continues_the_search(tmp_path):
  directory = str(tmp_path / "search")
  proc = _start(tmp_path, directory)
  deadline = time.time() + 240
  while len(_journal_lines(directory)) < KILL_AFTER:
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    assert time.time() < deadline, "the search did not get going"
    time.sleep(0.02)
  os.killpg(proc.pid, signal.SIGKILL)   # the session of the process started above
  proc.wait()
  proc.stderr.close()

  before = _journal_lines(directory)
  assert KILL_AFTER <= len(before) < MAX_TRIALS
  ckpts = sorted(os.listdir(os.path.join(directory, "checkpoints")))
  latest = os.path.join(directory, "checkpoints", [c for c in ckpts if c.startswith("ckpt-")][-1])
  digest_at_kill = _checkpoint_digest(latest)

  proc = _start(tmp_path, directory)
  _, err = proc.communicate(timeout=240)
  assert proc.returncode == 0, err.decode()[-2000:]

  after = _journal_lines(directory)
  trials = read_journal(os.path.join(directory, JOURNAL_FILE))
  assert after[:len(before)] == before                     # nothing lost or rewritten
  assert [t.trial for t in trials] == list(range(MAX_TRIALS))
  assert sorted(t.proposal for t in trials) == list(range(MAX_TRIALS))   # nothing run twice
  with open(tmp_path / "calls.log") as f:
    calls = f.read().splitlines()
  # Every finished trial called the reward once; at most the one in flight at the kill twice.
  assert MAX_TRIALS <= len(calls) <= MAX_TRIALS + 1

  # The restart loaded the checkpoint that was latest at the kill, weights and all.
  events = [json.loads(line) for line in open(os.path.join(directory, EVENTS_FILE))]
  assert [e["event"] for e in events] == ["start", "resume"]
  assert events[1]["checkpoint"] == latest and events[1]["weights_digest"] == digest_at_kill
  assert events[1]["trials"] == len(before)

  # And it went on exactly as a search that was never killed.
  base = SimilarityReward(SearchSpace(), floor=0.5, seed=0)
  reference = run_search(base, MAX_TRIALS, str(tmp_path / "reference"), **SETTINGS)
  assert [(t.proposal, t.actions, t.reward) for t in trials] == \
         [(t.proposal, t.actions, t.reward) for t in reference]
  final = sorted(c for c in os.listdir(os.path.join(directory, "checkpoints"))
                 if c.startswith("ckpt-"))[-1]
  resumed_weights = _load(os.path.join(directory, "checkpoints", final)).get_state()
  reference_weights = _load(os.path.join(tmp_path, "reference", "checkpoints", final)).get_state()
  for a, b in zip(resumed_weights, reference_weights):
    np.testing.assert_allclose(a, b, atol=1e-6)
