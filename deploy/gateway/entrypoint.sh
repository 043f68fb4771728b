#!/bin/sh
# Gateway container entrypoint.
#   postfix        wait for the agent's first configuration, then run Postfix in the foreground
#   agent ARGS...  run `mx-operator agent ARGS...`
#   all ARGS...    both in one container (agent in the background)
set -eu
CONFIG_DIR="${MX_GATEWAY_CONFIG_DIR:-/etc/mx-gateway/postfix}"

wait_for_config() {
    # The agent writes main.cf only after it has checked the gateway's ConfigMaps.
    while [ ! -s "$CONFIG_DIR/main.cf" ]; do sleep 1; done
}

role="${1:-all}"
[ $# -gt 0 ] && shift
case "$role" in
    postfix)
        wait_for_config
        exec /usr/sbin/postfix -c "$CONFIG_DIR" start-fg
        ;;
    agent)
        exec /usr/local/bin/mx-operator agent --config-dir "$CONFIG_DIR" "$@"
        ;;
    all)
        /usr/local/bin/mx-operator agent --config-dir "$CONFIG_DIR" "$@" &
        wait_for_config
        exec /usr/sbin/postfix -c "$CONFIG_DIR" start-fg
        ;;
    *)
        echo "usage: gateway-entrypoint postfix | agent ARGS... | all ARGS..." >&2
        exit 64
        ;;
esac
