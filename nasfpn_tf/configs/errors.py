"""ConfigError: what every config section raises, naming the dotted key at fault.

A module of its own so that every config module (experiment.py, search_config.py) can raise
it without importing the others.
"""

from __future__ import annotations


class ConfigError(ValueError):
  """A config key or value that cannot be used; the message names the dotted key.

  `key` is the dotted path as far as it is known; the loader prefixes the
  section path (e.g. `task.model.`) when it builds nested sections.
  """

  def __init__(self, key: str, msg: str):
    super().__init__(f"{key}: {msg}")
    self.key, self.msg = key, msg

  def prefixed(self, prefix: str) -> "ConfigError":
    return ConfigError(f"{prefix}.{self.key}" if prefix else self.key, self.msg)
