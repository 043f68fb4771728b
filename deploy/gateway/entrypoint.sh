#!/bin/sh
# Gateway container entrypoint.
#   postfix        wait for the agent's first configuration, then run Postfix
#   agent ARGS...  run `mx-operator agent ARGS...`
#   all ARGS...    both in one container (agent in the background)
set -eu
CONFIG_DIR="${MX_GATEWAY_CONFIG_DIR:-/etc/mx-gateway/postfix}"
QUEUE_DIR="${MX_GATEWAY_QUEUE_DIR:-/var/spool/postfix}"

# An emptyDir is created 0777, and Postfix warns at every start about a configuration folder
# that group or others can write.
prepare_config_dir() {
    mkdir -p "$CONFIG_DIR"
    chmod 0755 "$CONFIG_DIR"
}

wait_for_config() {
    # The agent saves its last good ConfigMaps (LAST_GOOD_FILE in operator/src/agent) once
    # main.cf and every table of a complete load are in place; main.cf alone comes first.
    while [ ! -s "$CONFIG_DIR/mx-agent-last-good.json" ]; do sleep 1; done
}

# On TERM the pod has already left its Services' endpoints: sessions in progress get
# MX_GATEWAY_DRAIN_SECONDS to end, then Postfix stops in an orderly way. Mail accepted
# until then is on the queue volume and goes out after the next start.
# A master that does not stop within MX_GATEWAY_STOP_SECONDS is wedged (this is how the
# liveness probe's restart of a hung Postfix ends): it is killed, as the kubelet would at the
# end of the grace period, minutes later. Mail it accepted is on the queue volume already.
stop_postfix() {
    sleep "${MX_GATEWAY_DRAIN_SECONDS:-10}" || true
    timeout "${MX_GATEWAY_STOP_SECONDS:-10}" /usr/sbin/postfix -c "$CONFIG_DIR" stop >/dev/null 2>&1 || true
    [ -n "${master:-}" ] || return 0
    for _ in $(seq "${MX_GATEWAY_STOP_SECONDS:-10}"); do
        kill -0 "$master" 2>/dev/null || return 0
        sleep 1
    done
    echo "gateway-entrypoint: the Postfix master did not stop; killing it" >&2
    kill -CONT "$master" 2>/dev/null || true
    kill -KILL "$master" 2>/dev/null || true
}

# Mail deferred before a restart would wait for Postfix's retry backoff (minutes): retry it
# as soon as the new master answers.
flush_when_up() {
    for _ in $(seq 60); do
        /usr/sbin/postqueue -c "$CONFIG_DIR" -f >/dev/null 2>&1 && return
        sleep 1
    done
}

run_postfix() {
    prepare_config_dir
    wait_for_config
    # The queue is a volume, and its root comes from the provisioner as it likes (host-path
    # gives 0750 root:root, others give other owners): Postfix needs it root-owned and
    # searchable, and creates what is missing below it.
    chown root:root "$QUEUE_DIR"
    chmod 0755 "$QUEUE_DIR"
    # With a shared process namespace this shell is not PID 1, and a TERM from the kubelet
    # reaches it, not the Postfix master: it is turned into `stop_postfix`.
    trap stop_postfix TERM INT
    /usr/sbin/postfix -c "$CONFIG_DIR" start-fg &
    master=$!
    flush_when_up &
    # `wait` returns early when the trap runs; wait again until the master has exited, and
    # end with its status.
    status=0
    while kill -0 "$master" 2>/dev/null; do
        status=0
        wait "$master" || status=$?
    done
    exit "$status"
}

role="${1:-all}"
[ $# -gt 0 ] && shift
case "$role" in
    postfix)
        run_postfix
        ;;
    agent)
        prepare_config_dir
        exec /usr/local/bin/mx-operator agent --config-dir "$CONFIG_DIR" "$@"
        ;;
    all)
        prepare_config_dir
        /usr/local/bin/mx-operator agent --config-dir "$CONFIG_DIR" "$@" &
        run_postfix
        ;;
    *)
        echo "usage: gateway-entrypoint postfix | agent ARGS... | all ARGS..." >&2
        exit 64
        ;;
esac
