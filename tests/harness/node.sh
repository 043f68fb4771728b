#!/usr/bin/env bash
# A real single-node Kubernetes v1.20 cluster on this machine, for the node tests and
# `make demo`: etcd, kube-apiserver, kube-controller-manager (all controllers, host-path
# provisioner), kube-scheduler, containerd + runc + CNI bridge, kubelet and kube-proxy, from
# Debian packages and the binaries tests/harness/bootstrap.sh builds; images from
# tests/harness/images.sh.
#
#   node.sh up      start it (a running node is reused); prints the state file's path
#   node.sh load T  import OCI archives T... into the node's containerd
#   node.sh down    stop what `up` started (by PID), remove its bridge, iptables chains,
#                   mounts and network namespaces, restore the sysctls it changed
#   node.sh status  exit 0 when the node answers and is Ready
#
# State lives in $MX_NODE_DIR (default /var/tmp/mx-operator-node); $MX_NODE_DIR/node.env
# holds the addresses and paths the tests read. All traffic stays on this machine: loopback,
# the machine's own address, and the pod (10.244.0.0/24) and Service (10.96.0.0/16) ranges
# of the bridge made here. No image is ever pulled from a registry: every registry name the
# node could be asked for points at a closed loopback port.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/../.." && pwd)"
CACHE_DIR="${MX_OPERATOR_CACHE:-$HOME/.cache/mx-operator}"
NODE_DIR="${MX_NODE_DIR:-/var/tmp/mx-operator-node}"
BIN="$CACHE_DIR/bin"
IMAGES="$CACHE_DIR/images"
R="$NODE_DIR/run"
NODE_NAME=mx-node
POD_CIDR=10.244.0.0/24
POD_GATEWAY=10.244.0.1
SERVICE_CIDR=10.96.0.0/16
BRIDGE=mxop-br0
# Every host setting the node changes; recorded before the first start, restored by `down`.
SYSCTLS=(net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables kernel.panic kernel.panic_on_oops
  vm.overcommit_memory net.ipv4.conf.all.route_localnet)
REGISTRIES=(docker.io registry-1.docker.io ghcr.io gcr.io quay.io registry.k8s.io k8s.gcr.io localhost _default)

started_at=$(date +%s.%N)
log() { printf '[node %5.1fs] %s\n' "$(echo "$(date +%s.%N) - $started_at" | bc)" "$*" >&2; }
die() { log "$*"; exit 1; }

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# The machine's own address: the source address of its default route (no packet is sent).
node_ip() {
  local ip
  ip=$(ip -4 route get 192.0.2.254 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p' | head -n1)
  [ -n "$ip" ] || ip=$(ip -4 -o addr show scope global | awk '{print $4}' | cut -d/ -f1 | head -n1)
  [ -n "$ip" ] || die "no global IPv4 address on this machine"
  echo "$ip"
}

kubectl_admin() { kubectl --kubeconfig "$R/pki/admin.kubeconfig" "$@"; }

node_ready() {
  [ -f "$R/pki/admin.kubeconfig" ] || return 1
  [ "$(kubectl_admin get node "$NODE_NAME" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

# Every process `up` started is still alive.
processes_alive() {
  [ -s "$R/pids" ] || return 1
  local name pid
  while read -r name pid; do kill -0 "$pid" 2>/dev/null || return 1; done < "$R/pids"
}

start() { # name command...
  local name=$1; shift
  setsid "$@" > "$R/logs/$name.log" 2>&1 < /dev/null &
  echo "$name $!" >> "$R/pids"
}

wait_for() { # seconds description command...
  local limit=$1 what=$2; shift 2
  local deadline=$(( $(date +%s) + limit ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || die "$what: not within ${limit}s; logs in $R/logs"
    check_alive
    sleep 0.3
  done
}

check_alive() {
  local name pid
  while read -r name pid; do
    kill -0 "$pid" 2>/dev/null || die "$name exited; its log: $R/logs/$name.log: $(tail -5 "$R/logs/$name.log" | tr '\n' ' ')"
  done < "$R/pids"
}

record_sysctls() {
  [ -f "$NODE_DIR/sysctl.orig" ] && return
  local key
  : > "$NODE_DIR/sysctl.orig.partial"
  for key in "${SYSCTLS[@]}"; do
    local value; value=$(sysctl -n "$key" 2>/dev/null) || continue
    echo "$key=$value" >> "$NODE_DIR/sysctl.orig.partial"
  done
  mv "$NODE_DIR/sysctl.orig.partial" "$NODE_DIR/sysctl.orig"
}

# A CA, the API server's certificate (SANs: loopback, the machine's address, the kubernetes
# Service's address), the service-account key pair and one token per component.
write_pki() {
  local p="$R/pki" ip=$1 port=$2
  mkdir -p "$p"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$p/ca.key" -out "$p/ca.crt" -days 30 -subj /CN=mx-node-ca 2>/dev/null
  cat > "$p/san.cnf" <<CNF
[req]
distinguished_name=dn
[dn]
[ext]
subjectAltName=DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:127.0.0.1,IP:$ip,IP:10.96.0.1
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
CNF
  openssl req -newkey rsa:2048 -nodes -keyout "$p/apiserver.key" -out "$p/apiserver.csr" -subj /CN=kube-apiserver 2>/dev/null
  openssl x509 -req -in "$p/apiserver.csr" -CA "$p/ca.crt" -CAkey "$p/ca.key" -CAcreateserial \
    -out "$p/apiserver.crt" -days 30 -extfile "$p/san.cnf" -extensions ext 2>/dev/null
  openssl genrsa -out "$p/sa.key" 2048 2>/dev/null
  openssl rsa -in "$p/sa.key" -pubout -out "$p/sa.pub" 2>/dev/null
  token() { head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
  local admin kubelet proxy scheduler manager
  admin=$(token); kubelet=$(token); proxy=$(token); scheduler=$(token); manager=$(token)
  cat > "$p/tokens.csv" <<CSV
$admin,admin,admin,"system:masters"
$kubelet,system:node:$NODE_NAME,system:node:$NODE_NAME,"system:nodes"
$proxy,system:kube-proxy,system:kube-proxy
$scheduler,system:kube-scheduler,system:kube-scheduler
$manager,system:kube-controller-manager,system:kube-controller-manager
CSV
  kubeconfig() { # name token
    cat > "$p/$1.kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: mx-node
  cluster: {server: "https://$ip:$port", certificate-authority: $p/ca.crt}
users:
- name: $1
  user: {token: "$2"}
contexts:
- name: mx-node
  context: {cluster: mx-node, user: $1}
current-context: mx-node
KC
  }
  kubeconfig admin "$admin"; kubeconfig kubelet "$kubelet"; kubeconfig kube-proxy "$proxy"
  kubeconfig kube-scheduler "$scheduler"; kubeconfig kube-controller-manager "$manager"
}

write_config() {
  local ip=$1 kubelet_port=$2 kubelet_health=$3 proxy_health=$4 proxy_metrics=$5
  local c="$R/conf"
  mkdir -p "$c/certs.d" "$R/cni/net.d" "$R/cni/ipam"
  cat > "$c/containerd.toml" <<TOML
version = 2
root = "$R/containerd/root"
state = "$R/containerd/state"
[grpc]
  address = "$R/containerd/containerd.sock"
[ttrpc]
  address = "$R/containerd/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$R/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/pause:3.4.1"
  # This machine drops CAP_SYS_RESOURCE: runc cannot lower oom_score_adj below its own
  # (the kubelet asks -998 for sandboxes).
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$R/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$R/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$c/certs.d"
TOML
  local registry
  for registry in "${REGISTRIES[@]}"; do
    mkdir -p "$c/certs.d/$registry"
    # Both parts are needed: containerd 1.6 ignores a file with only `server` and falls
    # back to the real registry.
    cat > "$c/certs.d/$registry/hosts.toml" <<TOML
# every pull from $registry goes to a closed loopback port, never off this machine
server = "http://127.0.0.1:1"
[host."http://127.0.0.1:1"]
  capabilities = ["pull", "resolve"]
TOML
  done
  cat > "$R/cni/net.d/10-mxop-bridge.conflist" <<JSON
{
  "cniVersion": "0.4.0",
  "name": "mxop-pods",
  "plugins": [
    {
      "type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": true, "hairpinMode": true,
      "ipam": {"type": "host-local", "dataDir": "$R/cni/ipam",
               "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$POD_GATEWAY"}]],
               "routes": [{"dst": "0.0.0.0/0"}]}
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
JSON
  echo '{"cniVersion": "0.4.0", "name": "lo", "type": "loopback"}' > "$R/cni/net.d/99-loopback.conf"
  # Pods get the host's resolver settings (no cluster DNS here): a resolver of our own on
  # the machine's address, so nothing a pod looks up leaves the machine.
  echo "nameserver $ip" > "$c/resolv.conf"
  cat > "$c/knot.conf" <<CONF
server:
    listen: $ip@53
    rundir: "$R/knot"
log:
  - target: stderr
    any: warning
database:
    storage: "$R/knot"
CONF
  cat > "$c/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
cgroupsPerQOS: true
enforceNodeAllocatable: ["pods"]
failSwapOn: false
address: 0.0.0.0
port: $kubelet_port
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $kubelet_health
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
  x509: {}
authorization: {mode: AlwaysAllow}
clusterDomain: cluster.local
resolvConf: $c/resolv.conf
serializeImagePulls: false
protectKernelDefaults: false
makeIPTablesUtilChains: true
evictionHard: {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"}
imageGCHighThresholdPercent: 99
imageGCLowThresholdPercent: 98
containerLogMaxSize: 10Mi
YAML
  cat > "$c/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: $R/pki/kube-proxy.kubeconfig
mode: iptables
clusterCIDR: $POD_CIDR
hostnameOverride: $NODE_NAME
bindAddress: 0.0.0.0
healthzBindAddress: 127.0.0.1:$proxy_health
metricsBindAddress: 127.0.0.1:$proxy_metrics
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
YAML
}

import_images() {
  local archive
  for archive in "$@"; do
    ctr --address "$R/containerd/containerd.sock" -n k8s.io images import "$archive" >/dev/null \
      || die "importing $archive failed"
  done
}

up() {
  if processes_alive && node_ready; then
    log "node $NODE_NAME already running"
    echo "$NODE_DIR/node.env"
    return
  fi
  [ -d "$R" ] && down_quietly
  for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy; do
    [ -x "$BIN/$b" ] || die "$BIN/$b is missing: run tests/harness/bootstrap.sh (make bootstrap)"
  done
  [ -s "$IMAGES/pause.oci.tar" ] || die "$IMAGES/pause.oci.tar is missing: run tests/harness/images.sh"
  mkdir -p "$R/logs" "$R/kubelet" "$R/knot"
  : > "$R/pids"
  record_sysctls
  # The host-path provisioner always uses /tmp/hostpath_pv/<uuid>: removed by `down` only
  # when the node made it.
  [ -e /tmp/hostpath_pv ] || touch "$NODE_DIR/hostpath_pv.ours"
  local ip etcd_client etcd_peer apiserver kubelet_port kubelet_health proxy_health proxy_metrics
  ip=$(node_ip)
  etcd_client=$(free_port); etcd_peer=$(free_port); apiserver=$(free_port)
  kubelet_port=$(free_port); kubelet_health=$(free_port); proxy_health=$(free_port); proxy_metrics=$(free_port)
  # br_netfilter (bridged pod traffic through iptables) is unloaded by `down` if `up` loaded it.
  if ! grep -q '^br_netfilter ' /proc/modules && modprobe br_netfilter 2>/dev/null; then
    touch "$NODE_DIR/br_netfilter.ours"
  fi
  sysctl -qw net.ipv4.ip_forward=1
  sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || true
  write_pki "$ip" "$apiserver"
  write_config "$ip" "$kubelet_port" "$kubelet_health" "$proxy_health" "$proxy_metrics"
  log "configuration written (node address $ip)"

  start etcd etcd --name=mx-node --data-dir="$R/etcd" \
    --listen-client-urls="http://127.0.0.1:$etcd_client" --advertise-client-urls="http://127.0.0.1:$etcd_client" \
    --listen-peer-urls="http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer" \
    --initial-cluster="mx-node=http://127.0.0.1:$etcd_peer" --logger=zap --log-level=warn
  start containerd containerd --config "$R/conf/containerd.toml"
  start knotd knotd -c "$R/conf/knot.conf"
  # Pods reach the API through the kubernetes Service, whose endpoint is the advertised
  # address: it must be the machine's own, not loopback.
  start kube-apiserver "$BIN/kube-apiserver" --etcd-servers="http://127.0.0.1:$etcd_client" \
    --bind-address=0.0.0.0 --advertise-address="$ip" --secure-port="$apiserver" --insecure-port=0 \
    --tls-cert-file="$R/pki/apiserver.crt" --tls-private-key-file="$R/pki/apiserver.key" \
    --client-ca-file="$R/pki/ca.crt" --token-auth-file="$R/pki/tokens.csv" \
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction --allow-privileged=true \
    --service-account-issuer=https://kubernetes.default.svc \
    --service-account-key-file="$R/pki/sa.pub" --service-account-signing-key-file="$R/pki/sa.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" --service-node-port-range=30000-32767 \
    --kubelet-preferred-address-types=InternalIP,Hostname --v=1
  wait_for 90 "kube-apiserver /readyz" kubectl_admin get --raw /readyz
  log "kube-apiserver ready on $ip:$apiserver"

  start kube-controller-manager "$BIN/kube-controller-manager" --kubeconfig="$R/pki/kube-controller-manager.kubeconfig" \
    --use-service-account-credentials=true --controllers='*' \
    --service-account-private-key-file="$R/pki/sa.key" --root-ca-file="$R/pki/ca.crt" \
    --service-cluster-ip-range="$SERVICE_CIDR" --allocate-node-cidrs=false \
    --enable-hostpath-provisioner=true --leader-elect=false --port=0 --secure-port=0 --v=1
  start kube-scheduler "$BIN/kube-scheduler" --kubeconfig="$R/pki/kube-scheduler.kubeconfig" \
    --leader-elect=false --port=0 --secure-port=0 --v=1

  wait_for 30 "containerd" ctr --address "$R/containerd/containerd.sock" version
  local archives=("$IMAGES/pause.oci.tar")
  for name in mx-operator mx-gateway; do
    [ -s "$IMAGES/$name.oci.tar" ] && archives+=("$IMAGES/$name.oci.tar")
  done
  import_images "${archives[@]}"
  log "images imported: $(ctr --address "$R/containerd/containerd.sock" -n k8s.io images ls -q | grep -v '^sha256' | tr '\n' ' ')"

  start kubelet "$BIN/kubelet" --config="$R/conf/kubelet.yaml" --kubeconfig="$R/pki/kubelet.kubeconfig" \
    --container-runtime=remote --container-runtime-endpoint="unix://$R/containerd/containerd.sock" \
    --root-dir="$R/kubelet" --cert-dir="$R/kubelet/pki" --hostname-override="$NODE_NAME" --node-ip="$ip" \
    --pod-infra-container-image=localhost/pause:3.4.1 --v=1
  start kube-proxy "$BIN/kube-proxy" --config="$R/conf/kube-proxy.yaml" --v=1
  # Pods may reach each other, Services and this machine (INPUT), nothing beyond it: the
  # bridge masquerades and routes, so traffic to any other address is dropped here. The
  # chain's name puts it among those `down` removes.
  iptables -N CNI-MXOP-EGRESS 2>/dev/null || iptables -F CNI-MXOP-EGRESS
  iptables -A CNI-MXOP-EGRESS -s "$POD_CIDR" ! -d "$POD_CIDR" -j DROP
  iptables -C FORWARD -j CNI-MXOP-EGRESS 2>/dev/null || iptables -I FORWARD 1 -j CNI-MXOP-EGRESS
  wait_for 120 "node $NODE_NAME Ready" node_ready
  # The host-path provisioner serves claims that name no class; make it the default.
  kubectl_admin apply -f - >/dev/null <<'YAML'
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: hostpath
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: kubernetes.io/host-path
reclaimPolicy: Delete
volumeBindingMode: Immediate
YAML
  # Pods start only once their namespace's ServiceAccount exists.
  wait_for 60 "the default ServiceAccount" kubectl_admin get serviceaccount default
  cat > "$NODE_DIR/node.env.partial" <<ENV
NODE_NAME=$NODE_NAME
NODE_IP=$ip
POD_GATEWAY=$POD_GATEWAY
APISERVER=https://$ip:$apiserver
KUBECONFIG=$R/pki/admin.kubeconfig
CONTAINERD_SOCKET=$R/containerd/containerd.sock
ENV
  mv "$NODE_DIR/node.env.partial" "$NODE_DIR/node.env"
  log "node $NODE_NAME Ready"
  echo "$NODE_DIR/node.env"
}

stop_pid() {
  local pid=$1 i
  kill "$pid" 2>/dev/null || return 0
  for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}

down_quietly() {
  export KUBECONFIG="$R/pki/admin.kubeconfig"
  if [ "${1:-}" != --fast ] && kubectl_admin get --raw /readyz >/dev/null 2>&1 && node_ready; then
    # The kubelet tears pods down (CNI DEL, unmounts) while it still runs; claims are
    # deleted so that the host-path provisioner removes their folders.
    kubectl_admin delete statefulset,deployment,pod --all --all-namespaces --grace-period=1 --wait=false >/dev/null 2>&1 || true
    local i
    for i in $(seq 60); do [ -z "$(kubectl_admin get pods -A -o name 2>/dev/null)" ] && break; sleep 1; done
    kubectl_admin delete pvc --all --all-namespaces --wait=false >/dev/null 2>&1 || true
    for i in $(seq 20); do [ -z "$(kubectl_admin get pv -o name 2>/dev/null)" ] && break; sleep 0.5; done
    log "pods and volumes removed"
  fi
  # Node agents first, containerd after the kubelet, etcd last.
  local name pid
  for name in kube-proxy kubelet kube-scheduler kube-controller-manager kube-apiserver knotd containerd etcd; do
    for pid in $(awk -v n="$name" '$1 == n {print $2}' "$R/pids" 2>/dev/null); do stop_pid "$pid"; done
  done
  log "processes stopped"
  # containerd's shims name our socket on their command line.
  for pid in $(pgrep -f "containerd-shim.*-address $R/containerd/containerd.sock" || true); do stop_pid "$pid"; done
  local container
  for container in $(ls "$R/runc/k8s.io" 2>/dev/null); do runc --root "$R/runc/k8s.io" delete -f "$container" >/dev/null 2>&1 || true; done
  local mount
  for mount in $(awk '{print $5}' /proc/self/mountinfo | grep "^$NODE_DIR/" | sort -r); do umount -l "$mount" 2>/dev/null || true; done
  local ns
  for ns in $(ip netns list 2>/dev/null | awk '/^cni-/ {print $1}'); do ip netns delete "$ns" 2>/dev/null || true; done
  if ip link show "$BRIDGE" >/dev/null 2>&1; then ip link delete "$BRIDGE" || true; fi
  if mountpoint -q /run/netns && [ -z "$(ls -A /run/netns)" ]; then umount /run/netns || true; fi
  if [ -d /run/netns ] && [ -z "$(ls -A /run/netns)" ]; then rmdir /run/netns || true; fi
  # The jumps into the KUBE-* and CNI-* chains, then those chains.
  local ipt table chain
  for ipt in iptables ip6tables; do
    for table in filter nat mangle raw; do
      { "$ipt-save" -t "$table" 2>/dev/null | grep -E '^-A [A-Z]+ .*-j (KUBE|CNI)-' | grep -vE '^-A (KUBE|CNI)-' | sed 's/^-A/-D/' |
        while read -r rule; do eval "$ipt -t $table $rule" 2>/dev/null || true; done; } || true
      for chain in $("$ipt-save" -t "$table" 2>/dev/null | awk '/^:(KUBE|CNI)-/ {print substr($1, 2)}'); do "$ipt" -t "$table" -F "$chain" 2>/dev/null || true; done
      for chain in $("$ipt-save" -t "$table" 2>/dev/null | awk '/^:(KUBE|CNI)-/ {print substr($1, 2)}'); do "$ipt" -t "$table" -X "$chain" 2>/dev/null || true; done
    done
  done
  local hierarchy
  for hierarchy in /sys/fs/cgroup/*/; do
    [ -d "$hierarchy/kubepods" ] && find "$hierarchy/kubepods" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
  [ -d /sys/fs/cgroup/kubepods ] && find /sys/fs/cgroup/kubepods -depth -type d -exec rmdir {} \; 2>/dev/null || true
  if [ -f "$NODE_DIR/sysctl.orig" ]; then
    local key value
    while IFS== read -r key value; do sysctl -qw "$key=$value" 2>/dev/null || true; done < "$NODE_DIR/sysctl.orig"
    rm -f "$NODE_DIR/sysctl.orig"
  fi
  if [ -f "$NODE_DIR/br_netfilter.ours" ]; then rmmod br_netfilter 2>/dev/null || true; rm -f "$NODE_DIR/br_netfilter.ours"; fi
  if [ -f "$NODE_DIR/hostpath_pv.ours" ]; then rm -rf /tmp/hostpath_pv "$NODE_DIR/hostpath_pv.ours"; fi
  rm -rf "$R" "$NODE_DIR/node.env"
}

case "${1:-}" in
  up) up ;;
  load) shift; import_images "$@" ;;
  down) shift; down_quietly "$@"; log "node stopped; processes left: $(pgrep -fc "$NODE_DIR/" || true)" ;;
  status) processes_alive && node_ready ;;
  *) echo "usage: node.sh up | load ARCHIVE... | down [--fast] | status" >&2; exit 64 ;;
esac
