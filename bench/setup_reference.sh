#!/usr/bin/env bash
# Creates the reference environment for bench/compare_modelgarden.py: a separate virtual
# environment holding TensorFlow Model Garden (pip package `tf-models-official`) with the
# TensorFlow and tf-keras versions it pins, CPU build.
#
# Why a separate venv: Model Garden 2.20 pins tensorflow~=2.20 and needs tf-keras (Keras 2),
# while nasfpn_tf runs on TensorFlow 2.21 + Keras 3. The two cannot share one environment.
#
# Why --no-deps for the TensorFlow-side packages: tf-models-official, tf-keras, tensorflow-hub
# (through tf-keras) and tensorflow-text declare a dependency on the `tensorflow` distribution,
# which pip would satisfy with the newest `tensorflow` wheel, overwriting the pinned
# `tensorflow-cpu` files (same module, other version). We install `tensorflow-cpu` of the pinned
# version and list the remaining runtime dependencies ourselves. The NLP-only extras
# (tensorflow-text, sentencepiece, seqeval, sacrebleu, kaggle, Google API clients) are left out:
# the vision modelling code we benchmark never imports them.
#
# Idempotent: re-running checks the environment and only installs what is missing.
#
# Usage:  bash bench/setup_reference.sh            # creates bench/.venv-modelgarden
#         MG_VENV=/tmp/mg bash bench/setup_reference.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${MG_VENV:-${here}/.venv-modelgarden}"
python_bin="${PYTHON:-python3.11}"
command -v "${python_bin}" >/dev/null 2>&1 || python_bin=python3

mg_version="2.20.0"
tf_version="2.20.0"
tf_keras_version="2.20.1"
# Runtime dependencies of official/vision modelling (pins kept loose except where the pinned
# TensorFlow needs them: numpy<2.3 and protobuf<6 are what tensorflow-cpu 2.20 accepts).
runtime_deps=(
  "numpy>=1.26,<2.3" "six" "gin-config" "pyyaml>=6.0" "immutabledict" "psutil" "py-cpuinfo"
  "scipy" "pandas" "matplotlib" "Pillow" "opencv-python-headless" "pycocotools" "Cython"
  "dm-tree" "absl-py" "tensorflow-datasets"
)
# Installed without their dependencies (see above); theirs are in `runtime_deps`.
no_deps=(
  "tf-keras==${tf_keras_version}" "tf-models-official==${mg_version}" "tf-slim==1.1.0"
  "tensorflow-hub==0.16.1" "tensorflow-model-optimization==0.8.0"
)

ready() {
  # True when the venv imports Model Garden's RetinaNet factory on the pinned TensorFlow.
  [[ -x "${venv}/bin/python" ]] || return 1
  "${venv}/bin/python" - "${tf_version}" "${mg_version}" <<'EOF' >/dev/null 2>&1
import importlib.metadata as md, sys
import tensorflow as tf
from official.vision.modeling import factory  # noqa: F401
assert tf.__version__ == sys.argv[1], tf.__version__
assert md.version("tf-models-official") == sys.argv[2]
EOF
}

if ready; then
  echo "reference environment ready: ${venv}"
  exit 0
fi

if [[ ! -x "${venv}/bin/python" ]]; then
  echo "creating ${venv} with $(${python_bin} --version)"
  "${python_bin}" -m venv "${venv}"
fi
pip=("${venv}/bin/python" -m pip install --disable-pip-version-check -q)
"${pip[@]}" --upgrade pip
"${pip[@]}" "tensorflow-cpu==${tf_version}" "${runtime_deps[@]}"
# A `tensorflow` wheel left by an earlier, interrupted install would shadow tensorflow-cpu.
if "${venv}/bin/python" -m pip show tensorflow >/dev/null 2>&1; then
  "${venv}/bin/python" -m pip uninstall -y -q tensorflow
  "${pip[@]}" --force-reinstall --no-deps "tensorflow-cpu==${tf_version}"
fi
"${pip[@]}" --no-deps "${no_deps[@]}"

if ! ready; then
  echo "reference environment at ${venv} does not import official.vision.modeling.factory:" >&2
  "${venv}/bin/python" -c "from official.vision.modeling import factory" >&2 || true
  exit 1
fi
echo "reference environment ready: ${venv}"
"${venv}/bin/python" -c "import tensorflow as tf, tf_keras; print('tensorflow', tf.__version__, '| tf-keras', tf_keras.__version__)"
