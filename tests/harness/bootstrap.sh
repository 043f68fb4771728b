#!/usr/bin/env bash
# Installs what the tests and the demo need on a Debian bookworm machine, idempotently:
# the Debian packages (etcd, Knot, Postfix, ...) and a kube-apiserver v1.20.2 built from
# Debian's `kubernetes` source package. The built binary is cached under
# ~/.cache/mx-operator, so a second run costs a few seconds. kube-controller-manager is built
# beside it: tests need its garbage collector, namespace and service-account token controllers.
# kubelet, kube-scheduler and kube-proxy make the real single-node cluster (tests/harness/node.sh)
# with Debian's containerd, runc and CNI plugins; buildah builds the project's Dockerfiles;
# the prometheus package brings promtool, which checks and unit-tests the chart's alert rules;
# slapd and ldap-utils are the primary's directory the recipient sync is tested against, nginx
# the primary's web server for lists served over HTTP(S).
set -euo pipefail

CACHE_DIR="${MX_OPERATOR_CACHE:-$HOME/.cache/mx-operator}"
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)
export DEBIAN_FRONTEND=noninteractive

log() { printf '[bootstrap] %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi
}

PACKAGES=(
  etcd-server knot knot-dnsutils postfix postfix-lmdb swaks
  golang-go rsync dpkg-dev golang-github-modern-go-reflect2-dev
  lua5.4 openssl ca-certificates curl prometheus
  containerd runc containernetworking-plugins buildah debootstrap
  iptables iproute2 conntrack socat kmod ebtables ipset bc
  slapd ldap-utils nginx
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

# A fresh machine image ships kubectl; Debian's own client is the fallback.
command -v kubectl >/dev/null 2>&1 || missing+=(kubernetes-client)

# Debian's kubernetes source package carries the whole tree with vendor/; only deb-src
# lines for the suites already configured are added.
SRC_LIST=/etc/apt/sources.list.d/mx-operator-src.sources
need_update=0
if [ ! -f "$SRC_LIST" ]; then
  log "adding deb-src entries for bookworm"
  as_root tee "$SRC_LIST" >/dev/null <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  need_update=1
fi

if [ ${#missing[@]} -gt 0 ] || [ "$need_update" -eq 1 ]; then
  log "apt-get update"
  as_root apt-get update -qq
fi
if [ ${#missing[@]} -gt 0 ]; then
  log "installing: ${missing[*]}"
  # slapd's own database is not wanted: tests write their own configuration.
  echo "slapd slapd/no_configuration boolean true" | as_root debconf-set-selections
  as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The packaged daemons are not wanted as system services: tests start their own. Stop
  # them right after their postinst may have started them, and only then: an init script
  # stops every process of its binary, the node's etcd and containerd among them.
  for svc in etcd knot postfix containerd prometheus slapd nginx; do
    as_root service "$svc" stop >/dev/null 2>&1 || true
  done
fi

# Helm's engine, the Kubernetes schemas and a CEL implementation for the packaging tests,
# from PyPI (Helm itself is not packaged in Debian): helm-python-sdk bundles Helm's Go SDK.
VENV="$CACHE_DIR/venv"
PY_PACKAGES=(helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 cel-python==0.5.0)
if ! "$VENV/bin/python3" -c 'import helm_python, kubernetes_validate, celpy' >/dev/null 2>&1; then
  log "installing ${PY_PACKAGES[*]} into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "${PY_PACKAGES[@]}"
fi

cached() {
  for b in "${BINARIES[@]}"; do
    "$CACHE_DIR/bin/$b" --version 2>/dev/null | grep -q 'v1.20.2' || return 1
  done
}
if cached && [ -f "$CACHE_DIR/src/pause.c" ]; then
  log "${BINARIES[*]} cached in $CACHE_DIR/bin"
  exit 0
fi
if cached; then
  log "fetching pause.c from Debian's kubernetes source package"
  scratch=$(mktemp -d)
  (cd "$scratch" && apt-get source -qq --download-only kubernetes >/dev/null 2>&1 \
    && dpkg-source -x --skip-patches ./kubernetes_*.dsc src >/dev/null 2>&1)
  mkdir -p "$CACHE_DIR/src"
  cp "$scratch/src/build/pause/linux/pause.c" "$CACHE_DIR/src/pause.c"
  rm -rf "$scratch"
  exit 0
fi
started=$(date +%s)

BUILD_DIR="$CACHE_DIR/build"
rm -rf "$BUILD_DIR"
mkdir -p "$BUILD_DIR" "$CACHE_DIR/bin"
cd "$BUILD_DIR"
log "fetching Debian's kubernetes source package"
apt-get source -qq --download-only kubernetes >/dev/null
dpkg-source -x --skip-patches ./kubernetes_*.dsc src >/dev/null 2>&1 || dpkg-source -x ./kubernetes_*.dsc src >/dev/null
TREE="$BUILD_DIR/src"

# Go >= 1.18 crashes the 1.20 API server (SIGSEGV in reflect2 while encoding custom
# resources); reflect2 1.0.2 from Debian fixes it.
log "patching vendor/github.com/modern-go/reflect2 with 1.0.2"
rm -rf "$TREE/vendor/github.com/modern-go/reflect2"
cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 "$TREE/vendor/github.com/modern-go/reflect2"
rm -f "$TREE/vendor/github.com/modern-go/reflect2/go.mod"

mkdir -p "$BUILD_DIR/.go/src/k8s.io"
ln -sfn "$TREE" "$BUILD_DIR/.go/src/k8s.io/kubernetes"
log "building ${BINARIES[*]} (about 10 minutes on 2 cores)"
(
  cd "$BUILD_DIR/.go/src/k8s.io/kubernetes"
  export GOPATH="$BUILD_DIR/.go" GOCACHE="$CACHE_DIR/gocache" GOFLAGS=-mod=vendor
  export KUBE_GIT_VERSION=v1.20.2 KUBE_GIT_TREE_STATE=clean
  make WHAT="${BINARIES[*]/#/cmd/}" >"$BUILD_DIR/build.log" 2>&1 \
    || { tail -40 "$BUILD_DIR/build.log" >&2; exit 1; }
)
for b in "${BINARIES[@]}"; do
  built=$(find "$TREE/_output" -type f -name "$b" -perm -u+x | head -n1)
  [ -n "$built" ] || { log "build produced no $b"; exit 1; }
  install -m 0755 "$built" "$CACHE_DIR/bin/$b"
  "$CACHE_DIR/bin/$b" --version
done
# The node's sandbox image is the tree's own pause (tests/harness/images.sh builds it).
mkdir -p "$CACHE_DIR/src"
cp "$TREE/build/pause/linux/pause.c" "$CACHE_DIR/src/pause.c"
cd "$CACHE_DIR"
rm -rf "$BUILD_DIR"
log "built ${BINARIES[*]} in $(( $(date +%s) - started ))s, cached in $CACHE_DIR/bin"
