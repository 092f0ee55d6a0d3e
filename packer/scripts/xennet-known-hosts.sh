#!/bin/sh
# xennet-known-hosts.sh HOST PORT < CONSOLE_OUTPUT > KNOWN_HOSTS
#
# The SSH host keys an EC2 instance printed on its console at first boot, as known_hosts
# lines for HOST (and PORT, when not 22). cloud-init prints them between
#   -----BEGIN SSH HOST KEY KEYS-----
#   -----END SSH HOST KEY KEYS-----
# (tests/data/console/ holds a real console output). The console output comes from the EC2 API
# (`aws ec2 get-console-output`): authenticated and over TLS, so a man in the middle of the
# SSH connection cannot answer it, as it can answer the first connection to a new host.
#
# Only whole lines inside a complete block count, each `TYPE BASE64 [COMMENT]` with a known key
# type; the last complete block wins (a reboot prints it again). No such block: exit 1, nothing
# printed.
set -eu
if [ $# -ne 2 ]; then
    echo "usage: $0 HOST PORT < console-output > known_hosts" >&2
    exit 2
fi
case $2 in
    22) name=$1 ;;
    *) name="[$1]:$2" ;;
esac
tr -d '\r' | awk -v name="$name" '
    { sub(/[ \t]+$/, "") }
    $0 == "-----BEGIN SSH HOST KEY KEYS-----" { inside = 1; n = 0; block = ""; next }
    $0 == "-----END SSH HOST KEY KEYS-----" { if (inside && n) last = block; inside = 0; next }
    inside && $1 ~ /^(ssh-ed25519|ecdsa-sha2-nistp256|ecdsa-sha2-nistp384|ecdsa-sha2-nistp521|ssh-rsa)$/ && $2 ~ /^[A-Za-z0-9+\/]+=*$/ {
        block = block name " " $1 " " $2 "\n"; n++
    }
    END { if (last == "") exit 1; printf "%s", last }
'
