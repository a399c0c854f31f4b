"""Files on any filesystem TensorFlow reads (local, gs://, ram://, ...), written atomically.

Every file the library writes goes through `atomic_save`: the content is written under a
temporary name in the same folder (`NAME.tmp-PID-RANDOM.EXT`, the extension kept because
Keras requires `.keras` / `.weights.h5`), then renamed over the final name with
`tf.io.gfile.rename(overwrite=True)`. A process killed mid-write leaves the final file as it
was, plus a temporary file that `clean_stale_temp_files` removes at the start of the next run.
On object stores (gs://) one object write is atomic and the rename is a copy; on local disks
the data are fsynced before the rename, so a power loss cannot leave a renamed empty file.

Why not Python's `open` / `os.replace`: they only reach local files, and a MODEL_DIR on a
bucket is the normal case on TPUs. Why not Keras' `file_utils`: it has no atomic write.

Example:
  file_io.write_json("gs://bucket/run/eval_results.json", metrics)
  file_io.atomic_save(model.save, "gs://bucket/run/model.keras")
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
from typing import Any, Callable

import tensorflow as tf
import yaml

TMP_TAG = ".tmp-"
# NAME.tmp-PID-RANDOM[.EXT]: the pid tells a live writer's file from a killed one's.
_TMP_NAME = re.compile(r"\.tmp-(\d+)-[0-9a-f]{8}(\.|$)")


def is_local(path: str) -> bool:
  """Whether `path` is on the local disk (no `scheme://` prefix)."""
  return "://" not in path


def exists(path: str) -> bool:
  return tf.io.gfile.exists(path)


def isdir(path: str) -> bool:
  return tf.io.gfile.isdir(path)


def makedirs(path: str) -> None:
  """Creates `path` and its parents; an existing folder is fine.

  Raises:
    OSError: naming `path` (a file in the way, no permission), as the os module would:
      gfile raises TensorFlow's own error types, which callers should not need to know.
  """
  try:
    tf.io.gfile.makedirs(path)
  except tf.errors.OpError as e:
    raise OSError(errno.EIO, e.message.split("\n")[0], path) from None


def glob(pattern: str) -> list[str]:
  """Sorted paths matching `pattern` (`*`, `?`, `[...]` within one path component)."""
  return sorted(tf.io.gfile.glob(pattern))


def remove(path: str) -> None:
  """Removes a file or a whole folder; a missing path is not an error."""
  if tf.io.gfile.isdir(path):
    tf.io.gfile.rmtree(path)
  elif tf.io.gfile.exists(path):
    tf.io.gfile.remove(path)


def read_text(path: str) -> str:
  with tf.io.gfile.GFile(path, "r") as f:
    return f.read()


def temp_path(path: str, keep_extension: bool = True) -> str:
  """A fresh temporary name next to `path`, hidden (a leading dot).

  "run/model.keras" -> "run/.model.tmp-1234-0a1b2c3d.keras" (Keras requires the extension);
  with keep_extension=False "data/.train-00000-of-00004.tfrecord.tmp-1234-0a1b2c3d", so that a
  glob for the final names ("train-*.tfrecord") cannot match a file being written. The final
  name is never a prefix of the temporary one: ram:// takes any prefix of an existing name
  for an existing file.
  """
  tag = f"{TMP_TAG}{os.getpid()}-{secrets.token_hex(4)}"
  folder, name = os.path.split(path)
  name = name[1:] if name.startswith(".") else name
  if not keep_extension:
    return os.path.join(folder, f".{name}{tag}")
  stem, dot, ext = name.partition(".")
  return os.path.join(folder, f".{stem}{tag}{dot}{ext}")


def _fsync(path: str) -> None:
  # A rename is only as durable as the data renamed: flush them first (local files only;
  # a folder written by TensorFlow, such as a SavedModel, is flushed file by file).
  if not is_local(path):
    return
  if os.path.isdir(path):
    for root, _, files in os.walk(path):
      for name in files:
        _fsync(os.path.join(root, name))
    return
  with open(path, "rb") as f:
    os.fsync(f.fileno())


def commit(tmp: str, path: str) -> str:
  """Flushes the finished temporary file `tmp` (see `temp_path`) and renames it to `path`;
  for writers that keep several files open at once. Returns `path`."""
  _fsync(tmp)
  tf.io.gfile.rename(tmp, path, overwrite=True)
  return path


def atomic_save(save: Callable[[str], Any], path: str, keep_extension: bool = True) -> str:
  """Calls `save(tmp)` with a temporary name next to `path`, then renames it to `path`.

  `save` may write a file or a folder (a SavedModel): an existing folder at `path` is moved
  aside under a temporary name first and removed once the new one is in place (a kill between
  the two renames leaves both under temporary names; the next export writes `path` again).
  Keras 3's own `model.save` / `save_weights` write a non-local path through a local file and
  `tf.io.gfile` themselves (keras/src/saving/saving_lib.py), so they can be passed as `save`
  for a bucket folder too. On failure the temporary file is removed and the error re-raised.

  Args:
    save: writes the content to the path it is given.
    path: the final name.
    keep_extension: see `temp_path`.

  Returns:
    `path`.
  """
  tmp = temp_path(path, keep_extension)
  try:
    save(tmp)
    if tf.io.gfile.isdir(tmp):
      _fsync(tmp)
      _replace_dir(tmp, path)
    else:
      commit(tmp, path)
  except BaseException:
    remove(tmp)
    raise
  return path


def _move_dir(src: str, dst: str) -> None:
  # Local disks and gs:// rename folders (gs:// object by object). TensorFlow's in-memory
  # ram:// does not (it renames the folder's entry and loses its files): no folders there.
  if src.startswith("ram://"):
    raise NotImplementedError(f"ram:// cannot rename the folder {src}")
  tf.io.gfile.rename(src, dst)


def _listed(path: str) -> bool:
  # Whether the parent folder lists `path`: ram://'s exists() is true for any prefix of an
  # existing name.
  folder, name = os.path.split(path)
  return tf.io.gfile.isdir(folder) and name in [n.rstrip("/") for n in
                                                tf.io.gfile.listdir(folder)]


def _replace_dir(staged: str, path: str) -> None:
  old = None
  if _listed(path):
    old = temp_path(path)
    _move_dir(path, old)
  _move_dir(staged, path)
  if old:
    remove(old)


def write_bytes(path: str, data: bytes) -> str:
  """Writes `data` to `path` atomically; returns `path`."""
  def save(tmp: str) -> None:
    with tf.io.gfile.GFile(tmp, "wb") as f:
      f.write(data)
  return atomic_save(save, path)


def write_text(path: str, text: str) -> str:
  """Writes `text` (UTF-8) to `path` atomically; returns `path`."""
  return write_bytes(path, text.encode("utf-8"))


def write_json(path: str, data: Any, indent: int | None = 2) -> str:
  """Writes `data` as JSON to `path` atomically; returns `path`."""
  return write_text(path, json.dumps(data, indent=indent))


def write_yaml(path: str, data: Any) -> str:
  """Writes `data` (plain dicts/lists) as YAML to `path` atomically, keys in their order."""
  return write_text(path, yaml.safe_dump(data, sort_keys=False))


def _writer_alive(pid: int, folder: str) -> bool:
  if pid == os.getpid():
    return True
  if not is_local(folder):
    # Another machine's pid means nothing here; one run writes a model folder at a time.
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:   # a live process of another user
    return True
  return True


def stale_temp_files(folder: str) -> list[str]:
  """Temporary files and folders in `folder` (not below) whose writer is no longer running."""
  if not tf.io.gfile.isdir(folder):
    return []
  found = []
  for name in sorted(tf.io.gfile.listdir(folder)):
    name = name.rstrip("/")   # object stores list sub-folders with a trailing slash
    m = _TMP_NAME.search(name)
    if m and not _writer_alive(int(m.group(1)), folder):
      found.append(os.path.join(folder, name))
  return found


def clean_stale_temp_files(*folders: str) -> list[str]:
  """Removes what a killed writer left in `folders` (see `stale_temp_files`); returns it."""
  removed = []
  for folder in folders:
    for path in stale_temp_files(folder):
      remove(path)
      removed.append(path)
  return removed
