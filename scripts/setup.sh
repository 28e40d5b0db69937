#!/usr/bin/env bash
# Installs what tokend's tests and benchmarks need on a fresh Debian/Ubuntu
# machine: redis-server and redis-tools (redis-cli, redis-benchmark), netcat
# for poking the server by hand (`printf 'PING\r\n' | nc …`), curl (the
# HTTP example), prlimit and setpriv, Chromium (the /docs page is checked
# in a headless browser), the Python packages of the tests (redis-py, and
# FastAPI, which the HTTP API is compared with; from PyPI into .venv), and
# the Node example's client (ioredis, from npm, into examples/node).
# Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
updated=""
apt_update() { [ -n "$updated" ] || { $SUDO apt-get update -qq; updated=1; }; }

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
command -v nc >/dev/null 2>&1 || need+=(netcat-openbsd)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# prlimit and setpriv (the real-time priority tests run tokend without the
# right to it): util-linux, where Debian 11 had setpriv in a package of
# its own.
command -v prlimit >/dev/null 2>&1 || need+=(util-linux)
# The virtualenv the tests' Python packages go into (below).
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -c 'import ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
# npm (Debian's package brings Node with it) for the Node example's client.
command -v npm >/dev/null 2>&1 || need+=(npm)
if ! command -v setpriv >/dev/null 2>&1; then
  # Which package has it is known only once the package lists are there.
  apt_update
  if apt-cache policy setpriv 2>/dev/null | grep -q 'Candidate: [0-9]'; then need+=(setpriv); else need+=(util-linux); fi
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  apt_update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
# Debian starts a redis-server on 6379 after installing it; the tests start
# their own on free ports and never use it.
redis-server --version

# The tests' Python packages, pinned, in a virtualenv of the repository's own
# (.venv), never in the system's Python (Debian's refuses pip installs,
# PEP 668): redis-py, whose default pipeline() the tests check, and FastAPI
# with pydantic, whose answers the HTTP API is compared with live
# (tests/http_api.rs), as the old service ran it.
py_pins=(redis==5.2.1 fastapi==0.115.6 starlette==0.41.3 pydantic==2.14.4 pydantic-core==2.50.5 httpx==0.29.0)
py_check='import redis, fastapi, pydantic; assert (redis.__version__, fastapi.__version__, pydantic.VERSION) == ("5.2.1", "0.115.6", "2.14.4")'
if ! .venv/bin/python -c "$py_check" >/dev/null 2>&1; then
  echo "setup: installing redis-py and FastAPI into .venv"
  python3 -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "${py_pins[@]}"
fi
.venv/bin/python -c 'import redis, fastapi, pydantic; print("redis-py", redis.__version__, "fastapi", fastapi.__version__, "pydantic", pydantic.VERSION)'

# The Node example's dependencies (pinned by examples/node/package-lock.json).
if ! [ -d examples/node/node_modules/ioredis ]; then
  echo "setup: installing the Node example's dependencies"
  (cd examples/node && npm ci --no-audit --no-fund --silent)
fi
node --version
