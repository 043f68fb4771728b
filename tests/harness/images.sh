#!/usr/bin/env bash
# Builds the project's images from deploy/operator/Dockerfile and deploy/gateway/Dockerfile
# with buildah, without any registry: the base images those files name are made here from
# Debian packages and cached under ~/.cache/mx-operator/images.
#
#   images.sh [BINARY]   BINARY: the mx-operator build to put in the images (default
#                        target/debug/mx-operator), copied without debug information
#   images.sh --bases    only the base images (cached; no project build needed)
#
# Writes $CACHE/images/{mx-operator,mx-gateway}.oci.tar (localhost/mx-operator:dev,
# localhost/mx-gateway:dev) and the node's pause image, which tests/harness/node.sh imports.
# Both Dockerfiles are built at their `prebuilt` target: their Rust stage needs the
# docker.io Rust image, which no registry here serves.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/../.." && pwd)"
CACHE_DIR="${MX_OPERATOR_CACHE:-$HOME/.cache/mx-operator}"
IMAGES="$CACHE_DIR/images"
BINARY="${1:-target/debug/mx-operator}"
OPERATOR_IMAGE=localhost/mx-operator:dev
GATEWAY_IMAGE=localhost/mx-gateway:dev
BUILDAH=(buildah --root "$CACHE_DIR/buildah/root" --runroot /run/mx-operator-buildah --storage-driver overlay)

log() { printf '[images] %s\n' "$*" >&2; }
mkdir -p "$IMAGES"

# docker.io/library/debian:bookworm-slim: Debian's minimal base system.
base_debian() {
  local out="$IMAGES/debian-bookworm-slim.oci.tar"
  [ -s "$out" ] && return
  log "debootstrap bookworm (about a minute, once)"
  local root; root=$(mktemp -d "$IMAGES/rootfs.XXXX")
  chmod 0755 "$root"   # mktemp makes it 0700: the image's / must be searchable
  debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >"$IMAGES/debootstrap.log" 2>&1 \
    || { tail -20 "$IMAGES/debootstrap.log" >&2; exit 1; }
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  python3 "$REPO/tests/harness/mkoci.py" "$root" docker.io/library/debian:bookworm-slim "$out" --cmd '["bash"]'
  rm -rf "$root"
}

# gcr.io/distroless/cc-debian12:nonroot: glibc, libgcc, CA certificates, time zones and the
# nonroot user, from the same Debian packages distroless is made of; no shell.
base_distroless() {
  local out="$IMAGES/distroless-cc-debian12.oci.tar"
  [ -s "$out" ] && return
  log "assembling the distroless cc base from Debian packages"
  local work; work=$(mktemp -d "$IMAGES/distroless.XXXX")
  (cd "$work" && apt-get download -qq base-files netbase tzdata libc6 libgcc-s1 libssl3 ca-certificates >/dev/null 2>&1)
  mkdir -p "$work/root"
  chmod 0755 "$work/root"
  for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$work/root"; done
  local root="$work/root"
  mkdir -p "$root/etc/ssl/certs" "$root/tmp" "$root/home/nonroot"
  chmod 1777 "$root/tmp"
  # ca-certificates' postinst builds the bundle; no maintainer script runs here.
  find "$root/usr/share/ca-certificates" -name '*.crt' -print0 | sort -z | xargs -0 cat > "$root/etc/ssl/certs/ca-certificates.crt"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$root/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' > "$root/etc/group"
  chown 65532:65532 "$root/home/nonroot"
  rm -rf "$root/usr/share/doc" "$root/usr/share/man" "$root/usr/share/lintian"
  python3 "$REPO/tests/harness/mkoci.py" "$root" gcr.io/distroless/cc-debian12:nonroot "$out" \
    --user 65532:65532 --env PATH=/usr/local/bin:/usr/bin:/bin --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
  rm -rf "$work"
}

# localhost/pause:3.4.1: the sandbox image, Kubernetes' own pause.c built static.
pause_image() {
  local out="$IMAGES/pause.oci.tar"
  [ -s "$out" ] && return
  local source="$CACHE_DIR/src/pause.c"
  [ -f "$source" ] || { log "$source is missing: run tests/harness/bootstrap.sh"; exit 1; }
  local root; root=$(mktemp -d "$IMAGES/pause.XXXX")
  chmod 0755 "$root"
  gcc -Os -Wall -Werror -static -DVERSION=v3.4.1 -o "$root/pause" "$source"
  strip "$root/pause"
  python3 "$REPO/tests/harness/mkoci.py" "$root" localhost/pause:3.4.1 "$out" --entrypoint '["/pause"]'
  rm -rf "$root"
}

# Makes a base archive known to buildah under the name in its index (no registry involved).
load_base() {
  local archive=$1 name=$2
  "${BUILDAH[@]}" inspect --type image "$name" >/dev/null 2>&1 && return
  "${BUILDAH[@]}" pull -q "oci-archive:$archive" >/dev/null
}

build() {
  local dockerfile=$1 name=$2 out=$3
  local started; started=$(date +%s)
  # --network=host: the Dockerfiles' RUN steps install Debian packages.
  "${BUILDAH[@]}" bud -q --pull=never --layers --network=host \
    -f "$REPO/$dockerfile" --target prebuilt --build-arg "BINARY=$BINARY" -t "$name" "$REPO" >/dev/null
  rm -f "$out.partial"
  "${BUILDAH[@]}" push -q "$name" "oci-archive:$out.partial:$name" >/dev/null
  mv "$out.partial" "$out"
  log "built $name from $dockerfile in $(( $(date +%s) - started ))s"
}

base_debian
base_distroless
pause_image
[ "$BINARY" = --bases ] && exit 0
[ -x "$BINARY" ] || BINARY="$REPO/$BINARY"
[ -x "$BINARY" ] || { log "$BINARY is missing: cargo build first"; exit 1; }
# The Dockerfiles copy the binary from the build context (the repository): a copy without
# debug information under target/image/ (a debug build is ~280 MB with it, ~40 MB without).
mkdir -p "$REPO/target/image"
objcopy --strip-debug "$BINARY" "$REPO/target/image/mx-operator.partial"
mv "$REPO/target/image/mx-operator.partial" "$REPO/target/image/mx-operator"
BINARY=target/image/mx-operator
load_base "$IMAGES/debian-bookworm-slim.oci.tar" docker.io/library/debian:bookworm-slim
load_base "$IMAGES/distroless-cc-debian12.oci.tar" gcr.io/distroless/cc-debian12:nonroot
build deploy/operator/Dockerfile "$OPERATOR_IMAGE" "$IMAGES/mx-operator.oci.tar"
build deploy/gateway/Dockerfile "$GATEWAY_IMAGE" "$IMAGES/mx-gateway.oci.tar"
# Keep only the newest layers of the project's images.
"${BUILDAH[@]}" rmi --prune >/dev/null 2>&1 || true
