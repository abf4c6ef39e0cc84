#!/usr/bin/env bash
# Push timing: `cargo oci push` against `skopeo copy` of the same OCI layout, side by side in one
# run, each to its own fresh docker-registry on 127.0.0.1 (first push: every blob uploaded;
# second push: nothing to upload). Usage: scripts/bench-push.sh [EXAMPLE] [ROUNDS]
set -euo pipefail

example=${1:-tls-zlib}
rounds=${2:-3}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${CARGO_OCI_BIN:-$root/target/release/cargo-oci}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target/e2e}
work=$(mktemp -d)
# Registries are started in $(...) subshells: their PIDs go to a file, not a variable.
cleanup() {
    while read -r p; do kill "$p" 2>/dev/null || true; done <"$work/pids"
    rm -rf "$work"
}
: >"$work/pids"
trap cleanup EXIT

[ -x "$bin" ] || { echo "build cargo-oci first: cargo build --release -p cargo-oci" >&2; exit 1; }
cd "$root/examples/$example"
json=$("$bin" oci build --release -q --message-format json)
layout=$(jq -r .path <<<"$json")
ref=$(jq -r '.references[0]' <<<"$json")
echo "image: $ref ($(jq -r .size <<<"$json") bytes compressed, $(jq '.layers | length' <<<"$json") layers)"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Starts a registry; prints its address.
start_registry() {
    local dir port
    dir=$(mktemp -d -p "$work")
    port=$(free_port)
    printf 'version: 0.1\nlog: {level: error, accesslog: {disabled: true}}\nstorage: {filesystem: {rootdirectory: %s}}\nhttp: {addr: 127.0.0.1:%s, secret: x}\n' \
        "$dir/data" "$port" >"$dir/config.yml"
    docker-registry serve "$dir/config.yml" >/dev/null 2>&1 &
    echo $! >>"$work/pids"
    for _ in $(seq 100); do
        curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break
        sleep 0.05
    done
    echo "127.0.0.1:$port"
}

now() { date +%s.%N; }
elapsed() { awk -v a="$(now)" -v b="$1" 'BEGIN { printf "%.2f", a - b }'; }

printf '%-6s %-22s %8s %8s\n' round tool first second
for r in $(seq "$rounds"); do
    reg=$(start_registry)
    t=$(now); "$bin" oci push --release --no-build -q --to "$reg/bench/app" >/dev/null; a=$(elapsed "$t")
    t=$(now); "$bin" oci push --release --no-build -q --to "$reg/bench/app" >/dev/null; b=$(elapsed "$t")
    printf '%-6s %-22s %8s %8s\n' "$r" "cargo oci push" "$a" "$b"

    reg=$(start_registry)
    t=$(now); skopeo copy -q --dest-tls-verify=false "oci:$layout:$ref" "docker://$reg/bench/app:latest"; a=$(elapsed "$t")
    t=$(now); skopeo copy -q --dest-tls-verify=false "oci:$layout:$ref" "docker://$reg/bench/app:latest"; b=$(elapsed "$t")
    printf '%-6s %-22s %8s %8s\n' "$r" "skopeo copy" "$a" "$b"
done
t=$(now); "$bin" oci build --release --no-build -q >/dev/null; echo "for reference, cargo oci build --no-build (packaging only): $(elapsed "$t") s"
