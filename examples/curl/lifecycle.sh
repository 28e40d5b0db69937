#!/usr/bin/env bash
# The token lifecycle over the HTTP API (tokend --http-addr 127.0.0.1:8000),
# as the old service's clients use it.
#
#   examples/curl/lifecycle.sh [http://127.0.0.1:8000]
#
# Exits non-zero if an answer is not what the API documents.
set -euo pipefail
base=${1:-http://127.0.0.1:8000}
pool=example-curl
say() { printf '%s\n' "$*"; }
call() { # method path [body] -> prints "status body"
  local method=$1 path=$2 body=${3:-}
  if [ -n "$body" ]; then
    curl -sS -X "$method" -H 'content-type: application/json' -d "$body" -w ' %{http_code}' "$base$path"
  else
    curl -sS -X "$method" -w ' %{http_code}' "$base$path"
  fi
}
expect() { # what got want-substring
  case $2 in
    *"$3"*) say "$1: $2" ;;
    *) say "$1: got '$2', wanted '$3'" >&2; exit 1 ;;
  esac
}

expect generate "$(call POST "/token/generateToken?pool=$pool")" '"token successfully generated" 200'
expect generate "$(call POST "/token/generateToken?pool=$pool")" '"token successfully generated" 200'

got=$(call GET "/token/acquireToken?pool=$pool")
expect acquire "$got" ' 200'
token=$(printf '%s' "$got" | sed -n 's/^{"token":"\([0-9a-f-]*\)"} 200$/\1/p')
[ -n "$token" ] || { say "no token in: $got" >&2; exit 1; }

for _ in 1 2 3; do
  expect keepAlive "$(call PUT "/token/keepAlive?pool=$pool" "{\"token\": \"$token\"}")" "has received keep alive signal\" 200"
  sleep 0.2
done
expect unblock "$(call PUT "/token/unblockToken?pool=$pool" "{\"token\": \"$token\"}")" "\"$token has been unblocked\" 200"
expect unblock-again "$(call PUT "/token/unblockToken?pool=$pool" "{\"token\": \"$token\"}")" 'not assigned and hence cannot be unblocked"} 400'
expect bad-body "$(call PUT "/token/keepAlive?pool=$pool" '{"token": "nope"}')" '"type":"uuid_parsing"'
expect delete "$(call DELETE "/token/deleteToken?pool=$pool" "{\"token\": \"$token\"}")" "\"$token has been deleted\" 200"
expect delete-again "$(call DELETE "/token/deleteToken?pool=$pool" "{\"token\": \"$token\"}")" '{"detail":"No such token in system"} 400'
expect delete-expired "$(call DELETE "/token/deleteExpiredToken?pool=$pool")" 'expired tokens deleted" 200'
say "ok (expiry notifications are on the RESP port: see the other examples)"
