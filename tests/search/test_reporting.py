"""The search's reports: the window count the progress plot draws."""

from nasfpn_tf.search.journal import TrialRecord
from nasfpn_tf.search.reporting import distinct_in_window, unique_counts


def _records(names):
  return [TrialRecord(trial=i, proposal=i, status="ok", reward=0.1, wall_time_s=0.0,
                      start_time=0.0, end_time=0.0, cells=[], spec_string=name, min_level=3,
                      max_level=7, actions=[], log_prob=0.0) for i, name in enumerate(names)]


def test_distinct_in_window_falls_when_one_architecture_repeats():
  records = _records(["a", "b", "c", "a", "a", "a", "a", "b"])
  # Window 3: {a}, {a,b}, {a,b,c}, {b,c,a}, {c,a}, {a}, {a}, {a,b}.
  assert distinct_in_window(records, 3).tolist() == [1, 2, 3, 3, 2, 1, 1, 2]
  assert unique_counts(records).tolist() == [1, 2, 3, 3, 3, 3, 3, 3]
