#!/usr/bin/env bash
# Benchmarks tokend against the best plain-Redis equivalent, side by side,
# and writes BENCHMARKS.md with every number from this one run.
#
#   scripts/bench.sh                # about 5 minutes after the release build
#   BENCH_SECS=1 scripts/bench.sh   # a quick smoke run (numbers meaningless)
#
# What runs (servers pinned to core $BENCH_SERVER_CPU, the load generator and
# redis-benchmark to core $BENCH_CLIENT_CPU):
# - tokend in memory, tokend --durability sync and async (backed by a second
#   redis-server on the server core), and a redis-server with the token
#   semantics as a Redis 7 function library (scripts/tokens.lua, one FCALL
#   per operation), each driven by target/release/tokend-bench with the same
#   workloads for $BENCH_SECS seconds each;
# - redis-benchmark PING/SET against redis-server and PING/TOKEN.STATS
#   against tokend (the protocol ceiling);
# - memory per token at 1M tokens and per pool at 100k pools of one token,
#   ACQUIRE at 10M tokens against 10k,
#   UNLINK of a 10M-token pool, GEN COUNT 100000 and the expiry of 10M
#   tokens due within 2 s while a client works on another pool of the same
#   shard, RSS of a soak with 1 h leases against 1 s leases,
#   recovery of 1M, 5M and 10M tokens from the backing Redis, expiry of 200k tokens
#   due in the same second on both servers and within 100 ms on tokend, one cluster-mode node against
#   one standalone node (both sync), and the failover time of a 3-node
#   cluster holding 1M tokens, over a redis-server and over a 3-master
#   Redis Cluster.
#
# Installs nothing itself except through scripts/setup.sh. Environment knobs:
# BENCH_SECS (5), BENCH_OUT (BENCHMARKS.md), BENCH_SERVER_CPU (0),
# BENCH_CLIENT_CPU (1), BENCH_PORT_BASE (16379: uses it and the next nine),
# BENCH_EXPIRY_TOKENS (200000), BENCH_MEM_TOKENS (1000000), BENCH_POOLS
# (100000: pools of one token for the small-pool row), BENCH_BIG_TOKENS
# (10000000), BENCH_MASS_TOKENS (10000000: the mass expiry, due within 2 s),
# BENCH_RECOVERY_SIZES ("1000000 5000000 10000000": one pool filled to each
# size in turn, and tokend restarted at each), BENCH_ACQ_ROUNDS (16) and
# BENCH_ACQ_SECS (2): the pairs of ACQUIRE runs at 10k and 10M tokens,
# BENCH_EXP_ROUNDS (3): runs of the expiry workload against tokend (each
# of the same second and the 100 ms burst),
# BENCH_SOAK_SECS (120): each of the two lease soaks (1 h and 1 s leases),
# BENCH_FAILOVER_TOKENS (1000000) and BENCH_FAILOVER_KILLS (10): the tokens
# of the 3-node cluster and how many times one of its nodes is killed,
# BENCH_OBS_ROUNDS (8): the pairs of cycle runs with /metrics scraped every
# second against none, BENCH_BASELINE (unset): another tokend binary (say,
# the previous release) to compare this build with in the same pairs, and
# BENCH_BASELINE_LABEL: what to call it in the table (default: its name and
# --version), BENCH_BASELINE_TARGET: the least ratio to this build that
# counts as met (e.g. 0.95; none by default: the rows then only measure),
# BENCH_SKIP_BUILD (unset).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

SECS=${BENCH_SECS:-5}
OUT=${BENCH_OUT:-BENCHMARKS.md}
SCPU=${BENCH_SERVER_CPU:-0}
CCPU=${BENCH_CLIENT_CPU:-1}
BASE=${BENCH_PORT_BASE:-16379}
REF_PORT=$BASE          # the reference redis-server (function library)
BACK_PORT=$((BASE + 1)) # tokend's backing redis-server
TOK_PORT=$((BASE + 2))  # tokend
ALT_PORT=$((BASE + 3))  # a second tokend, for side-by-side pairs
MET_PORT=$((BASE + 4))  # its /metrics
HTTP_PORT=$((BASE + 5)) # tokend's HTTP API
CL3_PORT=$((BASE + 6))  # the third node of the failover cluster
RC1_PORT=$((BASE + 7))  # the three masters of a backing Redis Cluster
RC2_PORT=$((BASE + 8))
RC3_PORT=$((BASE + 9))
EXPIRY_TOKENS=${BENCH_EXPIRY_TOKENS:-200000}
MEM_TOKENS=${BENCH_MEM_TOKENS:-1000000}
BIG_TOKENS=${BENCH_BIG_TOKENS:-10000000}
MASS_TOKENS=${BENCH_MASS_TOKENS:-10000000}
REC_SIZES=${BENCH_RECOVERY_SIZES:-1000000 5000000 10000000}
SMALL_TOKENS=10000
POOLS_N=${BENCH_POOLS:-100000}
ACQ_ROUNDS=${BENCH_ACQ_ROUNDS:-16}
ACQ_SECS=${BENCH_ACQ_SECS:-2}
PING_ROUNDS=5
EXP_ROUNDS=${BENCH_EXP_ROUNDS:-3}
OBS_ROUNDS=${BENCH_OBS_ROUNDS:-8}
SOAK_SECS=${BENCH_SOAK_SECS:-120}
FO_TOKENS=${BENCH_FAILOVER_TOKENS:-1000000}
FO_KILLS=${BENCH_FAILOVER_KILLS:-10}
BASELINE=${BENCH_BASELINE:-}
BASE_TARGET=${BENCH_BASELINE_TARGET:-}
STARTED=$(date +%s)
# Taken now: by the time the table is written, $OUT itself is a local change.
TOKEND_VERSION="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with local changes)')"

log() { printf '\n== %s\n' "$*" >&2; }

scripts/setup.sh >/dev/null
for tool in redis-server redis-cli redis-benchmark taskset; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing" >&2; exit 1; }
done

if [ -z "${BENCH_SKIP_BUILD:-}" ]; then
  log "building (release)"
  cargo build --release --locked -p token-distributor -p tokend-bench --bin tokend --bin tokend-bench
fi
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
TOKEND=$TARGET_DIR/release/tokend
LG=$TARGET_DIR/release/tokend-bench
[ -x "$TOKEND" ] && [ -x "$LG" ] || { echo "bench: $TOKEND or $LG not built" >&2; exit 1; }

WORK=$(mktemp -d /tmp/tokend-bench.XXXXXX)
echo "bench: logs and raw results in $WORK" >&2

# ---------------------------------------------------------------------------
# Processes: everything started here is stopped on exit.

PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

for p in "$REF_PORT" "$BACK_PORT" "$TOK_PORT" "$ALT_PORT" "$MET_PORT" "$HTTP_PORT" "$CL3_PORT" "$RC1_PORT" "$RC2_PORT" "$RC3_PORT"; do
  port_free "$p" || { echo "bench: port $p is in use (set BENCH_PORT_BASE)" >&2; exit 1; }
done

REDIS_LAUNCHED=
start_redis() { # port name  (its pid in REDIS_LAUNCHED)
  taskset -c "$SCPU" redis-server --port "$1" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$WORK" --logfile "$WORK/$2.log" &
  REDIS_LAUNCHED=$!
  PIDS+=($!)
  local i
  for i in $(seq 100); do
    [ "$(redis-cli -p "$1" PING 2>/dev/null)" = PONG ] && return 0
    sleep 0.1
  done
  echo "bench: redis-server on $1 did not start" >&2
  exit 1
}

# Starts a tokend binary on a port, pinned to the server core, and waits
# for it to be ready; its pid in LAUNCHED.
LAUNCHED=
launch() { # binary port name args...
  local bin=$1 port=$2 name=$3
  shift 3
  : >"$WORK/tokend-$name.log"
  taskset -c "$SCPU" "$bin" --port "$port" "$@" >>"$WORK/tokend-$name.log" 2>&1 &
  LAUNCHED=$!
  PIDS+=("$LAUNCHED")
  local i
  for i in $(seq 6000); do
    grep -q "ready to accept connections" "$WORK/tokend-$name.log" && return 0
    kill -0 "$LAUNCHED" 2>/dev/null || break
    sleep 0.01
  done
  echo "bench: tokend ($name) did not start; its log:" >&2
  cat "$WORK/tokend-$name.log" >&2
  exit 1
}

TOKEND_PID=
start_tokend() { # name args...
  launch "$TOKEND" "$TOK_PORT" "$@"
  TOKEND_PID=$LAUNCHED
}

stop_tokend() {
  kill -TERM "$TOKEND_PID" 2>/dev/null || true
  wait "$TOKEND_PID" 2>/dev/null || true
}

# A second tokend on $ALT_PORT (any binary), for pairs of runs against two
# servers up at once; its pid in ALT_PID.
ALT_PID=
start_alt() { # binary name args...
  local bin=$1
  shift
  launch "$bin" "$ALT_PORT" "$@"
  ALT_PID=$LAUNCHED
}

stop_alt() {
  kill -TERM "$ALT_PID" 2>/dev/null || true
  wait "$ALT_PID" 2>/dev/null || true
}

# Scrapes http://127.0.0.1:$1/metrics every second until killed (bash's
# /dev/tcp: the bench needs no HTTP client installed).
scraper() {
  while sleep 1; do
    { exec 3<>"/dev/tcp/127.0.0.1/$1" && printf 'GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n' >&3 && cat <&3 >/dev/null; } 2>/dev/null || true
    exec 3>&- 2>/dev/null || true
  done
}

# ---------------------------------------------------------------------------
# Load generator runs: $WORK/<name>.json holds the one-line JSON summary.

# The probes (one connection, one request at a time, whose worst wait is
# the server's longest stall) run at real-time priority where allowed.
# They share their core with the load: a subscriber taking 10M events
# apart, redis-cli parsing a 4.3 MB reply. At nice -10 the scheduler still
# let those finish their slice first: perf sched saw the mass-expiry probe
# wait 2-4 ms for its core 180 times in one run, none of it the server's.
# What is left on an idle server (2.7-4.6 ms at most in 3 s, as against
# Redis's 3.1-4.1 ms) is this VM's: its agent (PID 1, at nice -10) runs
# for about 3.5 ms once a second on either core.
if chrt -f 1 true 2>/dev/null; then PROBE_PRIO="chrt -f 1"; else PROBE_PRIO="nice -n -10"; fi
# A virtual machine's core can be taken away by its host: with both cores
# busy (two loops doing nothing else, no tokend) this VM lost one for 100 ms
# once or twice in 30 s, booked as steal time in /proc/stat. The probes
# watch the steal of both cores and say which of their slow replies the host
# held a core during; the target is still judged on the worst reply.
STEAL=(--host-steal-cpus "$SCPU,$CCPU")
# The probes also read the server's own timing of their commands: for the
# run its slow log keeps every command of 1 ms or more. A reply that waited
# 9 ms for a command the server took 0.1 ms over waited for something other
# than the server's locks: its thread to be run, the network, the client.
WATCH=("${STEAL[@]}" --server-slowlog)

lg() { # name args...  (LG_PRIO="chrt -f 1", say: run under that)
  local name=$1
  shift
  echo "-- $name: tokend-bench $*" >&2
  # Progress and the summary go to the terminal (indented) and to $name.err.
  # LG_PRIO unquoted: a command and its arguments.
  if ! timeout 600 ${LG_PRIO:-} taskset -c "$CCPU" "$LG" --json --label "$name" "$@" 2>&1 >"$WORK/$name.json" |
    tee "$WORK/$name.err" | sed 's/^/   /' >&2; then
    echo "bench: run $name failed" >&2
    echo '{"failed":true}' >"$WORK/$name.json"
  fi
}

# The value of a field of a run's JSON ("" when absent).
jget() {
  sed -n "s/.*\"$2\":\(\"[^\"]*\"\|[^,}]*\).*/\1/p" "$WORK/$1.json" 2>/dev/null | tr -d '"' | head -1
}

# Numbers may be missing ("" or "null") when a run failed: never a "yes" then.
fmt_int() { awk -v x="$1" 'BEGIN { if (x == "" || x == "null") print "failed"; else printf "%.0f\n", x }'; }
ratio() {
  awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || a == "null" || b == "" || b == "null" || b + 0 == 0) print "n/a"; else printf "%.2f\n", a / b }'
}
ge() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "n/a" || a == "" || a == "null") print "no"; else print (a + 0 >= b + 0) ? "yes" : "no" }'; }
le() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "n/a" || a == "" || a == "null") print "no"; else print (a + 0 <= b + 0) ? "yes" : "no" }'; }
cell() { # run -> "ops/s (p99 µs)"
  local o
  o=$(jget "$1" ops_per_sec)
  if [ -z "$o" ]; then echo "failed"; else echo "$(fmt_int "$o") ($(jget "$1" p99_us) µs)"; fi
}

rflush() { redis-cli -p "$1" FLUSHALL >/dev/null; }

# redis-benchmark, CSV; "$WORK/rb-<name>.csv".
# CPU time of a process, all its threads, ns (schedstat: exact, where
# /proc/<pid>/stat counts 10 ms ticks).
cpu_ns() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{ s += $1 } END { printf "%.0f\n", s }'; }
rb() { # name port args...  (RB_PID=pid: the server's CPU for the run in rb-<name>.cpu, ns)
  local name=$1 port=$2 c0=
  shift 2
  echo "-- $name: redis-benchmark -p $port $*" >&2
  [ -n "${RB_PID:-}" ] && c0=$(cpu_ns "$RB_PID")
  timeout 120 taskset -c "$CCPU" redis-benchmark -p "$port" --csv "$@" >"$WORK/rb-$name.csv" 2>"$WORK/rb-$name.err" || true
  [ -n "$c0" ] && echo $(($(cpu_ns "$RB_PID") - c0)) >"$WORK/rb-$name.cpu"
  sed 's/^/   /' "$WORK/rb-$name.csv" >&2
}
# Field of a redis-benchmark CSV row: rps is field 2, p99 ms field 7.
rbget() { grep "^\"$2" "$WORK/rb-$1.csv" 2>/dev/null | head -1 | cut -d, -f"$3" | tr -d '"\r'; }

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
used_memory() { redis-cli -p "$1" INFO memory | tr -d '\r' | awk -F: '/^used_memory:/ { print $2 }'; }

# ---------------------------------------------------------------------------
log "machine"
CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
NPROC=$(nproc)
LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)
echo "nproc $NPROC, $CPU_MODEL, load $LOADAVG" >&2

start_redis "$REF_PORT" redis-ref
REF_PID=$REDIS_LAUNCHED
start_redis "$BACK_PORT" redis-backing
redis-cli -p "$REF_PORT" FUNCTION LOAD REPLACE "$(cat scripts/tokens.lua)" >/dev/null
REF=(--port "$REF_PORT" --target redis-fn)
TOK=(--port "$TOK_PORT" --target tokend)
D=(--duration "$SECS")

# The workloads of the matrix: name and tokend-bench arguments.
W_CYCLE16=(-w cycle -c 50 -P 16 --tokens "$SMALL_TOKENS")
W_CYCLE1=(-w cycle -c 50 -P 1 --tokens "$SMALL_TOKENS")
W_GEN=(-w gen -c 4 -P 64)
W_MIXED=(-w mixed -c 50 -P 16 --tokens "$SMALL_TOKENS")

matrix() { # prefix target-args...
  local p=$1
  shift
  # GEN last: it leaves millions of tokens behind.
  lg "$p-cycle16" "$@" "${D[@]}" "${W_CYCLE16[@]}" --pool cycle16
  lg "$p-cycle1" "$@" "${D[@]}" "${W_CYCLE1[@]}" --pool cycle1
  lg "$p-mixed" "$@" "${D[@]}" "${W_MIXED[@]}" --pool mixed
  lg "$p-gen" "$@" "${D[@]}" "${W_GEN[@]}" --pool gen
}

# --- tokend in memory against the Redis library, workload by workload -----
log "tokend in memory vs Redis function library"
start_tokend mem
# One run of a matrix workload against tokend, then Redis: mem-<w><suffix>
# and redis-<w><suffix>.
mem_vs_ref() { # workload suffix
  local args
  case $1 in
    cycle16) args=("${W_CYCLE16[@]}") ;;
    cycle1) args=("${W_CYCLE1[@]}") ;;
    mixed) args=("${W_MIXED[@]}") ;;
  esac
  lg "mem-$1$2" "${TOK[@]}" "${D[@]}" "${args[@]}" --pool "$1"
  rflush "$REF_PORT"
  lg "redis-$1$2" "${REF[@]}" "${D[@]}" "${args[@]}" --pool "$1"
  rflush "$REF_PORT"
}
for w in cycle16 cycle1 mixed; do
  mem_vs_ref "$w" ""
done
# The two cycle rows with targets alternate twice more and take medians
# (one 5 s run can land in a slow stretch of this shared VM).
for r in 2 3; do
  for w in cycle16 cycle1; do
    mem_vs_ref "$w" "-$r"
  done
done
lg mem-ping "${TOK[@]}" "${D[@]}" -w ping -c 50 -P 1
lg redis-ping "${REF[@]}" "${D[@]}" -w ping -c 50 -P 1
# PING p99 alternates too ($PING_ROUNDS pairs; medians): one pair is a
# fraction of a second, where a neighbour's burst decides the tail.
for r in $(seq "$PING_ROUNDS"); do
  RB_PID=$TOKEND_PID rb "tokend-ping-$r" "$TOK_PORT" -t ping -P 16 -c 50 -n 400000
  RB_PID=$REF_PID rb "redis-ping-$r" "$REF_PORT" -t ping -P 16 -c 50 -n 400000
done
# The protocol ceiling without pipelining, and what one client alone sees:
# one connection, one cycle request at a time (alternating runs; medians).
for r in $(seq "$PING_ROUNDS"); do
  RB_PID=$TOKEND_PID rb "tokend-ping1-$r" "$TOK_PORT" -t ping_mbulk -c 50 -n 200000
  RB_PID=$REF_PID rb "redis-ping1-$r" "$REF_PORT" -t ping_mbulk -c 50 -n 200000
  lg "lat1-tok-$r" "${TOK[@]}" --duration 2 -w cycle -c 1 -P 1 --tokens "$SMALL_TOKENS" --pool lat1
  lg "lat1-ref-$r" "${REF[@]}" --duration 2 -w cycle -c 1 -P 1 --tokens "$SMALL_TOKENS" --pool lat1
done
# The same three against a tokend that polls before it sleeps
# (--idle-poll-us 100, off by default), alternating with Redis again.
start_alt "$TOKEND" poll --idle-poll-us 100
POLL_PID=$ALT_PID
for r in $(seq "$PING_ROUNDS"); do
  RB_PID=$POLL_PID rb "poll-ping-$r" "$ALT_PORT" -t ping -P 16 -c 50 -n 400000
  RB_PID=$REF_PID rb "redis-pingb-$r" "$REF_PORT" -t ping -P 16 -c 50 -n 400000
  RB_PID=$POLL_PID rb "poll-ping1-$r" "$ALT_PORT" -t ping_mbulk -c 50 -n 200000
  RB_PID=$REF_PID rb "redis-ping1b-$r" "$REF_PORT" -t ping_mbulk -c 50 -n 200000
  lg "lat1-poll-$r" --port "$ALT_PORT" --target tokend --duration 2 -w cycle -c 1 -P 1 --tokens "$SMALL_TOKENS" --pool lat1
  lg "lat1-refb-$r" "${REF[@]}" --duration 2 -w cycle -c 1 -P 1 --tokens "$SMALL_TOKENS" --pool lat1
done
stop_alt
rb tokend-ping "$TOK_PORT" -t ping -P 16 -c 50 -n 200000
rb redis-pingset "$REF_PORT" -t ping,set -P 16 -c 50 -n 200000
rb tokend-stats "$TOK_PORT" -n 200000 -c 50 -P 16 TOKEN.STATS p
rflush "$REF_PORT"
lg mem-gen "${TOK[@]}" "${D[@]}" "${W_GEN[@]}" --pool gen
lg redis-gen "${REF[@]}" "${D[@]}" "${W_GEN[@]}" --pool gen
rflush "$REF_PORT"
stop_tokend

# --- many small pools --------------------------------------------------------
log "$POOLS_N pools of one token each"
start_tokend pools
sleep 0.5
rflush "$REF_PORT"
# Users who keep a pool per tenant have millions of pools of a few tokens.
# Measured like memory per token (below): tokend's whole RSS growth against Redis's
# used_memory growth (the same pools as FCALLs: a set, a key with a TTL).
POOLS_RSS0=$(rss_kb "$TOKEND_PID")
lg pools-fill "${TOK[@]}" -w pools --tokens "$POOLS_N" --pool tenant
POOLS_RSS1=$(rss_kb "$TOKEND_PID")
UM0=$(used_memory "$REF_PORT")
lg redis-pools-fill "${REF[@]}" -w pools --tokens "$POOLS_N" --pool tenant
UM1=$(used_memory "$REF_PORT")
rflush "$REF_PORT"
TOK_BPP=$(awk -v a="$POOLS_RSS0" -v b="$POOLS_RSS1" -v n="$POOLS_N" 'BEGIN { printf "%.0f", (b - a) * 1024 / n }')
REDIS_BPP=$(awk -v a="$UM0" -v b="$UM1" -v n="$POOLS_N" 'BEGIN { printf "%.0f", (b - a) / n }')
echo "tokend RSS $POOLS_RSS0 -> $POOLS_RSS1 kB ($TOK_BPP B/pool); Redis used_memory $UM0 -> $UM1 ($REDIS_BPP B/pool)" >&2
stop_tokend

# --- memory per token, ACQUIRE at 10M vs 10k --------------------------------
log "memory per token at $MEM_TOKENS tokens; ACQUIRE at $BIG_TOKENS vs $SMALL_TOKENS tokens"
start_tokend big
sleep 0.5
RSS0=$(rss_kb "$TOKEND_PID")
lg mem-fill "${TOK[@]}" -w fill --tokens "$MEM_TOKENS" --pool mem
RSS1=$(rss_kb "$TOKEND_PID")
rflush "$REF_PORT"
UM0=$(used_memory "$REF_PORT")
lg redis-fill "${REF[@]}" -w fill --tokens "$MEM_TOKENS" --pool mem
UM1=$(used_memory "$REF_PORT")
rflush "$REF_PORT"
TOK_BPT=$(awk -v a="$RSS0" -v b="$RSS1" -v n="$MEM_TOKENS" 'BEGIN { printf "%.1f", (b - a) * 1024 / n }')
REDIS_BPT=$(awk -v a="$UM0" -v b="$UM1" -v n="$MEM_TOKENS" 'BEGIN { printf "%.1f", (b - a) / n }')
echo "tokend RSS $RSS0 -> $RSS1 kB ($TOK_BPT B/token); Redis used_memory $UM0 -> $UM1 ($REDIS_BPT B/token)" >&2
# Both pools live in the same server. On this kind of shared VM the same run
# moves by ±20% from one second to the next (other tenants on the host), so
# one run of each size decides nothing: the runs come in $ACQ_ROUNDS adjacent
# pairs of $ACQ_SECS s (10k then 10M), and the ratio is the median of the
# pairs' ratios.
lg acq-fill-small "${TOK[@]}" -w fill --tokens "$SMALL_TOKENS" --pool acqsmall
lg acq-fill-big "${TOK[@]}" -w fill --tokens "$BIG_TOKENS" --pool acqbig
for r in $(seq "$ACQ_ROUNDS"); do
  lg "acq-small-$r" "${TOK[@]}" --duration "$ACQ_SECS" -w acquire -c 50 -P 16 --pool acqsmall
  lg "acq-big-$r" "${TOK[@]}" --duration "$ACQ_SECS" -w acquire -c 50 -P 16 --pool acqbig
done
stop_tokend

# --- UNLINK of a big pool: does its shard stall? ----------------------------
log "UNLINK of a $BIG_TOKENS-token pool while a client works on another pool of its shard"
# One shard, so that both pools share it. The probe is one connection doing
# ACQUIRE → UNBLOCK one request at a time on a small pool; its worst latency
# while the big pool is unlinked is the stall, next to its worst without.
start_tokend unlink --shards 1
lg unlink-fill "${TOK[@]}" -w fill --tokens "$BIG_TOKENS" --pool unlinkbig
LG_PRIO=$PROBE_PRIO lg unlink-calm "${TOK[@]}" "${WATCH[@]}" --duration 3 -w acquire -c 1 -P 1 --tokens 100 --pool probe
# The probe covers the UNLINK and the freeing it starts (1.5 s: a 2 MiB
# chunk every 5 ms); a second probe the 3 s after, when a VM that reports
# freed memory to its host (virtio-balloon free page reporting, 2 s after
# the pages were freed) can stall every process on it.
LG_PRIO=$PROBE_PRIO lg unlink-probe "${TOK[@]}" "${WATCH[@]}" --duration 2.7 -w acquire -c 1 -P 1 --pool probe &
PROBE_PID=$!
sleep 1
U0=$(date +%s%N)
UNLINK_REPLY=$(taskset -c "$SCPU" redis-cli -p "$TOK_PORT" UNLINK unlinkbig)
U1=$(date +%s%N)
wait "$PROBE_PID" || true
LG_PRIO=$PROBE_PRIO lg unlink-after "${TOK[@]}" "${WATCH[@]}" --duration 3 -w acquire -c 1 -P 1 --pool probe
UNLINK_MS=$(awk -v a="$U0" -v b="$U1" 'BEGIN { printf "%.1f", (b - a) / 1e6 }')
echo "UNLINK answered $UNLINK_REPLY in $UNLINK_MS ms (redis-cli included)" >&2
stop_tokend

# --- GEN COUNT 100000: does its shard stall? --------------------------------
log "GEN COUNT 100000 while a client works on another pool of its shard"
# The same probe as for UNLINK, one shard; three GENs of 100,000 tokens into
# new pools, 300 ms apart, while it runs.
start_tokend genstall --shards 1
LG_PRIO=$PROBE_PRIO lg genstall-calm "${TOK[@]}" "${WATCH[@]}" --duration 2 -w acquire -c 1 -P 1 --tokens 100 --pool probe
# The probe shares its core with redis-cli, which takes each 4.3 MB reply
# apart while the server is still sending it (see PROBE_PRIO).
LG_PRIO=$PROBE_PRIO lg genstall-probe "${TOK[@]}" "${WATCH[@]}" --duration 2 -w acquire -c 1 -P 1 --pool probe &
PROBE_PID=$!
sleep 0.5
for i in 1 2 3; do
  taskset -c "$CCPU" redis-cli -p "$TOK_PORT" TOKEN.GEN "genbig$i" COUNT 100000 >/dev/null
  sleep 0.3
done
wait "$PROBE_PID" || true
stop_tokend

# --- mass expiry: the shard's lock is held a batch at a time ----------------
log "mass expiry: $MASS_TOKENS tokens due within 2 s while a client works on another pool of the shard"
# One shard, so the probe's pool shares the big pool's. The expiry workload
# makes the tokens (its 30 s lead covers making 10M) and subscribes to every
# expired event; the probe runs from 6 s before the window to 18 s after it.
start_tokend massexp --shards 1
LG_PRIO=$PROBE_PRIO lg mass-calm "${TOK[@]}" "${WATCH[@]}" --duration 26 -w acquire -c 1 -P 1 --tokens 100 --pool probe
lg mass-expiry "${TOK[@]}" "${STEAL[@]}" -w expiry --tokens "$MASS_TOKENS" --spread-ms 2000 --lead-ms 30000 --expiry-timeout 30 --linger-secs 20 --pool big --server-pid "$TOKEND_PID" &
MASS_PID=$!
sleep 24
# The probe shares its core with the subscriber, busy for the whole drain
# (see PROBE_PRIO). The expiry workload keeps its 10M-entry tables until the
# probe is done: a process freeing gigabytes as it exits stalls the core it
# exits on (a 3 GB one exiting next to this probe: max 8.0, 13.3, 4.0 ms
# against 3.2, 4.4, 4.1 ms without).
LG_PRIO=$PROBE_PRIO lg mass-probe "${TOK[@]}" "${WATCH[@]}" --duration 26 -w acquire -c 1 -P 1 --pool probe
wait "$MASS_PID" || true
stop_tokend

# --- lease soak: timers stay O(live tokens) ---------------------------------
log "soak: cycle with 1 h leases against 1 s leases, $SOAK_SECS s each (peak RSS)"
# Every ACQUIRE arms a lease timer that UNBLOCK leaves behind; with 1 h
# leases they would pile up for an hour unless swept. Peak RSS of each run,
# sampled every second, on a fresh server.
soak() { # name lease-ms
  start_tokend "$1"
  (while kill -0 "$TOKEND_PID" 2>/dev/null; do rss_kb "$TOKEND_PID"; sleep 1; done >"$WORK/$1.rss") 2>/dev/null &
  local sampler=$!
  lg "$1" "${TOK[@]}" --duration "$SOAK_SECS" -w cycle -c 50 -P 16 --tokens "$SMALL_TOKENS" --lease-ms "$2" --pool soak
  stop_tokend
  wait "$sampler" 2>/dev/null || true
}
soak soak-1h 3600000
soak soak-1s 1000
SOAK_LONG_KB=$(sort -n "$WORK/soak-1h.rss" | tail -1)
SOAK_SHORT_KB=$(sort -n "$WORK/soak-1s.rss" | tail -1)
echo "peak RSS: 1 h leases $SOAK_LONG_KB kB, 1 s leases $SOAK_SHORT_KB kB" >&2

# --- expiry: N tokens due in the same second --------------------------------
log "expiry: $EXPIRY_TOKENS tokens due in the same second"
# tokend's run is repeated ($EXP_ROUNDS runs, each on a fresh server; the
# p99 is their median): one second is short enough for a neighbour's burst
# on this kind of shared VM to decide a tail on its own. The Redis run is
# seconds late either way.
for r in $(seq "$EXP_ROUNDS"); do
  start_tokend "expiry-$r"
  lg "mem-expiry-$r" "${TOK[@]}" -w expiry --tokens "$EXPIRY_TOKENS" --pool exp --lead-ms 3000 --expiry-timeout 15
  stop_tokend
done
rflush "$REF_PORT"
lg redis-expiry "${REF[@]}" -w expiry --tokens "$EXPIRY_TOKENS" --pool exp --lead-ms 4000 --expiry-timeout 15
rflush "$REF_PORT"

# --- event burst: N tokens due within 100 ms ---------------------------------
log "event burst: $EXPIRY_TOKENS tokens due within 100 ms, one subscriber"
for r in $(seq "$EXP_ROUNDS"); do
  start_tokend "burst-$r"
  lg "burst-$r" "${TOK[@]}" -w expiry --tokens "$EXPIRY_TOKENS" --spread-ms 100 --pool burst --lead-ms 3000 --expiry-timeout 15 --server-pid "$TOKEND_PID"
  stop_tokend
done

# --- what observability costs -------------------------------------------------
# Two servers up at once on the server core, the cycle workload alternating
# between them in $OBS_ROUNDS adjacent pairs of $ACQ_SECS s; the ratio is the
# median of the pairs' ratios. Per-command statistics (INFO commandstats,
# latencystats) are always on: --metrics-addr adds the endpoint and the
# scrapes. With BENCH_BASELINE, the same pairs against that binary.
W_OBS=(--duration "$ACQ_SECS" -w cycle -c 50 -P 16 --tokens "$SMALL_TOKENS" --pool obs)
ALT=(--port "$ALT_PORT" --target tokend)
OBS_RAN=
if "$TOKEND" --help 2>/dev/null | grep -q -- --metrics-addr; then
  OBS_RAN=1
  log "observability: /metrics scraped every second vs no endpoint"
  start_tokend obs-off
start_alt "$TOKEND" obs-on --metrics-addr "127.0.0.1:$MET_PORT"
scraper "$MET_PORT" &
SCRAPER_PID=$!
PIDS+=("$SCRAPER_PID")
for r in $(seq "$OBS_ROUNDS"); do
  lg "obs-off-$r" "${TOK[@]}" "${W_OBS[@]}"
  lg "obs-on-$r" "${ALT[@]}" "${W_OBS[@]}"
done
kill "$SCRAPER_PID" 2>/dev/null || true
curl_ok=$(exec 3<>"/dev/tcp/127.0.0.1/$MET_PORT" && printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3 && grep -c '^tokend_' <&3 || echo 0)
echo "metrics endpoint answered with $curl_ok tokend_ samples" >&2
stop_alt
else
  echo "bench: this tokend has no --metrics-addr; no observability rows" >&2
  start_tokend obs-off
fi
BASE_WORKLOADS=(cycle16 cycle1 mixed gen)
base_args() { # workload -> tokend-bench arguments
  case $1 in
    cycle16) echo -w cycle -c 50 -P 16 --tokens "$SMALL_TOKENS" ;;
    cycle1) echo -w cycle -c 50 -P 1 --tokens "$SMALL_TOKENS" ;;
    mixed) echo -w mixed -c 50 -P 16 --tokens "$SMALL_TOKENS" ;;
    gen) echo -w gen -c 4 -P 64 ;;
  esac
}
if [ -n "$BASELINE" ]; then
  log "this build vs $BASELINE, workload by workload"
  start_alt "$BASELINE" baseline
  for w in "${BASE_WORKLOADS[@]}"; do
    read -r -a wargs <<<"$(base_args "$w")"
    for r in $(seq "$OBS_ROUNDS"); do
      lg "base-new-$w-$r" "${TOK[@]}" --duration "$ACQ_SECS" "${wargs[@]}" --pool "b$w"
      lg "base-old-$w-$r" "${ALT[@]}" --duration "$ACQ_SECS" "${wargs[@]}" --pool "b$w"
    done
  done
  stop_alt
fi
stop_tokend

# --- the HTTP API against RESP ------------------------------------------------
HTTP_RAN=
if "$TOKEND" --help 2>/dev/null | grep -q -- --http-addr; then
  HTTP_RAN=1
  log "HTTP API vs RESP: ACQUIRE → UNBLOCK, 50 connections, one request at a time each"
  start_tokend http --http-addr "127.0.0.1:$HTTP_PORT"
  lg http-fill "${TOK[@]}" -w fill --tokens "$SMALL_TOKENS" --pool http
  for r in 1 2 3; do
    lg "http-resp-$r" "${TOK[@]}" --duration "$ACQ_SECS" -w acquire -c 50 -P 1 --pool http
    lg "http-http-$r" --port "$HTTP_PORT" --target http --duration "$ACQ_SECS" -w acquire -c 50 -P 1 --pool http
  done
  stop_tokend
fi

# --- tokend with a backing Redis: sync, async --------------------------------
for mode in sync async; do
  log "tokend --durability $mode (backing redis-server on the server core)"
  rflush "$BACK_PORT"
  start_tokend "$mode" --redis "redis://127.0.0.1:$BACK_PORT/0" --durability "$mode"
  matrix "$mode" "${TOK[@]}"
  if [ "$mode" = sync ]; then
    # The sync target's row: runs minutes apart moved by ±40% on this VM
    # (the same binary 131k–197k ops/s, Redis fn 82k–137k, alternated), so
    # it comes from adjacent pairs like the other comparisons.
    for r in $(seq "$OBS_ROUNDS"); do
      lg "syncpair-tok-$r" "${TOK[@]}" --duration "$ACQ_SECS" -w cycle -c 50 -P 16 --tokens 10000 --pool "syncpair$r"
      lg "syncpair-ref-$r" "${REF[@]}" --duration "$ACQ_SECS" -w cycle -c 50 -P 16 --tokens 10000 --pool "syncpair$r"
    done
    rflush "$REF_PORT"
  fi
  stop_tokend
  rflush "$BACK_PORT"
done

# --- recovery of N tokens ----------------------------------------------------
# One pool filled to each size in turn; tokend (one shard) is restarted at
# each size and timed from its start to "ready to accept connections".
# After the last, the probe runs on another pool of the shard for 2 s; the
# same probe first runs on the empty server (sync mode: each request waits
# for its backing write) for the row's comparison.
REC_ROWS=()
REC_HAVE=0
REC_N=0
start_tokend rec-fill --shards 1 --redis "redis://127.0.0.1:$BACK_PORT/0" --durability sync
LG_PRIO=$PROBE_PRIO lg rec-calm "${TOK[@]}" "${WATCH[@]}" --duration 2 -w acquire -c 1 -P 1 --tokens 100 --pool probecalm
for size in $REC_SIZES; do
  REC_N=$((REC_N + 1))
  log "recovery of $size tokens from the backing Redis"
  lg "rec-fill-$REC_N" "${TOK[@]}" -w fill --tokens "$((size - REC_HAVE))" --pool rec
  REC_HAVE=$size
  stop_tokend
  T0=$(date +%s%N)
  start_tokend "rec-$REC_N" --shards 1 --redis "redis://127.0.0.1:$BACK_PORT/0" --durability sync
  T1=$(date +%s%N)
  secs=$(awk -v a="$T0" -v b="$T1" 'BEGIN { printf "%.2f", (b - a) / 1e9 }')
  load_ms=$(sed -n 's/.*loaded from the backing Redis.* ms=\([0-9]*\).*/\1/p' "$WORK/tokend-rec-$REC_N.log" | head -1)
  total=$(redis-cli -p "$TOK_PORT" TOKEN.STATS rec | sed -n '2p')
  echo "recovered $total tokens: ready after $secs s (loading: ${load_ms:-?} ms)" >&2
  REC_ROWS+=("$size $secs ${load_ms:-?} ${total:-?}")
done
LG_PRIO=$PROBE_PRIO lg rec-probe "${TOK[@]}" "${WATCH[@]}" --duration 2 -w acquire -c 1 -P 1 --tokens 100 --pool probe
stop_tokend
rflush "$BACK_PORT"

# --- cluster mode: the cost of fencing, and failover -------------------------
# Served slots of a node, or "" while it does not answer.
served() { redis-cli -p "$1" INFO cluster 2>/dev/null | tr -d '\r' | awk -F: '/^cluster_slots_served:/ { v = $2 } END { print v + 0 }'; }
moving() { redis-cli -p "$1" INFO cluster 2>/dev/null | tr -d '\r' | awk -F: '/^cluster_slots_moving:/ { v = $2 } END { print (v == "") ? 1 : v }'; }
# Waits until the nodes on these ports together serve every slot and none is
# moving one.
cluster_settled() { # ports...
  local p sum mv i
  for i in $(seq 3000); do
    sum=0 mv=0
    for p in "$@"; do
      sum=$((sum + $(served "$p")))
      mv=$((mv + $(moving "$p")))
    done
    [ "$sum" = 16384 ] && [ "$mv" = 0 ] && return 0
    sleep 0.01
  done
  echo "bench: the cluster on $* did not settle" >&2
  return 1
}

log "one node in cluster mode against one standalone node, both --durability sync"
rflush "$BACK_PORT"
start_tokend csync-std --redis "redis://127.0.0.1:$BACK_PORT/0" --durability sync
start_alt "$TOKEND" csync-cl --redis "redis://127.0.0.1:$BACK_PORT/0" --redis-prefix cl: --durability sync --cluster-enabled yes
cluster_settled "$ALT_PORT"
for r in $(seq "$OBS_ROUNDS"); do
  lg "clpair-std-$r" "${TOK[@]}" --duration "$ACQ_SECS" -w cycle -c 50 -P 16 --tokens 10000 --pool "clpair$r"
  lg "clpair-cl-$r" --port "$ALT_PORT" --target tokend --duration "$ACQ_SECS" -w cycle -c 50 -P 16 --tokens 10000 --pool "clpair$r"
done
stop_alt
stop_tokend
rflush "$BACK_PORT"

# Failover of a 3-node cluster over the backing store at $1: FO_MS gets each
# kill's time, FO_TOTAL the tokens still there at the end.
FO_PORTS=("$TOK_PORT" "$ALT_PORT" "$CL3_PORT")
FO_POOLS=200
failover() { # backing-url label
  local url=$1 label=$2 i k victim T0 T1 per_pool=$((FO_TOKENS / FO_POOLS))
  log "failover over $label: 3 nodes, $FO_TOKENS tokens, kill -9 of one node, $FO_KILLS times"
  FO_PIDS=() FO_MS=() FO_TOTAL=0
  fo_start() { # index
    launch "$TOKEND" "${FO_PORTS[$1]}" "fo-$label-$1" --redis "$url" --durability sync --cluster-enabled yes
    FO_PIDS[$1]=$LAUNCHED
  }
  for i in 0 1 2; do fo_start "$i"; done
  cluster_settled "${FO_PORTS[@]}"
  for i in $(seq 0 $((FO_POOLS - 1))); do
    redis-cli -c -p "$TOK_PORT" TOKEN.GEN "fo$i" PX 3600000 COUNT "$per_pool" >/dev/null
  done
  for k in $(seq "$FO_KILLS"); do
    victim=$(((k - 1) % 3))
    survivors=()
    for i in 0 1 2; do [ "$i" = "$victim" ] || survivors+=("${FO_PORTS[$i]}"); done
    T0=$(date +%s%N)
    kill -9 "${FO_PIDS[$victim]}"
    wait "${FO_PIDS[$victim]}" 2>/dev/null || true
    cluster_settled "${survivors[@]}"
    T1=$(date +%s%N)
    FO_MS+=("$(((T1 - T0) / 1000000))")
    echo "kill $k (node $victim): every slot served again after ${FO_MS[-1]} ms" >&2
    fo_start "$victim"
    cluster_settled "${FO_PORTS[@]}"
  done
  for i in $(seq 0 $((FO_POOLS - 1))); do
    FO_TOTAL=$((FO_TOTAL + $(redis-cli -c -p "$TOK_PORT" TOKEN.STATS "fo$i" | sed -n '2p')))
  done
  for i in 0 1 2; do kill -TERM "${FO_PIDS[$i]}" 2>/dev/null || true; wait "${FO_PIDS[$i]}" 2>/dev/null || true; done
}

failover "redis://127.0.0.1:$BACK_PORT/0" redis-server
FO_LIST=("${FO_MS[@]}") FO_TOTAL_S=$FO_TOTAL
rflush "$BACK_PORT"

# The same over a backing Redis Cluster of three masters (on the server core).
RC_PORTS=("$RC1_PORT" "$RC2_PORT" "$RC3_PORT")
for p in "${RC_PORTS[@]}"; do
  mkdir -p "$WORK/rc-$p"
  taskset -c "$SCPU" redis-server --port "$p" --bind 127.0.0.1 --save '' --appendonly no --cluster-enabled yes \
    --cluster-config-file "nodes-$p.conf" --dir "$WORK/rc-$p" --logfile "$WORK/rc-$p/redis.log" &
  PIDS+=($!)
done
for p in "${RC_PORTS[@]}"; do
  for i in $(seq 100); do [ "$(redis-cli -p "$p" PING 2>/dev/null)" = PONG ] && break; sleep 0.1; done
done
redis-cli --cluster create "${RC_PORTS[@]/#/127.0.0.1:}" --cluster-yes >"$WORK/rc-create.log" 2>&1
for p in "${RC_PORTS[@]}"; do
  for i in $(seq 200); do redis-cli -p "$p" CLUSTER INFO | grep -q '^cluster_state:ok' && break; sleep 0.1; done
done
failover "redis://127.0.0.1:$RC1_PORT/0" redis-cluster
FOC_LIST=("${FO_MS[@]}") FOC_TOTAL=$FO_TOTAL
for p in "${RC_PORTS[@]}"; do redis-cli -p "$p" SHUTDOWN NOSAVE >/dev/null 2>&1 || true; done

# ---------------------------------------------------------------------------
log "writing $OUT"
ELAPSED=$(($(date +%s) - STARTED))

v() { jget "$@"; }
C16_T=$(v mem-cycle16 ops_per_sec) C16_R=$(v redis-cycle16 ops_per_sec)
C1_T=$(v mem-cycle1 ops_per_sec) C1_R=$(v redis-cycle1 ops_per_sec)
G_T=$(v mem-gen ops_per_sec) G_R=$(v redis-gen ops_per_sec)
# ACQUIRE at 10M vs 10k: medians of each size and of the pairs' ratios.
acq_runs() { for r in $(seq "$ACQ_ROUNDS"); do fmt_int "$(v "acq-$1-$r" ops_per_sec)"; done; }
acq_ratios() { for r in $(seq "$ACQ_ROUNDS"); do ratio "$(v "acq-big-$r" ops_per_sec)" "$(v "acq-small-$r" ops_per_sec)"; done; }
median() { { grep -v 'failed\|n/a' || true; } | sort -n | awk '{ a[NR] = $1 } END { if (NR == 0) print ""; else if (NR % 2) print a[(NR + 1) / 2]; else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
A_SMALL=$(acq_runs small | median) A_BIG=$(acq_runs big | median)
A_RATIOS=$(acq_ratios | paste -sd' ')
# The cycle rows: medians of their three alternating runs.
three() { for n in "$1" "$1-2" "$1-3"; do v "$n" ops_per_sec; done | { grep -v '^$\|null' || true; }; }
C16_T=$(three mem-cycle16 | median) C16_R=$(three redis-cycle16 | median)
C1_T=$(three mem-cycle1 | median) C1_R=$(three redis-cycle1 | median)
three_ops() { three "$1" | while read -r x; do fmt_int "$x"; done | paste -sd' '; }
C16_ALL="tokend: $(three_ops mem-cycle16); Redis fn: $(three_ops redis-cycle16)"
C1_ALL="tokend: $(three_ops mem-cycle1); Redis fn: $(three_ops redis-cycle1)"
R_C16=$(ratio "$C16_T" "$C16_R") R_C1=$(ratio "$C1_T" "$C1_R") R_G=$(ratio "$G_T" "$G_R")
R_ACQ=$(acq_ratios | median)
UNLINK_MAX_MS=$(awk -v x="$(v unlink-probe max_us)" 'BEGIN { if (x == "") print ""; else printf "%.2f", x / 1000 }')
UNLINK_CALM_MS=$(awk -v x="$(v unlink-calm max_us)" 'BEGIN { if (x == "") print ""; else printf "%.2f", x / 1000 }')
GENSTALL_MS=$(awk -v x="$(v genstall-probe max_us)" 'BEGIN { if (x == "") print ""; else printf "%.2f", x / 1000 }')
REC_PROBE_MS=$(awk -v x="$(v rec-probe max_us)" 'BEGIN { if (x == "") print ""; else printf "%.2f", x / 1000 }')
REC_CALM_MS=$(awk -v x="$(v rec-calm max_us)" 'BEGIN { if (x == "") print ""; else printf "%.2f", x / 1000 }')
GENSTALL_CALM_MS=$(awk -v x="$(v genstall-calm max_us)" 'BEGIN { if (x == "") print ""; else printf "%.2f", x / 1000 }')
MASS_MS=$(awk -v x="$(v mass-probe max_us)" 'BEGIN { if (x == "") print ""; else printf "%.2f", x / 1000 }')
MASS_CALM_MS=$(awk -v x="$(v mass-calm max_us)" 'BEGIN { if (x == "") print ""; else printf "%.2f", x / 1000 }')
# When the window opened, in s from the probe's start (the probe's slow
# replies are timed from its start).
MASS_WIN_S=$(awk -v w="$(v mass-expiry window_epoch_ms)" -v b="$(v mass-probe began_epoch_ms)" 'BEGIN { if (w == "" || b == "" || w == "null") print ""; else printf "%.2f", (w - b) / 1000 }')
MASS_P999_MS=$(awk -v x="$(v mass-probe p999_us)" 'BEGIN { if (x == "") print ""; else printf "%.2f", x / 1000 }')
# The expiry workload's drain is from the window's start: after the last deadline is 2 s less.
MASS_AFTER_MS=$(awk -v x="$(v mass-expiry drain_ms)" 'BEGIN { if (x == "" || x == "null") print ""; else print x - 2000 }')
MASS_RECV=$(v mass-expiry received) MASS_P99=$(v mass-expiry late_p99_ms)
MASS_CPU_MS=$(v mass-expiry server_cpu_ms) MASS_CPU_EV=$(v mass-expiry server_cpu_per_event_us)
MASS_STEAL_MS=$(v mass-expiry host_steal_ms)
# A probe's worst reply while the host held neither core, ms ("" if not watched).
clean_ms() { awk -v x="$(v "$1" max_unstolen_us)" 'BEGIN { if (x == "") print ""; else printf "%.2f", x / 1000 }'; }
# What the host's steal time says of a probe's slow replies.
host_note() {
  local r=$1 stolen
  stolen=$(v "$r" host_steal_ms)
  [ -n "$stolen" ] || { echo "steal not watched"; return; }
  echo "the host held core $SCPU or $CCPU for $stolen ms in all (steal time); replies over 5 ms: $(v "$r" over_5ms)$(slow_at "$r"), $(v "$r" over_5ms_host_stolen) of them while it held one; the worst reply while it held neither: $(clean_ms "$r") ms; $(server_note "$r")"
}
# When a probe's replies over 5 ms were sent:
# ` (sent 6.512 s into the probe: 7.08 ms; 9.100 s: 5.20 ms; and 3 more)`.
slow_at() {
  local at
  at=$(v "$1" over_5ms_at)
  [ -n "$at" ] || return 0
  echo -n " (sent "
  echo -n "$at" | awk '{ for (i = 1; i <= NF; i++) { split($i, p, ":"); printf "%s%s", (i > 1 ? "; " : ""), ($i ~ /^\+/ ? "and " substr($i, 2) " more" : p[1] (i == 1 ? " s into the probe: " : " s: ") p[2] " ms") } }'
  echo -n ")"
}
# What the server's slow log said of a probe's commands.
server_note() { # run
  local n max
  n=$(v "$1" server_slow_commands) max=$(v "$1" server_slow_max_us)
  [ -n "$n" ] || { echo "the server's slow log not read"; return; }
  if [ "$n" = 0 ]; then
    echo "in the server (its slow log) none of the probe's commands took 1 ms"
  else
    echo "in the server (its slow log) $n of the probe's commands took 1 ms or more, the slowest $(awk -v x="$max" 'BEGIN { printf "%.2f", x / 1000 }') ms"
  fi
}
# A calm probe's worst reply, and the worst the host did not hold a core for
# when that is less.
calm_note() { # run ms
  local clean
  clean=$(clean_ms "$1")
  if [ -n "$clean" ] && [ -n "$2" ] && [ "$clean" != "$2" ]; then echo -n "$2 ms, $clean ms but for the host's steal"; else echo -n "${2:-?} ms"; fi
  local over
  over=$(v "$1" over_5ms)
  [ -n "$over" ] && echo -n ", replies over 5 ms: $over in $(awk -v x="$(v "$1" secs)" 'BEGIN { printf "%.0f", x }') s"
  echo "; $(server_note "$1")"
}
# "yes", or "no" with whether the worst reply the host did not hold a core for met it.
probe_met() {
  local r=$1 max=$2 clean
  if [ "$(le "$max" 5)" = yes ]; then echo yes; return; fi
  clean=$(clean_ms "$r")
  if [ -n "$clean" ] && [ "$(le "$clean" 5)" = yes ]; then echo "no (yes but for the host's steal)"; else echo no; fi
}
UNLINK_AFTER_MS=$(awk -v x="$(v unlink-after max_us)" 'BEGIN { if (x == "") print ""; else printf "%.2f", x / 1000 }')
R_SOAK=$(ratio "$SOAK_LONG_KB" "$SOAK_SHORT_KB")
SOAK_OPS_LONG=$(fmt_int "$(v soak-1h ops_per_sec)") SOAK_OPS_SHORT=$(fmt_int "$(v soak-1s ops_per_sec)")
pair_runs() { for r in $(seq "$OBS_ROUNDS"); do fmt_int "$(v "$1-$r" ops_per_sec)"; done; }
pair_ratios() { for r in $(seq "$OBS_ROUNDS"); do ratio "$(v "$1-$r" ops_per_sec)" "$(v "$2-$r" ops_per_sec)"; done; }
S16_T=$(pair_runs syncpair-tok | median) S16_R=$(pair_runs syncpair-ref | median)
R_S16=$(pair_ratios syncpair-tok syncpair-ref | median) R_S16_ALL=$(pair_ratios syncpair-tok syncpair-ref | paste -sd' ')
[ -n "$R_S16" ] || R_S16=n/a
CL_STD=$(pair_runs clpair-std | median) CL_CL=$(pair_runs clpair-cl | median)
R_CL=$(pair_ratios clpair-cl clpair-std | median) R_CL_ALL=$(pair_ratios clpair-cl clpair-std | paste -sd' ')
[ -n "$R_CL" ] || R_CL=n/a
FO_P50=$(printf '%s\n' "${FO_LIST[@]}" | median) FO_MAX=$(printf '%s\n' "${FO_LIST[@]}" | sort -n | tail -1)
FO_ALL=$(printf '%s ' "${FO_LIST[@]}")
FOC_P50=$(printf '%s\n' "${FOC_LIST[@]}" | median) FOC_MAX=$(printf '%s\n' "${FOC_LIST[@]}" | sort -n | tail -1)
FOC_ALL=$(printf '%s ' "${FOC_LIST[@]}")
OBS_ON=$(pair_runs obs-on | median) OBS_OFF=$(pair_runs obs-off | median)
R_OBS=$(pair_ratios obs-on obs-off | median) R_OBS_ALL=$(pair_ratios obs-on obs-off | paste -sd' ')
[ -n "$R_OBS" ] || R_OBS=n/a
if [ -n "$BASELINE" ]; then
  BASE_DESC=${BENCH_BASELINE_LABEL:-"$(basename "$BASELINE") ($("$BASELINE" --version 2>/dev/null | head -1))"}
fi
[ -n "$R_ACQ" ] || R_ACQ=n/a
ping_p99s() { for r in $(seq "$PING_ROUNDS"); do rbget "$1-ping-$r" PING_MBULK 7; done | { grep . || true; }; }
PING_T=$(ping_p99s tokend | median) PING_R=$(ping_p99s redis | median)
PING_T_ALL=$(ping_p99s tokend | paste -sd' ') PING_R_ALL=$(ping_p99s redis | paste -sd' ')
R_PING=$(ratio "$PING_T" "$PING_R")
# PING_MBULK throughput, with -P 16 (the runs above) and without.
rps_of() { for r in $(seq "$PING_ROUNDS"); do rbget "$1-$r" PING_MBULK 2; done | { grep . || true; }; }
PRPS_T=$(rps_of tokend-ping | median) PRPS_R=$(rps_of redis-ping | median) R_PRPS=$(ratio "$PRPS_T" "$PRPS_R")
PRPS1_T=$(rps_of tokend-ping1 | median) PRPS1_R=$(rps_of redis-ping1 | median) R_PRPS1=$(ratio "$PRPS1_T" "$PRPS1_R")
PRPS1_T_ALL=$(rps_of tokend-ping1 | paste -sd' ') PRPS1_R_ALL=$(rps_of redis-ping1 | paste -sd' ')
# The server's CPU per request in those runs, µs: redis-benchmark has one
# core and is near 100% of it (97-98% by hand, either server), so the rps
# rows measure the client as much as the server; this is what the server
# spent. PING (-P 16) runs are the -t ping ones: PING_INLINE and PING_MBULK
# together, 800,000 requests.
cpu_of() { # name requests
  for r in $(seq "$PING_ROUNDS"); do
    cat "$WORK/rb-$1-$r.cpu" 2>/dev/null | awk -v n="$2" '{ printf "%.3f\n", $1 / 1000 / n }'
  done | { grep . || true; }
}
PCPU_T=$(cpu_of tokend-ping 800000 | median) PCPU_R=$(cpu_of redis-ping 800000 | median) R_PCPU=$(ratio "$PCPU_T" "$PCPU_R")
PCPU1_T=$(cpu_of tokend-ping1 200000 | median) PCPU1_R=$(cpu_of redis-ping1 200000 | median) R_PCPU1=$(ratio "$PCPU1_T" "$PCPU1_R")
# With --idle-poll-us 100 (informational): rps, server CPU per request and
# one connection's latency against the Redis runs alternating with them.
QRPS_T=$(rps_of poll-ping | median) QRPS_R=$(rps_of redis-pingb | median) R_QRPS=$(ratio "$QRPS_T" "$QRPS_R")
QRPS1_T=$(rps_of poll-ping1 | median) QRPS1_R=$(rps_of redis-ping1b | median) R_QRPS1=$(ratio "$QRPS1_T" "$QRPS1_R")
QCPU_T=$(cpu_of poll-ping 800000 | median) QCPU_R=$(cpu_of redis-pingb 800000 | median)
QCPU1_T=$(cpu_of poll-ping1 200000 | median) QCPU1_R=$(cpu_of redis-ping1b 200000 | median)
# One connection's cycle latency, µs: medians over the alternating runs.
lat_of() { for r in $(seq "$PING_ROUNDS"); do v "$1-$r" "$2"; done | { grep -v '^$\|null' || true; }; }
L50_T=$(lat_of lat1-tok p50_us | median) L50_R=$(lat_of lat1-ref p50_us | median) R_L50=$(ratio "$L50_T" "$L50_R")
L99_T=$(lat_of lat1-tok p99_us | median) L99_R=$(lat_of lat1-ref p99_us | median) R_L99=$(ratio "$L99_T" "$L99_R")
L99_T_ALL=$(lat_of lat1-tok p99_us | paste -sd' ') L99_R_ALL=$(lat_of lat1-ref p99_us | paste -sd' ')
Q50_T=$(lat_of lat1-poll p50_us | median) Q50_R=$(lat_of lat1-refb p50_us | median) R_Q50=$(ratio "$Q50_T" "$Q50_R")
Q99_T=$(lat_of lat1-poll p99_us | median) Q99_R=$(lat_of lat1-refb p99_us | median) R_Q99=$(ratio "$Q99_T" "$Q99_R")
# Expiry: every tokend run must get every event; the p99 is the median of
# the runs', and the detail table shows the run that has it.
exp_p99s() { for r in $(seq "$EXP_ROUNDS"); do v "mem-expiry-$r" late_p99_ms; done | { grep . || true; }; }
EXP_T_P99=$(exp_p99s | median)
EXP_T_P99_ALL=$(exp_p99s | paste -sd' ')
EXP_MID=mem-expiry-1
EXP_T_ALL=yes
for r in $(seq "$EXP_ROUNDS"); do
  [ "$(v "mem-expiry-$r" late_p99_ms)" = "$EXP_T_P99" ] && EXP_MID="mem-expiry-$r"
  recv=$(v "mem-expiry-$r" received) want=$(v "mem-expiry-$r" expected)
  { [ -n "$recv" ] && [ "$recv" = "$want" ]; } || EXP_T_ALL=no
done
EXP_T_RECV=$(v "$EXP_MID" received) EXP_T_EXP=$(v "$EXP_MID" expected)
burst_p99s() { for r in $(seq "$EXP_ROUNDS"); do v "burst-$r" late_p99_ms; done | { grep . || true; }; }
BURST_P99=$(burst_p99s | median)
BURST_P99_ALL=$(burst_p99s | paste -sd' ')
burst_cpus() { for r in $(seq "$EXP_ROUNDS"); do v "burst-$r" server_cpu_per_event_us; done | { grep -v '^$\|null' || true; }; }
BURST_CPU=$(burst_cpus | median)
BURST_CPU_ALL=$(burst_cpus | paste -sd' ')
BURST_ALL=yes
for r in $(seq "$EXP_ROUNDS"); do
  recv=$(v "burst-$r" received) want=$(v "burst-$r" expected)
  { [ -n "$recv" ] && [ "$recv" = "$want" ]; } || BURST_ALL=no
done
EXP_R_RECV=$(v redis-expiry received) EXP_R_EXP=$(v redis-expiry expected) EXP_R_P99=$(v redis-expiry late_p99_ms)
R_MEM=$(ratio "$TOK_BPT" "$REDIS_BPT")
MEM_MET=$(awk -v t="$TOK_BPT" -v r="$REDIS_BPT" 'BEGIN { print (t != "" && r != "" && t + 0 <= 85 && t + 0 < r + 0) ? "yes" : "no" }')
EXP_P99_MET=$(le "$EXP_T_P99" 5)
[ "$EXP_T_ALL" = yes ] || EXP_P99_MET=no

{
  echo "# Benchmarks"
  echo
  echo "Written by \`scripts/bench.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC') in ${ELAPSED}s; every number below comes"
  echo "from that one run. Reproduce with:"
  echo
  echo '```sh'
  if [ -n "$BASELINE" ]; then
    echo "BENCH_SECS=$SECS BENCH_BASELINE=/path/to/baseline/tokend BENCH_BASELINE_LABEL='$BASE_DESC'${BASE_TARGET:+ BENCH_BASELINE_TARGET=$BASE_TARGET} scripts/bench.sh"
  else
    echo "BENCH_SECS=$SECS scripts/bench.sh"
  fi
  echo '```'
  echo
  echo "| machine | |"
  echo "| --- | --- |"
  echo "| CPU | $CPU_MODEL, \`nproc\` = $NPROC |"
  echo "| pinning | servers on core $SCPU, load generator on core $CCPU (\`taskset\`) |"
  echo "| load average at start, at end | $LOADAVG; $(cut -d' ' -f1-3 /proc/loadavg) (other processes share these cores when it is not 0) |"
  echo "| kernel | $(uname -sr) |"
  echo "| redis-server | $(redis-server --version | sed 's/Redis server //; s/ sha=.*//') |"
  echo "| tokend | $TOKEND_VERSION, $(rustc --version 2>/dev/null | cut -d' ' -f1-2) |"
  echo "| each throughput run | $SECS s, closed loop |"
  echo
  echo "**The reference** is a redis-server with the token semantics as a Redis 7 function library"
  echo "([\`scripts/tokens.lua\`](scripts/tokens.lua)): each operation is one \`FCALL\`, atomic, O(1), with"
  echo "the lifetime and the lease as key TTLs: the best a plain-Redis user would do. It covers the request path"
  echo "only: in Redis a lease that ends just deletes its key, and moving the token back to the free set"
  echo "needs a separate keyspace-notification listener (the old design this server replaces); lifetimes"
  echo "are Redis key expiries, whose events come late (see the expiry rows)."
  echo
  echo "## Targets"
  echo
  echo "| what | tokend | reference | ratio | target | met? |"
  echo "| --- | ---: | ---: | ---: | --- | --- |"
  echo "| cycle (ACQUIRE → KEEPALIVE → UNBLOCK), 50 conns × pipeline 16, in memory, ops/s: medians of 3 alternating runs ($C16_ALL) | $(fmt_int "$C16_T") | Redis fn $(fmt_int "$C16_R") | $R_C16× | ≥ 3× | $(ge "$R_C16" 3) |"
  echo "| cycle, 50 conns, no pipelining, ops/s: medians of 3 alternating runs ($C1_ALL; load-generator CPU in the first) | $(fmt_int "$C1_T") ($(v mem-cycle1 client_cpu_pct | cut -d. -f1)% CPU) | Redis fn $(fmt_int "$C1_R") ($(v redis-cycle1 client_cpu_pct | cut -d. -f1)% CPU) | $R_C1× | ≥ 1.5× | $(ge "$R_C1" 1.5) |"
  echo "| GEN, 4 conns × pipeline 64, ops/s | $(fmt_int "$G_T") | Redis fn $(fmt_int "$G_R") | $R_G× | ≥ 5× | $(ge "$R_G" 5) |"
  echo "| cycle 50 × 16, \`--durability sync\` with its backing Redis on the same core, ops/s: medians of $OBS_ROUNDS adjacent pairs of ${ACQ_SECS} s runs; the ratio is the median of the pairs' ratios ($R_S16_ALL) | $(fmt_int "$S16_T") | Redis fn alone $(fmt_int "$S16_R") | $R_S16× | ≥ 1× | $(ge "$R_S16" 1) |"
  echo "| PING p99, \`redis-benchmark -t ping -P 16 -c 50 -n 400000\` (PING_MBULK), ms: medians of $PING_ROUNDS alternating runs (tokend: $PING_T_ALL; Redis: $PING_R_ALL) | ${PING_T:-failed} | redis-server ${PING_R:-failed} | $R_PING× | ≤ 1× | $(le "$R_PING" 1) |"
  echo "| PING_MBULK rps, the same runs (\`-P 16 -c 50\`): medians | $(fmt_int "$PRPS_T") | redis-server $(fmt_int "$PRPS_R") | $R_PRPS× | ≥ 1× | $(ge "$R_PRPS" 1) |"
  echo "| PING_MBULK rps without pipelining, \`redis-benchmark -t ping_mbulk -c 50 -n 200000\`: medians of $PING_ROUNDS alternating runs (tokend: $PRPS1_T_ALL; Redis: $PRPS1_R_ALL) | $(fmt_int "$PRPS1_T") | redis-server $(fmt_int "$PRPS1_R") | $R_PRPS1× | ≥ 1× | $(ge "$R_PRPS1" 1) |"
  echo "| server CPU per PING request in the same runs, µs, \`-P 16\` / no pipelining: medians of $PING_ROUNDS (redis-benchmark holds its core at about 98%, so the rps rows are as much the client's limit) | ${PCPU_T:-failed} / ${PCPU1_T:-failed} | redis-server ${PCPU_R:-failed} / ${PCPU1_R:-failed} | $R_PCPU× / $R_PCPU1× | ≤ 1× | $(le "$R_PCPU" 1) / $(le "$R_PCPU1" 1) |"
  echo "| one connection, one cycle request at a time (\`-w cycle -c 1 -P 1\`, 2 s runs), p50 latency, µs: medians of $PING_ROUNDS alternating runs | ${L50_T:-failed} | Redis fn ${L50_R:-failed} | $R_L50× | ≤ 1× | $(le "$R_L50" 1) |"
  echo "| the same, p99 latency, µs (tokend: $L99_T_ALL; Redis fn: $L99_R_ALL) | ${L99_T:-failed} | Redis fn ${L99_R:-failed} | $R_L99× | ≤ 1× | $(le "$R_L99" 1) |"
  echo "| with \`--idle-poll-us 100\` (off by default; informational, no target): PING_MBULK rps \`-P 16\` / without pipelining, medians of $PING_ROUNDS runs alternating with Redis's | $(fmt_int "$QRPS_T") / $(fmt_int "$QRPS1_T") | redis-server $(fmt_int "$QRPS_R") / $(fmt_int "$QRPS1_R") | $R_QRPS× / $R_QRPS1× | — | — |"
  echo "| with \`--idle-poll-us 100\`: server CPU per PING request, µs, \`-P 16\` / without pipelining (the polling is in it) | ${QCPU_T:-failed} / ${QCPU1_T:-failed} | redis-server ${QCPU_R:-failed} / ${QCPU1_R:-failed} | $(ratio "$QCPU_T" "$QCPU_R")× / $(ratio "$QCPU1_T" "$QCPU1_R")× | — | — |"
  echo "| with \`--idle-poll-us 100\`: one connection's cycle latency p50 / p99, µs | ${Q50_T:-failed} / ${Q99_T:-failed} | Redis fn ${Q50_R:-failed} / ${Q99_R:-failed} | $R_Q50× / $R_Q99× | — | — |"
  echo "| expiry, $EXPIRY_TOKENS tokens due in the same second: events received (tokend: in each of $EXP_ROUNDS runs) | ${EXP_T_RECV:-failed} / ${EXP_T_EXP:-?} | Redis key expiry ${EXP_R_RECV:-failed} / ${EXP_R_EXP:-?} | — | all | $EXP_T_ALL |"
  echo "| expiry: p99 lateness of an event after its deadline, ms (tokend: median of $EXP_ROUNDS runs, each on a fresh server: $EXP_T_P99_ALL) | ${EXP_T_P99:-failed} | Redis key expiry ${EXP_R_P99:-failed} | $(ratio "$EXP_T_P99" "$EXP_R_P99")× | ≤ 5 ms | $EXP_P99_MET |"
  echo "| event burst: $EXPIRY_TOKENS tokens due within 100 ms, one subscriber of every expired event: p99 lateness, ms (median of $EXP_ROUNDS runs, each on a fresh server: $BURST_P99_ALL; every event received in each: $BURST_ALL; the server's CPU from the window's start to the last event, µs per event: ${BURST_CPU_ALL:-?}, median ${BURST_CPU:-?}) | ${BURST_P99:-failed} | — | — | ≤ 20 ms, all received | $([ "$BURST_ALL" = yes ] && le "$BURST_P99" 20 || echo no) |"
  echo "| memory per token at $MEM_TOKENS tokens, bytes (tokend: RSS delta; Redis: used_memory delta) | $TOK_BPT | Redis fn $REDIS_BPT | $R_MEM× | ≤ 85 and below Redis | $MEM_MET |"
  echo "| memory per pool at $POOLS_N pools of one token, bytes (tokend: RSS delta; Redis: used_memory delta) | $TOK_BPP | Redis fn $REDIS_BPP | $(ratio "$TOK_BPP" "$REDIS_BPP")× | ≤ 300 | $(le "$TOK_BPP" 300) |"
  echo "| ACQUIRE throughput (ACQUIRE → UNBLOCK, 50 × 16) at $BIG_TOKENS tokens, ops/s: medians of $ACQ_ROUNDS adjacent pairs of ${ACQ_SECS} s runs; the ratio is the median of the pairs' ratios ($A_RATIOS) | $(fmt_int "$A_BIG") | tokend at $SMALL_TOKENS tokens $(fmt_int "$A_SMALL") | $R_ACQ× | ≥ 0.9× | $(ge "$R_ACQ" 0.9) |"
  for row in "${REC_ROWS[@]}"; do
    read -r size secs load_ms total <<<"$row"
    per_m=$(awk -v s="$secs" -v n="$size" 'BEGIN { printf "%.2f", s / (n / 1e6) }')
    case $size in
      1000000) target="≤ 3 s"; met=$(le "$secs" 3) ;;
      10000000) target="≤ 8 s"; met=$(le "$secs" 8) ;;
      *) target="—"; met="—" ;;
    esac
    echo "| recovery of $size tokens in one pool: start to ready, s (loading alone: $load_ms ms; tokens back: $total; $per_m s a million) | $secs | — | — | $target | $met |"
  done
  echo "| recovered $REC_HAVE tokens, once serving (sync mode, one shard): worst latency of a client doing ACQUIRE → UNBLOCK one at a time on another pool of the shard for 2 s, ms (the same on the empty server before the fill: $(calm_note rec-calm "$REC_CALM_MS"); $(host_note rec-probe)) | ${REC_PROBE_MS:-failed} | — | — | ≤ 5 ms | $(probe_met rec-probe "$REC_PROBE_MS") |"
  echo "| UNLINK of a $BIG_TOKENS-token pool (answered \`$UNLINK_REPLY\` in $UNLINK_MS ms, redis-cli included): worst latency of a client doing ACQUIRE → UNBLOCK one at a time on another pool of the same shard during the UNLINK and the 1.5 s of freeing it starts, ms (without an UNLINK: $(calm_note unlink-calm "$UNLINK_CALM_MS"); in the 3 s after, when this VM reports the freed memory to its host: ${UNLINK_AFTER_MS:-?} ms; $(host_note unlink-probe)) | ${UNLINK_MAX_MS:-failed} | — | — | ≤ 5 ms | $(probe_met unlink-probe "$UNLINK_MAX_MS") |"
  echo "| GEN COUNT 100000 (three, into new pools, 300 ms apart): worst latency of a client doing ACQUIRE → UNBLOCK one at a time on another pool of the same shard meanwhile, ms (without a GEN: $(calm_note genstall-calm "$GENSTALL_CALM_MS"); $(host_note genstall-probe)) | ${GENSTALL_MS:-failed} | — | — | ≤ 5 ms | $(probe_met genstall-probe "$GENSTALL_MS") |"
  echo "| mass expiry: $MASS_TOKENS tokens in one pool due within 2 s, one shard, a subscriber of every expired event: worst latency of a client doing ACQUIRE → UNBLOCK one at a time on another pool of the shard for 26 s from about 6 s before the window (it opened ${MASS_WIN_S:-?} s into the probe), ms (p99.9 ${MASS_P999_MS:-?} ms; as long without the expiry: $(calm_note mass-calm "$MASS_CALM_MS"); $(host_note mass-probe)) | ${MASS_MS:-failed} | — | — | ≤ 5 ms | $(probe_met mass-probe "$MASS_MS") |"
  echo "| mass expiry: the last event after the last deadline, ms (events received: ${MASS_RECV:-?} of $MASS_TOKENS; p99 lateness ${MASS_P99:-?} ms; the server's CPU from the window's start to the last event ${MASS_CPU_MS:-?} ms, ${MASS_CPU_EV:-?} µs per event, the probe's requests included; the host's steal of core $SCPU and $CCPU meanwhile: ${MASS_STEAL_MS:-?} ms) | ${MASS_AFTER_MS:-failed} | — | — | ≤ 500 ms, all received | $([ "$MASS_RECV" = "$MASS_TOKENS" ] && le "$MASS_AFTER_MS" 500 || echo no) |"
  echo "| soak: cycle 50 × 16 for $SOAK_SECS s with 1 h leases, peak RSS, kB ($SOAK_OPS_LONG ops/s) | ${SOAK_LONG_KB:-failed} | same with 1 s leases ${SOAK_SHORT_KB:-failed} ($SOAK_OPS_SHORT ops/s) | $R_SOAK× | ≤ 2× | $(le "$R_SOAK" 2) |"
  echo "| cluster mode: cycle 50 × 16 on one node with \`--cluster-enabled yes\`, sync, ops/s: medians of $OBS_ROUNDS adjacent pairs of ${ACQ_SECS} s runs against a standalone sync node, both up at once on one backing Redis; the ratio is the median of the pairs' ratios ($R_CL_ALL) | $(fmt_int "$CL_CL") | standalone $(fmt_int "$CL_STD") | $R_CL× | ≥ 0.9× | $(ge "$R_CL" 0.9) |"
  echo "| cluster failover: 3 nodes holding $FO_TOKENS tokens in $FO_POOLS pools (${FO_TOTAL_S} still there at the end), kill -9 of one node to every slot served again, \`--cluster-node-timeout 3s\`, ms: p50 of $FO_KILLS kills (each: $FO_ALL) | ${FO_P50:-failed} | — | — | ≤ 5000 (max ${FO_MAX:-?}) | $(le "$FO_MAX" 5000) |"
  echo "| the same over a backing Redis Cluster of 3 masters (\`redis-cli --cluster create\`, on the server core; ${FOC_TOTAL} tokens still there at the end), ms: p50 of $FO_KILLS kills (each: $FOC_ALL) | ${FOC_P50:-failed} | — | — | ≤ 5000 (max ${FOC_MAX:-?}) | $(le "$FOC_MAX" 5000) |"
  [ -z "$OBS_RAN" ] || echo "| cycle 50 × 16 with \`--metrics-addr\` scraped every second, ops/s: medians of $OBS_ROUNDS adjacent pairs of ${ACQ_SECS} s runs, two servers up at once; the ratio is the median of the pairs' ratios ($R_OBS_ALL) | $(fmt_int "$OBS_ON") | without the endpoint $(fmt_int "$OBS_OFF") | $R_OBS× | ≥ 0.97× | $(ge "$R_OBS" 0.97) |"
  if [ -n "$BASELINE" ]; then
    for w in "${BASE_WORKLOADS[@]}"; do
      rb_=$(pair_ratios "base-new-$w" "base-old-$w" | median)
      [ -n "$rb_" ] || rb_=n/a
      echo "| $w ($(base_args "$w" | sed 's/--tokens [0-9]*//; s/ *$//')), this build against \`$BASE_DESC\`, ops/s: medians of $OBS_ROUNDS adjacent pairs of ${ACQ_SECS} s runs, both servers up at once; the ratio is the median of the pairs' ratios ($(pair_ratios "base-new-$w" "base-old-$w" | paste -sd' ')) | $(fmt_int "$(pair_runs "base-new-$w" | median)") | baseline $(fmt_int "$(pair_runs "base-old-$w" | median)") | $rb_× | $([ -n "$BASE_TARGET" ] && echo "≥ $BASE_TARGET×" || echo —) | $([ -n "$BASE_TARGET" ] && ge "$rb_" "$BASE_TARGET" || echo —) |"
    done
  fi
  echo
  echo "## Throughput: tokend in memory, sync, async, against Redis"
  echo
  echo "ops/s (p99 latency). One op is one request; the cycle workload does 3 per token use."
  echo "\`sync\`/\`async\`: \`tokend --redis … --durability sync|async\`, its backing redis-server on the same core."
  echo
  echo "| workload | tokend in memory | tokend sync | tokend async | Redis fn |"
  echo "| --- | ---: | ---: | ---: | ---: |"
  echo "| cycle, 50 conns × pipeline 16 | $(cell mem-cycle16) | $(cell sync-cycle16) | $(cell async-cycle16) | $(cell redis-cycle16) |"
  echo "| cycle, 50 conns, no pipelining | $(cell mem-cycle1) | $(cell sync-cycle1) | $(cell async-cycle1) | $(cell redis-cycle1) |"
  echo "| mixed (ACQUIRE, KEEPALIVE, INFO, UNBLOCK, 3% GEN), 50 × 16 | $(cell mem-mixed) | $(cell sync-mixed) | $(cell async-mixed) | $(cell redis-mixed) |"
  echo "| GEN, 4 conns × pipeline 64 | $(cell mem-gen) | $(cell sync-gen) | $(cell async-gen) | $(cell redis-gen) |"
  echo
  echo "## Protocol ceiling"
  echo
  echo "| run | tokend | redis-server |"
  echo "| --- | ---: | ---: |"
  echo "| \`redis-benchmark -t ping -P 16 -c 50 -n 200000\`, PING_MBULK rps (p99 ms) | $(fmt_int "$(rbget tokend-ping PING_MBULK 2)") ($(rbget tokend-ping PING_MBULK 7)) | $(fmt_int "$(rbget redis-pingset PING_MBULK 2)") ($(rbget redis-pingset PING_MBULK 7)) |"
  echo "| \`redis-benchmark\` PING_INLINE rps (p99 ms) | $(fmt_int "$(rbget tokend-ping PING_INLINE 2)") ($(rbget tokend-ping PING_INLINE 7)) | $(fmt_int "$(rbget redis-pingset PING_INLINE 2)") ($(rbget redis-pingset PING_INLINE 7)) |"
  echo "| \`redis-benchmark -P 16 -c 50\`: tokend \`TOKEN.STATS p\`, Redis \`SET\`, rps (p99 ms) | $(fmt_int "$(rbget tokend-stats TOKEN 2)") ($(rbget tokend-stats TOKEN 7)) | $(fmt_int "$(rbget redis-pingset SET 2)") ($(rbget redis-pingset SET 7)) |"
  echo "| \`tokend-bench -w ping -c 50 -P 1\`, ops/s (p99 µs) | $(cell mem-ping) | $(cell redis-ping) |"
  echo
  if [ -n "$HTTP_RAN" ]; then
    echo "## HTTP API"
    echo
    echo "The old service's endpoints (\`--http-addr\`) against the same work over RESP, on one server:"
    echo "each of 50 connections does GET /token/acquireToken then PUT /token/unblockToken (RESP: TOKEN.ACQUIRE"
    echo "then TOKEN.UNBLOCK), one request at a time (HTTP/1.1 keep-alive, hyper's client). Medians of 3"
    echo "alternating ${ACQ_SECS} s runs; a request is one HTTP request or one RESP command."
    echo
    echo "| | HTTP | RESP |"
    echo "| --- | ---: | ---: |"
    three() { for r in 1 2 3; do v "$1-$r" "$2"; done | median; }
    echo "| requests/s | $(fmt_int "$(three http-http ops_per_sec)") | $(fmt_int "$(three http-resp ops_per_sec)") |"
    echo "| p99 latency, µs | $(three http-http p99_us) | $(three http-resp p99_us) |"
    echo "| load-generator CPU, % | $(three http-http client_cpu_pct | cut -d. -f1) | $(three http-resp client_cpu_pct | cut -d. -f1) |"
    echo
  fi
  echo "## Expiry detail"
  echo
  echo "$EXPIRY_TOKENS tokens made due evenly over one second, a few seconds ahead, by GENs sent one at a"
  echo "time (each token's deadline is taken as the send time + PX, a lower bound, so lateness is never"
  echo "underestimated); a subscriber on \`__keyevent@0__:expired\` timestamps each event. For Redis the"
  echo "lifetime is the token key's TTL (\`notify-keyspace-events Ex\`). tokend's column is its run with the median p99."
  echo
  echo "| | tokend | Redis key expiry |"
  echo "| --- | ---: | ---: |"
  exp_row() { echo "| $1 | $(v "$EXP_MID" "$2") | $(v redis-expiry "$2") |"; }
  exp_row "events received" received
  exp_row "p50 lateness, ms" late_p50_ms
  exp_row "p99 lateness, ms" late_p99_ms
  exp_row "p99.9 lateness, ms" late_p999_ms
  exp_row "max lateness, ms" late_max_ms
  exp_row "last event after the due second began, ms" drain_ms
  exp_row "deadline uncertainty (longest GEN round trip), ms" deadline_uncertainty_ms
  echo
  echo "## Reading these numbers"
  echo
  echo "- Closed loop: each connection keeps \`pipeline\` requests in flight; latency is from the write of a"
  echo "  batch to the read that completed the reply. The load generator is single-threaded on its own core;"
  echo "  when its CPU is near 100% it, not the server, is the limit."
  echo "- Memory: tokend's figure is the growth of the whole process's RSS (allocator slack and hash-table"
  echo "  headroom included) while $MEM_TOKENS tokens (or $POOLS_N pools of one token) are generated; Redis's"
  echo "  is \`used_memory\` growth, which leaves out the allocator's slack (Redis keeps a one-member set as a"
  echo "  listpack of a few bytes)."
  echo "- Raw results (JSON per run, logs) of this run were in \`$WORK\`."
  echo "- Micro-benchmarks (store at 10k/1M/10M tokens, timing wheel with 1M timers, codec) are separate:"
  echo "  \`cargo bench\`."
} >"$OUT"
echo "bench: wrote $OUT in ${ELAPSED}s" >&2
