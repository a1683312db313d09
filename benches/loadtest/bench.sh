#!/usr/bin/env bash
# The load-test benchmarks of BENCHMARKS.md: builds tickdb in release, starts a server
# on 127.0.0.1 with a fresh data directory, publishes the mmo and bank examples, and
# runs each scenario with `tickdb loadtest`, writing an HTML report per run.
#
#   benches/loadtest/bench.sh [mmo|mmo-max|mmo-all|bank|all] [OUT_DIR]
#
# Environment: PLAYERS (mmo-max, default 2000), DURATION (seconds, default 20).
set -euo pipefail
which=${1:-all}
out=${2:-target/loadtest}
cd "$(dirname "$0")/../.."
mkdir -p "$out"
cargo build --release --locked -p tickdb-cli
cargo build --release --locked --target wasm32-unknown-unknown -p tickdb-example-mmo -p tickdb-example-bank \
    --target-dir target/wasm-modules
tickdb=${TICKDB:-target/release/tickdb}
wasm=target/wasm-modules/wasm32-unknown-unknown/release
port=3977
server=http://127.0.0.1:$port
data=$(mktemp -d)
export TICKDB_CONFIG=$data/cli.json
# The bank's connections each send thousands of calls a second: past the default
# per-client limit of 1,000 messages a second.
$tickdb start --listen 127.0.0.1:$port --data-dir "$data/db" --client-messages-per-second 100000 \
    > "$out/server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 50); do curl -sf $server/metrics > /dev/null && break; sleep 0.1; done

# Each run gets a fresh database, so runs do not see each other's players.
run() {
    local name=$1 module=$2; shift 2
    $tickdb publish "$name" --wasm "$wasm/tickdb_example_$module.wasm" --clear --server $server > /dev/null
    echo "== $name: tickdb loadtest $name $*"
    $tickdb loadtest "$name" --server $server --report "$out/$name.html" "$@"
    $tickdb delete "$name" --server $server > /dev/null
}
duration=${DURATION:-20}
case $which in mmo|all)
    run mmo mmo --scenario mmo --players 1000 --rate 20 --interest 30 --ramp 500 --warmup 3 --duration "$duration" ;;
esac
case $which in mmo-all|all)
    # 1,000 players move; 100 of them see everyone (this machine cannot read 1,000
    # full streams besides running the server).
    run mmo-all mmo --scenario mmo --players 1000 --rate 20 --interest all --observers 100 --ramp 500 --warmup 3 \
        --duration "$duration"
    run mmo-all-lz4 mmo --scenario mmo --players 1000 --rate 20 --interest all --observers 100 --lz4 --ramp 500 \
        --warmup 3 --duration "$duration" ;;
esac
case $which in mmo-max|all)
    players=${PLAYERS:-2000}
    run "mmo-$players" mmo --scenario mmo --players "$players" --rate 20 --interest 30 --ramp 1000 --warmup 3 \
        --duration "$duration" ;;
esac
case $which in bank|all)
    run bank bank --scenario bank --players 64 --in-flight 40 --ramp 1000 --warmup 2 --duration "$duration" ;;
esac
