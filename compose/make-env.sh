#!/bin/sh
# Write the .env that docker-compose.yml reads, and the files to reach the nodes over SSH:
#   .env              IMAGE, WORKDIR, NODEn_PORT, NODEn_HOST_KEY, AUTHORIZED_KEYS (keys in base64)
#   keys/id_ed25519   the client key (and .pub), allowed to log in as root on every node
#   keys/known_hosts  every node's host key, pinned for 127.0.0.1:<its port>
#   keys/ssh_config   Host node0..node2 -> 127.0.0.1:<port>, strict host key checking
# Usage: ./make-env.sh IMAGE [WORKDIR [FIRST_PORT]]
#   IMAGE       the worker image's tag, as `dockkit image build` prints it
#   WORKDIR     the project directory, mounted read-only at the same path in every node
#               (workers need the script at the path it has here); default: compose/..
#   FIRST_PORT  node0's sshd on 127.0.0.1 (node1, node2 take the next ones); default 2220
# Run again to start over with new keys (then recreate the nodes: docker-compose up -d).
set -eu
image=${1:?usage: $0 IMAGE [WORKDIR [FIRST_PORT]]}
workdir=$(cd "${2:-$(dirname "$0")/..}" && pwd)
first_port=${3:-2220}
cd "$(dirname "$0")"
umask 077
rm -rf keys
mkdir keys
ssh-keygen -q -t ed25519 -N '' -C dockkit-compose-client -f keys/id_ed25519
: > keys/known_hosts
: > keys/ssh_config
{
    echo "IMAGE=$image"
    echo "WORKDIR=$workdir"
    echo "AUTHORIZED_KEYS=$(base64 < keys/id_ed25519.pub | tr -d "\n")"
} > .env
for n in 0 1 2; do
    port=$((first_port + n))
    ssh-keygen -q -t ed25519 -N '' -C "dockkit-compose-node$n" -f "keys/node$n"
    {
        echo "NODE${n}_PORT=$port"
        echo "NODE${n}_HOST_KEY=$(base64 < "keys/node$n" | tr -d "\n")"
    } >> .env
    echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 < "keys/node$n.pub")" >> keys/known_hosts
    cat >> keys/ssh_config <<CONFIG
Host node$n
    HostName 127.0.0.1
    Port $port
    User root
    IdentityFile $PWD/keys/id_ed25519
    IdentitiesOnly yes
    UserKnownHostsFile $PWD/keys/known_hosts
    StrictHostKeyChecking yes

CONFIG
done
rm -f keys/node0 keys/node1 keys/node2  # the private host keys live in .env only
echo "wrote $PWD/.env and $PWD/keys/ (ssh_config, known_hosts, id_ed25519)"
