#!/usr/bin/env bash
# The test command: installs the container tools the tests use, builds cargo-oci once, starts a
# real Docker engine for the run, then runs every test (unit and end-to-end) with nextest-free
# plain `cargo test`. Safe to run again: installs are idempotent, build products are cached.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

bash scripts/install-test-tools.sh
# The SBOM validators and syft (their virtualenv last on PATH: it shadows nothing).
export PATH="$PATH:/opt/cargo-oci-test-venv/bin"

cargo build --release --locked -p cargo-oci
export CARGO_OCI_BIN="$root/target/release/cargo-oci"

# A Docker engine of our own for this run, on a private socket.
run_dir="$(mktemp -d /tmp/cargo-oci-test.XXXXXX)"
cleanup() {
  if [ -n "${dockerd_pid:-}" ]; then
    kill "$dockerd_pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -rf "$run_dir" 2>/dev/null || true
}
trap cleanup EXIT
if [ -x /usr/sbin/dockerd ]; then
  /usr/sbin/dockerd --iptables=false --ip6tables=false --bridge=none --storage-driver=overlay2 \
    --data-root="$run_dir/data" --exec-root="$run_dir/exec" --pidfile="$run_dir/dockerd.pid" \
    -H "unix://$run_dir/docker.sock" >"$run_dir/dockerd.log" 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 100); do
    /usr/bin/docker -H "unix://$run_dir/docker.sock" version >/dev/null 2>&1 && break
    sleep 0.1
  done
  export CARGO_OCI_TEST_DOCKER_HOST="unix://$run_dir/docker.sock"
fi

cargo test --release --locked --workspace --no-fail-fast -- --test-threads="${TEST_THREADS:-4}" "$@"
