#!/usr/bin/env bash
# Image assembly benchmark: builds the same root filesystem with cargo-oci and with the tools a
# user could pick instead, in turn, RUNS times each, and prints medians, ratios and sizes in one
# table. Not part of the test suite. Everything it makes lives under target/bench/.
#
# Workloads:
#   w1     the toolchain's own cargo binary (`rustup which cargo`, ~42 MB, glibc closure),
#          packaged as a service by `cargo oci build --no-build` from a generated package
#   small  examples/http-hello (a small glibc service)
#   tls    examples/tls-zlib for linux/amd64 and linux/arm64: one two-platform run against one
#          run per platform
#   1gb    1 GiB of files (half random, half repetitive), written as one layer through the
#          library's layer writer (cargo-oci/examples/bench_layer.rs), against w1's root
#          filesystem through the same writer
#
# Usage: scripts/bench.sh [RUNS]   (default 5; the 1 GiB payload runs BENCH_1GB_RUNS times,
#        default 3, and BENCH_SKIP_1GB=1 skips it; CARGO_OCI_BIN=PATH measures that binary
#        instead of building this checkout's, for before/after figures)
#
# The table ends with the performance targets, each as a ratio to the best peer image builder
# (podman, buildah, umoci) measured in the same run: wall and CPU seconds (user + system, the
# figure a busy machine disturbs least). Each workload runs "cold" (the project's store and
# layer cache emptied, the per-machine cache kept: the contract helper, the layers made only of
# the machine's own files such as the C library, remembered package lists) and "fresh
# checkout" (target/oci and the per-machine cache both empty, as in a new CI job). cargo-oci's per-machine cache is a private one under
# target/bench (CARGO_OCI_CACHE_DIR), never the user's.
set -euo pipefail

RUNS=${1:-${RUNS:-5}}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$root/target/bench
mkdir -p "$work"
log=$work/log
: >"$log"
results=$work/results.tsv
: >"$results"

need() { command -v "$1" >/dev/null || { echo "bench: $1 is missing: run scripts/install-test-tools.sh" >&2; exit 1; }; }
for t in podman buildah umoci pigz gzip zstd jq /usr/bin/time rustup; do need "$t"; done

targets=()
[ -z "${CARGO_OCI_BIN:-}" ] && targets+=(--bin cargo-oci)
[ "${BENCH_SKIP_1GB:-0}" != 1 ] && targets+=(--example bench_layer)
if [ ${#targets[@]} -gt 0 ]; then
  echo "bench: building ${targets[*]} (release)" >&2
  (cd "$root" && cargo build --release -q -p cargo-oci "${targets[@]}")
fi
bin=${CARGO_OCI_BIN:-$root/target/release/cargo-oci}
layer_bin=$root/target/release/examples/bench_layer
# `cargo oci` finds the subcommand on PATH, as for an installed cargo-oci.
mkdir -p "$work/path"
ln -sf "$bin" "$work/path/cargo-oci"
export PATH="$work/path:$PATH"
unset SOURCE_DATE_EPOCH CARGO_TARGET_DIR
# The per-machine cache (contract helpers for other targets), private to the benchmark.
cache=$work/cache
export CARGO_OCI_CACHE_DIR=$cache

now() { date +%s%N; }
# record WORKLOAD TOOL WALL_S CPU_S PEAK_KB
record() { printf '%s\t%s\t%s\t%s\t%s\n' "$@" >>"$results"; }
elapsed() { awk -v s="$1" -v e="$2" 'BEGIN { printf "%.4f", (e - s) / 1e9 }'; }

# timed WORKLOAD TOOL CMD...: one run of CMD (output to the log): wall time, CPU time (user +
# system, of CMD and every process it waited for: the machine-independent cost) and peak
# resident memory of the largest of those processes.
timed() {
  local w=$1 tool=$2; shift 2
  local s e
  s=$(now); /usr/bin/time -f '%U %S %M' -o "$work/rusage" "$@" >>"$log" 2>&1; e=$(now)
  read -r user sys rss < <(tail -1 "$work/rusage")
  record "$w" "$tool" "$(elapsed "$s" "$e")" "$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.2f", u + s }')" "$rss"
}

# Unpacks the image at layout DIR into ROOTFS (every layer in order).
unpack() {
  local layout=$1 rootfs=$2 manifest
  rm -rf "$rootfs"; mkdir -p "$rootfs"
  manifest=$layout/blobs/sha256/$(jq -r '.manifests[0].digest' "$layout/index.json" | cut -d: -f2)
  for d in $(jq -r '.layers[].digest' "$manifest" | cut -d: -f2); do
    tar -xzf "$layout/blobs/sha256/$d" --numeric-owner -p -C "$rootfs"
  done
}
layer_bytes() { # total bytes of the layers of the image at layout DIR
  local layout=$1 manifest
  manifest=$layout/blobs/sha256/$(jq -r '.manifests[0].digest' "$layout/index.json" | cut -d: -f2)
  jq '[.layers[].size] | add' "$manifest"
}
gzip6_bytes() { # what `gzip -6` makes of the same layer tars
  local layout=$1 manifest total=0 n
  manifest=$layout/blobs/sha256/$(jq -r '.manifests[0].digest' "$layout/index.json" | cut -d: -f2)
  for d in $(jq -r '.layers[].digest' "$manifest" | cut -d: -f2); do
    n=$(gzip -dc "$layout/blobs/sha256/$d" | gzip -6 -c | wc -c)
    total=$((total + n))
  done
  echo "$total"
}
archive_layer_bytes() { # total layer bytes in an oci-archive FILE
  local f=$1 d
  d=$(mktemp -d "$work/x.XXXX")
  tar -xf "$f" -C "$d"
  local m
  m=$d/blobs/sha256/$(jq -r '.manifests[0].digest' "$d/index.json" | cut -d: -f2)
  jq '[.layers[].size] | add' "$m"
  rm -rf "$d"
}

# --- workload packages ------------------------------------------------------------------------
w1=$work/w1
mkdir -p "$w1/src" "$w1/target/release"
cat >"$w1/Cargo.toml" <<'EOF'
[package]
name = "w1"
version = "0.1.0"
edition = "2021"
publish = false

[[bin]]
name = "cargo"
path = "src/main.rs"

[workspace]
EOF
echo 'fn main() {}' >"$w1/src/main.rs"
cp "$(rustup which cargo)" "$w1/target/release/cargo"

small=$work/small
mkdir -p "$small"
echo "bench: building examples/http-hello" >&2
(cd "$root/examples/http-hello" && cargo build --release -q --target-dir "$small/target")

# oci_cmd WORKLOAD: sets CMD to `cargo-oci oci build --no-build` for the workload (cargo-oci run
# directly, so that /usr/bin/time sees its own peak memory and not cargo's).
oci_cmd() {
  case $1 in
    w1) CMD=(env -C "$w1" "$bin" oci build --no-build --release -q) ;;
    small) CMD=(env -C "$root/examples/http-hello" "$bin" oci build --no-build --release -q --target-dir "$small/target") ;;
  esac
}
oci_dir() { case $1 in w1) echo "$w1/target/oci" ;; small) echo "$small/target/oci" ;; esac; }
cold() { local d; d=$(oci_dir "$1"); rm -rf "$d/.store" "$d/.cache" "$d/bench-out"; }

for w in w1 small; do
  echo "bench: preparing $w (contract helper, root filesystem, peers' inputs)" >&2
  cold "$w"
  oci_cmd "$w"
  "${CMD[@]}" -o "$(oci_dir "$w")/bench-out" >>"$log"
  ctx=$work/$w-ctx
  unpack "$(oci_dir "$w")/bench-out" "$ctx/rootfs"
  printf 'FROM scratch\nCOPY rootfs/ /\n' >"$ctx/Containerfile"
  echo "$(layer_bytes "$(oci_dir "$w")/bench-out")" >"$work/$w.gzip-bytes"
  echo "$(gzip6_bytes "$(oci_dir "$w")/bench-out")" >"$work/$w.gzip6-bytes"
  rm -rf "$work/$w-umoci-base"
  umoci init --layout "$work/$w-umoci-base" >>"$log" 2>&1
  umoci new --image "$work/$w-umoci-base:bench" >>"$log" 2>&1
  tar -C "$ctx/rootfs" -cf - . | pigz -p2 -6 | wc -c >"$work/$w.pigz-bytes"
done

# A three-package workspace (tests/fixtures/workspace: gateway, billing, and multi with two
# images), when this cargo-oci has --workspace: one `--workspace` run against one run per package.
ws=$work/ws
has_workspace=0
if "$bin" oci build --help 2>&1 | grep -q -- '--workspace'; then
  has_workspace=1
  rm -rf "$ws"; cp -r "$root/tests/fixtures/workspace" "$ws"; rm -rf "$ws/target"
  echo "bench: building the workspace fixture" >&2
  (cd "$ws" && cargo build --workspace --release -q)
fi
ws_cold() { rm -rf "$ws/target/oci"; }

# Two platforms of examples/tls-zlib (OpenSSL + zlib, a glibc closure per platform), when this
# cargo-oci has --platform: one two-platform run against two single-platform runs, --no-build
# after one untimed build of both (the arm64 toolchain and libraries come from
# scripts/install-test-deps.sh).
tls=$work/tls
two_platforms=linux/amd64,linux/arm64
has_platform=0
if "$bin" oci build --help 2>&1 | grep -q -- '--platform'; then
  echo "bench: building examples/tls-zlib for $two_platforms" >&2
  if (cd "$root/examples/tls-zlib" && "$bin" oci build --release -q --platform "$two_platforms" --target-dir "$tls/target" -o "$tls/target/oci/bench-out") >>"$log" 2>&1; then
    has_platform=1
  else
    echo "bench: the two-platform build of tls-zlib failed (see $log); no two-platform row" >&2
  fi
fi
tls_cmd() { CMD=(env -C "$root/examples/tls-zlib" "$bin" oci build --no-build --release -q --target-dir "$tls/target"); }
tls_cold() { rm -rf "$tls/target/oci"; }

# --- the runs, in turn ------------------------------------------------------------------------
for i in $(seq "$RUNS"); do
  echo "bench: round $i/$RUNS" >&2
  for w in w1 small; do
    ctx=$work/$w-ctx
    d=$(oci_dir "$w")

    oci_cmd "$w"
    # A fresh checkout in a new CI job: no target/oci, an empty per-machine cache (no contract
    # helper, no machine layers, no remembered package list or owners).
    rm -rf "$d" "$work/cache-fresh"
    timed "$w" "cargo-oci gzip (fresh checkout)" env CARGO_OCI_CACHE_DIR="$work/cache-fresh" "${CMD[@]}" -o "$d/bench-out"
    cold "$w"
    timed "$w" "cargo-oci gzip (cold)" "${CMD[@]}" -o "$d/bench-out"
    timed "$w" "cargo-oci (nothing changed)" "${CMD[@]}" -o "$d/bench-out"
    cold "$w"
    timed "$w" "cargo-oci zstd (cold)" "${CMD[@]}" --compression zstd -o "$d/bench-out"
    [ "$i" = 1 ] && layer_bytes "$d/bench-out" >"$work/$w.zstd-bytes"

    out=$work/$w-podman.tar; rm -f "$out"
    timed "$w" "podman build + save" bash -c "podman build -q --no-cache -t localhost/bench-$w -f '$ctx/Containerfile' '$ctx' && podman save -q --format oci-archive -o '$out' localhost/bench-$w"
    podman rmi -f "localhost/bench-$w" >>"$log" 2>&1 || true
    [ "$i" = 1 ] && archive_layer_bytes "$out" >"$work/$w.podman-bytes"

    out=$work/$w-buildah.tar; rm -f "$out"
    timed "$w" "buildah from+copy+commit" bash -c "c=\$(buildah from scratch) && buildah copy -q \$c '$ctx/rootfs/' / >/dev/null && buildah commit -q --disable-compression=false \$c 'oci-archive:$out' && buildah rm \$c"
    [ "$i" = 1 ] && archive_layer_bytes "$out" >"$work/$w.buildah-bytes"

    rm -rf "$work/$w-umoci"; cp -r "$work/$w-umoci-base" "$work/$w-umoci"
    timed "$w" "umoci insert" umoci insert --image "$work/$w-umoci:bench" "$ctx/rootfs" /
    [ "$i" = 1 ] && layer_bytes_u=$(jq -r '.manifests[0].digest' "$work/$w-umoci/index.json" | cut -d: -f2) \
      && jq '[.layers[].size] | add' "$work/$w-umoci/blobs/sha256/$layer_bytes_u" >"$work/$w.umoci-bytes"

    timed "$w" "tar | pigz -p2 -6 | sha256sum" bash -c "tar -C '$ctx/rootfs' -cf - . | pigz -p2 -6 | sha256sum"
  done

  if [ "$has_workspace" = 1 ]; then
    ws_cold
    timed ws "cargo-oci --workspace (cold)" env -C "$ws" "$bin" oci build --workspace --no-build --release -q
    ws_cold
    timed ws "cargo-oci -p each (cold)" bash -c "cd '$ws' && for p in gateway billing multi; do '$bin' oci build -p \$p --no-build --release -q || exit 1; done"
  fi

  if [ "$has_platform" = 1 ]; then
    tls_cmd
    tls_cold
    timed tls "cargo-oci two platforms (cold)" "${CMD[@]}" --platform "$two_platforms" -o "$tls/target/oci/bench-out"
    tls_cold
    timed tls "cargo-oci each platform (cold)" bash -c "$(printf '%q ' "${CMD[@]}") --platform linux/amd64 -o '$tls/target/oci/out-amd64' && $(printf '%q ' "${CMD[@]}") --platform linux/arm64 -o '$tls/target/oci/out-arm64'"
  fi

  # Nothing changed, with cargo's own no-op build: cargo build vs cargo oci build (after one
  # untimed cargo oci build, as the runs above left a zstd image and no cache).
  (cd "$root/examples/http-hello" && cargo oci build --release -q --target-dir "$small/target" -o "$small/target/oci/bench-out") >>"$log" 2>&1
  timed "small" "cargo build (no-op)" bash -c "cd '$root/examples/http-hello' && cargo build --release -q --target-dir '$small/target'"
  timed "small" "cargo oci build (no-op)" bash -c "cd '$root/examples/http-hello' && cargo oci build --release -q --target-dir '$small/target' -o '$small/target/oci/bench-out'"
done

# --- 1 GiB payload, through the layer writer --------------------------------------------------
if [ "${BENCH_SKIP_1GB:-0}" != 1 ]; then
  payload=$work/payload
  if [ ! -f "$payload/.complete" ]; then
    echo "bench: generating 1 GiB payload under $payload" >&2
    rm -rf "$payload"; mkdir -p "$payload/random" "$payload/text"
    for n in $(seq 8); do
      head -c $((64 << 20)) /dev/urandom >"$payload/random/r$n.bin"
      # `yes` ends on SIGPIPE when head has enough: not a failure.
      { yes "2026-01-01T00:00:0$n INFO request path=/api/v1/items/$n status=200 bytes=4096 took=0.3ms" || true; } \
        | head -c $((64 << 20)) >"$payload/text/t$n.log"
    done
    touch "$payload/.complete"
  fi
  for i in $(seq "${BENCH_1GB_RUNS:-3}"); do
    echo "bench: 1 GiB round $i/${BENCH_1GB_RUNS:-3}" >&2
    for w in w1 1gb; do
      src=$work/w1-ctx/rootfs; [ "$w" = 1gb ] && src=$payload
      rm -rf "$work/layer-store"
      timed "layer-writer" "$w gzip" "$layer_bin" "$src" "$work/layer-store" gzip
      tail -1 "$log" >"$work/$w.layer-out"
      rm -rf "$work/layer-store"
    done
  done
  rm -rf "$work/layer-store"
fi

# --- table ------------------------------------------------------------------------------------
median() { sort -n | awk '{ a[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print a[(NR + 1) / 2]; else printf "%.4f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
col() { awk -F'\t' -v w="$1" -v t="$2" -v c="$3" '$1 == w && $2 == t { print $c }' "$results"; }
mb() { awk -v b="$1" 'BEGIN { if (b == "" || b == "-") print "-"; else printf "%.2f", b / 1048576 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f", a / b }'; }
size_of() { if [ -f "$work/$1" ]; then cat "$work/$1"; else echo -; fi; }

echo
echo "cargo-oci image assembly benchmark: $RUNS runs each, medians; $(nproc) cores; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "wall: elapsed seconds; cpu: user + system seconds of every process involved; x: ratio to cargo-oci gzip (cold)"
printf '%-7s %-31s %8s %6s %7s %6s %10s %8s\n' workload tool "wall s" "x" "cpu s" "x" "layers MiB" "peak MiB"
for w in w1 small; do
  base=$(col "$w" "cargo-oci gzip (cold)" 3 | median)
  base_cpu=$(col "$w" "cargo-oci gzip (cold)" 4 | median)
  for tool in "cargo-oci gzip (cold)" "cargo-oci gzip (fresh checkout)" "cargo-oci zstd (cold)" "cargo-oci (nothing changed)" \
              "podman build + save" "buildah from+copy+commit" "umoci insert" "tar | pigz -p2 -6 | sha256sum" \
              "cargo build (no-op)" "cargo oci build (no-op)"; do
    m=$(col "$w" "$tool" 3 | median)
    [ "$m" = - ] && continue
    c=$(col "$w" "$tool" 4 | median)
    case $tool in
      "cargo-oci gzip (cold)" | "cargo-oci gzip (fresh checkout)") bytes=$(size_of "$w.gzip-bytes") ;;
      "cargo-oci zstd (cold)") bytes=$(size_of "$w.zstd-bytes") ;;
      "podman build + save") bytes=$(size_of "$w.podman-bytes") ;;
      "buildah from+copy+commit") bytes=$(size_of "$w.buildah-bytes") ;;
      "umoci insert") bytes=$(size_of "$w.umoci-bytes") ;;
      "tar | pigz -p2 -6 | sha256sum") bytes=$(size_of "$w.pigz-bytes") ;;
      *) bytes=- ;;
    esac
    peak=$(col "$w" "$tool" 5 | median)
    peak=$(awk -v k="$peak" 'BEGIN { printf "%.1f", k / 1024 }')
    printf '%-7s %-31s %8.3f %6s %7.2f %6s %10s %8s\n' "$w" "$tool" "$m" "$(ratio "$m" "$base")" "$c" "$(ratio "$c" "$base_cpu")" "$(mb "$bytes")" "$peak"
  done
  echo "$w: cargo-oci gzip layers $(size_of "$w.gzip-bytes") bytes; gzip -6 of the same layer tars $(size_of "$w.gzip6-bytes") bytes"
done
noop=$(col small "cargo build (no-op)" 3 | median)
oci_noop=$(col small "cargo oci build (no-op)" 3 | median)
echo "nothing changed: cargo oci build - cargo build = $(awk -v a="$oci_noop" -v b="$noop" 'BEGIN { printf "%.0f ms", (a - b) * 1000 }') (medians)"
if [ "${BENCH_SKIP_1GB:-0}" != 1 ]; then
  t1=$(col layer-writer "w1 gzip" 3 | median); tg=$(col layer-writer "1gb gzip" 3 | median)
  c1=$(col layer-writer "w1 gzip" 4 | median); cg=$(col layer-writer "1gb gzip" 4 | median)
  m1=$(col layer-writer "w1 gzip" 5 | median); mg=$(col layer-writer "1gb gzip" 5 | median)
  read -r b1 z1 _ <"$work/w1.layer-out"; read -r bg zg _ <"$work/1gb.layer-out"
  awk -v t1="$t1" -v tg="$tg" -v c1="$c1" -v cg="$cg" -v b1="$b1" -v bg="$bg" -v z1="$z1" -v zg="$zg" -v m1="$m1" -v mg="$mg" 'BEGIN {
    k = bg / b1
    printf "layer writer, gzip, w1 root fs: tar %.1f MiB -> %.1f MiB in %.3f s wall, %.2f s cpu, peak %.1f MiB\n", b1 / 1048576, z1 / 1048576, t1, c1, m1 / 1024
    printf "layer writer, gzip, 1 GiB payload: tar %.1f MiB -> %.1f MiB in %.3f s wall, %.2f s cpu, peak %.1f MiB\n", bg / 1048576, zg / 1048576, tg, cg, mg / 1024
    printf "scaling: 1 GiB time / (%.1f x w1 time) = %.2f wall, %.2f cpu (target <= 1.2)\n", k, tg / (k * t1), cg / (k * c1)
  }'
fi

# --- the targets, as ratios to the best peer of the same run ------------------------------------
peers=("podman build + save" "buildah from+copy+commit" "umoci insert")
# best WORKLOAD COLUMN: the lowest median of the peers, and which peer
best() {
  local w=$1 c=$2 t m bm=- bt=-
  for t in "${peers[@]}"; do
    m=$(col "$w" "$t" "$c" | median)
    [ "$m" = - ] && continue
    if [ "$bm" = - ] || awk -v a="$m" -v b="$bm" 'BEGIN { exit !(a < b) }'; then bm=$m; bt=$t; fi
  done
  echo "$bm	$bt"
}
# target_row LABEL WORKLOAD TOOL GOAL: cargo-oci vs the best peer, wall and CPU (x = peer / ours:
# above 1 is faster than the peer)
target_row() {
  local label=$1 w=$2 tool=$3 goal=$4 mw mc bw bc bwt bct
  mw=$(col "$w" "$tool" 3 | median); mc=$(col "$w" "$tool" 4 | median)
  IFS=$'\t' read -r bw bwt < <(best "$w" 3); IFS=$'\t' read -r bc bct < <(best "$w" 4)
  printf '%-44s %7s s %6s s | %-24s %7s s %6s s | %6sx %6sx | %s\n' "$label" "$mw" "$mc" "${bwt%% *}" "$bw" "$bc" \
    "$(ratio "$bw" "$mw")" "$(ratio "$bc" "$mc")" "$goal"
}
echo
echo "targets: cargo-oci against the best peer image builder of this run (x = peer / cargo-oci, wall then cpu)"
printf '%-44s %9s %8s | %-24s %9s %8s | %7s %7s | %s\n' figure "wall" "cpu" "best peer" "wall" "cpu" "x wall" "x cpu" target
target_row "W1 gzip, helper cached (store emptied)" w1 "cargo-oci gzip (cold)" ">= 2x, layers <= gzip -6"
target_row "W1 gzip, fresh checkout (no target/oci, no cache)" w1 "cargo-oci gzip (fresh checkout)" ">= 1.5x"
target_row "small (http-hello) gzip cold" small "cargo-oci gzip (cold)" ">= 1.5x"
target_row "small, fresh checkout (no target/oci, no cache)" small "cargo-oci gzip (fresh checkout)" "(for reference)"
echo "nothing changed, over cargo build: $(awk -v a="$oci_noop" -v b="$noop" 'BEGIN { printf "%+.0f ms", (a - b) * 1000 }') (target <= +20 ms)"
for w in w1 small; do
  echo "$w layers: $(size_of "$w.gzip-bytes") bytes; gzip -6 of the same tars: $(size_of "$w.gzip6-bytes") bytes ($(ratio "$(size_of "$w.gzip-bytes")" "$(size_of "$w.gzip6-bytes")")x; target <= 1.00)"
done
peak=0
for t in "cargo-oci gzip (cold)" "cargo-oci gzip (fresh checkout)" "cargo-oci zstd (cold)"; do
  m=$(col w1 "$t" 5 | sort -n | tail -1); [ -n "$m" ] && [ "$m" -gt "$peak" ] && peak=$m
done
echo "peak RSS, cargo-oci on w1 (largest of all runs): $(awk -v k="$peak" 'BEGIN { printf "%.1f MiB", k / 1024 }'); umoci: $(col w1 "umoci insert" 5 | median | awk '{ printf "%.1f MiB", $1 / 1024 }') (target <= 32 MiB, flat in the image size: see the 1 GiB row)"
if [ "$has_platform" = 1 ]; then
  a=$(col tls "cargo-oci two platforms (cold)" 3 | median); b=$(col tls "cargo-oci each platform (cold)" 3 | median)
  ac=$(col tls "cargo-oci two platforms (cold)" 4 | median); bc=$(col tls "cargo-oci each platform (cold)" 4 | median)
  echo "two-platform build (tls-zlib, $two_platforms), --no-build: one run ${a} s wall ${ac} s cpu; one run per platform ${b} s wall ${bc} s cpu; x = $(ratio "$b" "$a") wall, $(ratio "$bc" "$ac") cpu (target > 1)"
else
  echo "two-platform build: not measured (no --platform in this cargo-oci, or the cross build failed)"
fi
if [ "$has_workspace" = 1 ]; then
  a=$(col ws "cargo-oci --workspace (cold)" 3 | median); b=$(col ws "cargo-oci -p each (cold)" 3 | median)
  ac=$(col ws "cargo-oci --workspace (cold)" 4 | median); bc=$(col ws "cargo-oci -p each (cold)" 4 | median)
  echo "three-package workspace (4 images), --no-build: --workspace ${a} s wall ${ac} s cpu; one run per package ${b} s wall ${bc} s cpu; x = $(ratio "$b" "$a") wall, $(ratio "$bc" "$ac") cpu (target > 1)"
else
  echo "three-service workspace: not measured (this cargo-oci has no --workspace)"
fi
echo "push rows: scripts/bench-push.sh tls-zlib $RUNS"
echo "raw timings: $results"
