#!/usr/bin/env bash
# Installs what tokend's tests and benchmarks need on a fresh Debian/Ubuntu
# machine: redis-server and redis-tools (redis-cli, redis-benchmark), netcat
# for poking the server by hand (`printf 'PING\r\n' | nc …`), curl (the
# HTTP example), prlimit and setpriv, Chromium (the /docs page is checked
# in a headless browser), the Python client the tests drive tokend with (redis-py, from PyPI),
# FastAPI (PyPI, into .venv-fastapi: the HTTP API is compared with it), and
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
# The virtualenv FastAPI goes into (below).
python3 -c 'import ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
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

# redis-py, pinned: the tests check what its default pipeline() sends.
if ! python3 -c 'import redis' >/dev/null 2>&1; then
  echo "setup: installing redis-py"
  python3 -m pip install --quiet --disable-pip-version-check 'redis==5.2.1'
fi
python3 -c 'import redis; print("redis-py", redis.__version__)'

# FastAPI, pinned, in a virtualenv of its own (.venv-fastapi): the HTTP API
# is checked against its answers live (tests/http_api.rs), as the old
# service ran it.
fastapi_pins=(fastapi==0.115.6 starlette==0.41.3 pydantic==2.14.4 pydantic-core==2.50.5 httpx==0.29.0)
if ! .venv-fastapi/bin/python -c 'import fastapi, pydantic; assert (fastapi.__version__, pydantic.VERSION) == ("0.115.6", "2.14.4")' >/dev/null 2>&1; then
  echo "setup: installing FastAPI into .venv-fastapi"
  python3 -m venv .venv-fastapi
  .venv-fastapi/bin/python -m pip install --quiet --disable-pip-version-check "${fastapi_pins[@]}"
fi
.venv-fastapi/bin/python -c 'import fastapi, pydantic; print("fastapi", fastapi.__version__, "pydantic", pydantic.VERSION)'

# The Node example's dependencies (pinned by examples/node/package-lock.json).
if ! [ -d examples/node/node_modules/ioredis ]; then
  echo "setup: installing the Node example's dependencies"
  (cd examples/node && npm ci --no-audit --no-fund --silent)
fi
node --version
