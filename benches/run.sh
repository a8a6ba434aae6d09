#!/usr/bin/env bash
# One-command benchmark: builds release, starts hearth on loopback with a
# temporary data dir, runs every hearth-bench mode, stops the server.
# Usage: benches/run.sh            (results: stdout; JSON lines: $OUT/results.jsonl)
# Env: SESSIONS="1000 10000"  MESSAGES=200000  OFFLINE=50000  LOGINS=500
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

config() { # config FILE DATA_DIR
    cat > "$1" <<TOML
domain = "$DOMAIN"
data_dir = "$2"
[listen]
# Port 0 everywhere: the run never collides with a hearth already running here
# (5222/5223/5281/7777, UDP 3478); start() reads the port from the server's log.
starttls = []
direct_tls = ["127.0.0.1:0"]
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
trap '[ -z "$SERVER" ] || kill "$SERVER" 2>/dev/null; rm -rf "$OUT/idle" "$OUT/data"' EXIT
bench() { "$BENCH" --addr "$ADDR" --domain "$DOMAIN" --pid "$SERVER" "$@" | tee -a "$OUT/report.txt"; }

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
grep '^{' "$OUT/report.txt" > "$OUT/results.jsonl"
echo "results: $OUT/report.txt, $OUT/results.jsonl" >&2
