#!/bin/sh
# dockkit worker entrypoint: install this node's keys, then run sshd in the foreground.
#
# Keys come from one of three places (nothing is baked into the image):
#   1. files copied into the created container before it starts (docker put_archive):
#        /etc/dockkit/ssh_host_ed25519_key   the node's private host key (OpenSSH format)
#        /etc/dockkit/authorized_keys        public keys allowed to log in as root
#   2. environment variables, base64 of the same contents (handy for compose):
#        DOCKKIT_HOST_KEY, DOCKKIT_AUTHORIZED_KEYS
#   3. with DOCKKIT_KEYS=stdin, a tar of the files of 1 (and of /root/.ssh, if any) on
#      stdin, read at the first start: what `dockkit up` sends as the node starts (a copy
#      into a created container costs the engine several times more). A restart finds
#      the files in place and reads nothing.
# With no host key at all a fresh one is generated and its public line is logged,
# so it can be pinned from `docker logs`. With no authorized key the node refuses to start.
# Extra arguments are passed to sshd.
set -eu
umask 077
SRC=/etc/dockkit
HOST_KEY=/etc/ssh/ssh_host_ed25519_key

if [ "${DOCKKIT_KEYS:-}" = stdin ] && [ ! -s "$SRC/authorized_keys" ]; then
    tar -x -C / || { echo "dockkit: DOCKKIT_KEYS=stdin, but no key archive came on stdin" >&2; exit 1; }
fi
if [ -n "${DOCKKIT_HOST_KEY:-}" ]; then
    printf '%s' "$DOCKKIT_HOST_KEY" | base64 -d > "$HOST_KEY"
elif [ -s "$SRC/ssh_host_ed25519_key" ]; then
    cp "$SRC/ssh_host_ed25519_key" "$HOST_KEY"
elif [ ! -s "$HOST_KEY" ]; then
    rm -f "$HOST_KEY" "$HOST_KEY.pub"
    ssh-keygen -q -t ed25519 -N '' -C "dockkit-$(hostname)" -f "$HOST_KEY"
    echo "dockkit: generated host key: $(cat "$HOST_KEY.pub")" >&2
fi
chmod 600 "$HOST_KEY"

mkdir -p /root/.ssh
chmod 700 /root/.ssh
if [ -n "${DOCKKIT_AUTHORIZED_KEYS:-}" ]; then
    printf '%s' "$DOCKKIT_AUTHORIZED_KEYS" | base64 -d > /root/.ssh/authorized_keys
elif [ -s "$SRC/authorized_keys" ]; then
    cp "$SRC/authorized_keys" /root/.ssh/authorized_keys
fi
if [ ! -s /root/.ssh/authorized_keys ]; then
    echo "dockkit: no authorized key: put $SRC/authorized_keys in the container" \
         "or set DOCKKIT_AUTHORIZED_KEYS (base64)" >&2
    exit 1
fi
chmod 600 /root/.ssh/authorized_keys
unset DOCKKIT_HOST_KEY DOCKKIT_AUTHORIZED_KEYS

# sshd's privilege separation directory: /run is empty in an mmdebstrap image.
mkdir -p /run/sshd
chmod 755 /run/sshd
# Warm agents (dockkit.launch.warm): a run's agents are forked ready-imported from this
# server. Without it (it failed, or died later) they start as plain processes.
python -m dockkit.launch.warm </dev/null &
exec /usr/sbin/sshd -D -e "$@"
