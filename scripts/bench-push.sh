#!/usr/bin/env bash
# Push timing: `cargo oci push` against `skopeo copy` of the same OCI layout, side by side in one
# run, each to its own fresh docker-registry on 127.0.0.1 (first push: every blob uploaded;
# second push: nothing to upload), then medians and the ratios skopeo / cargo-oci (above 1:
# cargo-oci is faster), wall and CPU (user + system); and a no-op `cargo oci build --no-build`
# alone, the build part every push runs first. Usage: scripts/bench-push.sh [EXAMPLE]
# [ROUNDS]; CARGO_OCI_BIN=PATH measures that binary.
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
json=$("$bin" oci build --release -q --message-format json | jq -c 'select(.reason == "image-built")')
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
results=$work/results.tsv
: >"$results"
# timed TOOL WHICH CMD...: one run; records wall and CPU seconds.
timed() {
    local tool=$1 which=$2 t; shift 2
    t=$(now)
    /usr/bin/time -f '%U %S' -o "$work/rusage" "$@" >/dev/null
    awk -v a="$(now)" -v b="$t" -v tool="$tool" -v w="$which" '{ printf "%s\t%s\t%.3f\t%.3f\n", tool, w, a - b, $1 + $2 }' \
        <(tail -1 "$work/rusage") >>"$results"
}

for r in $(seq "$rounds"); do
    echo "round $r/$rounds" >&2
    reg=$(start_registry)
    timed "cargo oci push" first "$bin" oci push --release --no-build -q --to "$reg/bench/app"
    timed "cargo oci push" repeat "$bin" oci push --release --no-build -q --to "$reg/bench/app"
    # The build part a push runs first (everything up to date), alone: what a repeat push costs
    # besides the registry.
    timed "cargo oci build" noop "$bin" oci build --release --no-build -q

    reg=$(start_registry)
    timed "skopeo copy" first skopeo copy -q --dest-tls-verify=false "oci:$layout:$ref" "docker://$reg/bench/app:latest"
    timed "skopeo copy" repeat skopeo copy -q --dest-tls-verify=false "oci:$layout:$ref" "docker://$reg/bench/app:latest"
done

median() { sort -n | awk '{ a[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print a[(NR + 1) / 2]; else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
col() { awk -F'\t' -v t="$1" -v w="$2" -v c="$3" '$1 == t && $2 == w { print $c }' "$results"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "-"; else printf "%.2f", a / b }'; }
echo "medians of $rounds rounds; x = skopeo / cargo-oci (above 1: cargo-oci is faster); load average $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-30s %9s %8s | %9s %8s | %7s %7s | %s\n' figure "wall s" "cpu s" "skopeo" "cpu s" "x wall" "x cpu" target
for w in first repeat; do
    ow=$(col "cargo oci push" "$w" 3 | median); oc=$(col "cargo oci push" "$w" 4 | median)
    sw=$(col "skopeo copy" "$w" 3 | median); sc=$(col "skopeo copy" "$w" 4 | median)
    label="first push, $example"; [ "$w" = repeat ] && label="repeat push, nothing to send"
    printf '%-30s %9s %8s | %9s %8s | %7s %7s | %s\n' "$label" "$ow" "$oc" "$sw" "$sc" "$(ratio "$sw" "$ow")" "$(ratio "$sc" "$oc")" ">= 2x"
done
printf '%-30s %9s %8s | (the build part of a push, alone)\n' "no-op build, --no-build" \
    "$(col "cargo oci build" noop 3 | median)" "$(col "cargo oci build" noop 4 | median)"
