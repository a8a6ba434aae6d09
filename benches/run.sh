#!/usr/bin/env bash
# One-command benchmark: builds release, starts hearth on loopback with a
# temporary data dir, runs every hearth-bench mode, stops the server.
# Usage: benches/run.sh            (results: stdout; JSON lines: $OUT/results.jsonl)
# Env: SESSIONS="1000 10000"  MESSAGES=200000  OFFLINE=50000  LOGINS=500  PEERS=16
#      ONLY=federation runs the federation modes alone.
set -eu
cd "$(dirname "$0")/.."
SESSIONS=${SESSIONS:-"1000 10000"}
MESSAGES=${MESSAGES:-200000}
OFFLINE=${OFFLINE:-50000}
LOGINS=${LOGINS:-500}
ulimit -n "$(ulimit -Hn)"   # 10,000 sessions need >10,000 descriptors (server and tool)
cargo build --release --bins >&2
BIN=target/release/hearth
BENCH=target/release/hearth-bench
OUT=$(mktemp -d /tmp/hearth-bench.XXXXXX)
DOMAIN=bench.local
# Other load on the machine moves the latency percentiles: record it.
echo "== machine: $(nproc) cores, $(uname -r), $(uptime | sed 's/.*load/load/')" | tee "$OUT/report.txt"

config() { # config FILE DATA_DIR [DOMAIN [IP]]
    cat > "$1" <<TOML
domain = "${3:-$DOMAIN}"
data_dir = "$2"
[listen]
# Port 0 everywhere: the run never collides with a hearth already running here
# (5222/5223/5281/7777, UDP 3478); start() reads the port from the server's log.
starttls = []
direct_tls = ["${4:-127.0.0.1}:0"]
# The generator is one address sending far faster than any person: lift the
# per-address and per-account protections so the figures show capacity.
[limits]
max_connections = 30000
max_connections_per_ip = 30000
max_unauthenticated_per_ip = 30000
[rate]
stanzas_per_sec = 10000000
stanza_burst = 10000000
bytes_per_sec = 4000000000
byte_burst = 4000000000
# File services listen on their own ports and play no part in these figures.
[upload]
enabled = false
[proxy]
enabled = false
[stun]
enabled = false
TOML
}

SERVER=
ADDR=
STARTS=0
start() { # start CONFIG: sets SERVER, and ADDR from the server's log
    STARTS=$((STARTS + 1))
    LOG="$OUT/server.$STARTS.log"
    : > "$LOG"   # exists before the first grep below
    "$BIN" serve --config "$1" 2>"$LOG" &
    SERVER=$!
    i=0
    until grep -q ' ready for ' "$LOG"; do
        i=$((i + 1))
        if [ $i -ge 200 ] || ! kill -0 "$SERVER" 2>/dev/null; then
            echo "server did not start; its log ($LOG):" >&2
            cat "$LOG" >&2
            exit 1
        fi
        sleep 0.05
    done
    ADDR=$(sed -n 's/.*listening for direct-tls on //p' "$LOG" | head -n 1)
    sleep 1
}
stop() { kill -TERM "$SERVER"; wait "$SERVER" || true; SERVER=; }
FEDERATED=
trap '[ -z "$SERVER" ] || kill "$SERVER" 2>/dev/null; for p in $FEDERATED; do kill "$p" 2>/dev/null; done; rm -rf "$OUT/idle" "$OUT/data" "$OUT/fed"' EXIT
bench() { "$BENCH" --addr "$ADDR" --domain "$DOMAIN" --pid "$SERVER" "$@" | tee -a "$OUT/report.txt"; }
results() {
    grep '^{' "$OUT/report.txt" > "$OUT/results.jsonl"
    echo "results: $OUT/report.txt, $OUT/results.jsonl" >&2
}

# Federation (issue 13). Server A (a.bench, 127.0.0.2) and B (b.bench, 127.0.0.3) route
# to each other, as tests/common/federation.rs does, and PEERS more servers
# (pK.bench, 127.0.1.K, no accounts) route to A. A learns everyone's s2s port from their
# logs and gets the routes by a reload (SIGHUP). Then: A's memory per idle federated peer,
# local routing on A as the yardstick, and messages A → B, at full speed and at a rate.
federated() { # federated NAME IP [ROUTE_TO_A]: starts a federating server; sets SERVER, ADDR, S2S
    mkdir -p "$OUT/fed"
    config "$OUT/fed/$1.toml" "$OUT/fed/$1" "$1" "$2"
    cat >> "$OUT/fed/$1.toml" <<TOML
# The generator sends from one server as fast as it can: lift the per-peer stanza rate (to
# its bound) and queue, and the per-address limit (every peer connects from 127.0.0.1).
[s2s]
enabled = true
listen = ["$2:0"]
stanzas_per_sec = 100000
stanza_burst = 100000
max_queue_bytes = 16777216
max_connections_per_ip = 1000
[s2s.routes]
TOML
    [ -z "${3:-}" ] || echo "\"a.bench\" = \"$3\"" >> "$OUT/fed/$1.toml"
    start "$OUT/fed/$1.toml"
    S2S=$(sed -n 's/.*listening for s2s on //p' "$LOG" | head -n 1)
    FEDERATED="$FEDERATED $SERVER"
}
federation() {
    local a a_addr a_log b b_addr peers="" p k
    "$BENCH" setup --data-dir "$OUT/fed/a.bench" --accounts 300
    "$BENCH" setup --data-dir "$OUT/fed/b.bench" --accounts 300
    federated a.bench 127.0.0.2
    a=$SERVER a_addr=$ADDR a_log=$LOG
    local a_s2s=$S2S routes=""
    federated b.bench 127.0.0.3 "$a_s2s"
    b=$SERVER b_addr=$ADDR
    routes="\"b.bench\" = \"$S2S\""
    for k in $(seq 1 "${PEERS:-16}"); do   # not i: start() counts with it
        federated "p$k.bench" "127.0.1.$k" "$a_s2s"
        peers="$peers $SERVER"
        routes="$routes
\"p$k.bench\" = \"$S2S\""
    done
    SERVER=
    echo "$routes" >> "$OUT/fed/a.bench.toml"
    kill -HUP "$a"
    i=0
    until grep -q 'config reloaded' "$a_log"; do
        i=$((i + 1)); [ $i -lt 100 ] || { echo "A did not reload" >&2; exit 1; }
        sleep 0.05
    done
    fbench() { "$BENCH" --addr "$a_addr" --domain a.bench --pid "$a" "$@" | tee -a "$OUT/report.txt"; }
    fbench s2s-peers --peers "b.bench$(seq -s, -f 'p%g.bench' 1 "${PEERS:-16}" | sed 's/^/,/')"
    for p in $peers; do kill -TERM "$p"; wait "$p" || true; done
    fbench throughput --pairs 50 --messages "$MESSAGES" --window 64
    local peer="--peer-addr $b_addr --peer-domain b.bench --peer-pid $b"
    fbench s2s $peer --pairs 50 --messages "$MESSAGES" --window 64
    fbench latency --pairs 50 --rate 5000 --seconds 10
    fbench s2s $peer --pairs 50 --rate 5000 --seconds 10
    for p in $a $b; do kill -TERM "$p"; wait "$p" || true; done
    FEDERATED=
}
if [ "${ONLY:-}" = federation ]; then federation; results; exit 0; fi

# Parse cost per adversarial stanza shape at the stanza limit (no server).
"$BENCH" parse --runs 9 | tee -a "$OUT/report.txt"

# Idle: a few hundred accounts, no sessions.
config "$OUT/idle.toml" "$OUT/idle"
"$BENCH" setup --data-dir "$OUT/idle" --accounts 300
start "$OUT/idle.toml"; sleep 2; bench idle; stop

# Everything else: 10,000 bench accounts (+ offline targets u9000…).
config "$OUT/hearth.toml" "$OUT/data"
"$BENCH" setup --data-dir "$OUT/data" --accounts 10200
start "$OUT/hearth.toml"
bench idle
for n in $SESSIONS; do bench sessions "$n"; done
bench throughput --pairs 50 --messages "$MESSAGES" --window 64
bench latency --pairs 50 --rate 5000 --seconds 10
bench login --count "$LOGINS" --concurrency 8
bench offline --messages "$OFFLINE" --senders 20 --rate 500
stop
"$BENCH" startup --hearth "$BIN" --config "$OUT/hearth.toml" --accounts 10200 --runs 5 | tee -a "$OUT/report.txt"
federation
results
