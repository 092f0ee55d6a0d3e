#!/bin/sh
# xennet-audit-instance.sh: audit one EC2 instance over SSH with xennet-compliance.
#
# Both Packer patterns end here: the in-build `shell-local` provisioner (the build instance,
# packer/in-build/) and the after-build launch script (an instance of the new AMI,
# packer/after-build/). Its exit status gates the build: 0 only when the audit passes.
#
# Environment (a default in brackets):
#   XENNET_HOST, XENNET_PORT [22], XENNET_USER   where, and as whom, to log in
#   XENNET_IDENTITY_FILE      the private key (the caller's file, mode 0600; never printed)
#   XENNET_INSTANCE_ID, XENNET_REGION   the instance, for its host keys on the EC2 console
#   XENNET_HOST_KEYS [console]   how the host key is verified:
#       console     strict: against the keys the instance printed on its EC2 console at first
#                   boot (cloud-init), fetched with `aws ec2 get-console-output`; no keys there
#                   within XENNET_CONSOLE_TIMEOUT seconds [600] is a failure, never a pass;
#       accept-new  trust on first use: the first key offered is recorded in a known_hosts
#                   file of this run only, and is what the audit trusts (as Packer's own SSH
#                   connection trusts any key). See README, "Pre-release AMI validation".
#   XENNET_REPORTS_DIR [reports]   where the audit writes its reports (and the known_hosts it
#                   used, for the record: which host key was trusted)
#   XENNET_AUDIT [xennet-audit]    the audit command (e.g. a virtualenv's bin/xennet-audit)
#   XENNET_AUDIT_ARGS []           more audit arguments, split on blanks
#
# Exit status: the audit's (0 pass; 1 a susceptible interface, no interface in scope, or a host
# error; 2 interrupted; 4 a usage error), 64 for a missing or bad setting here, 69 when the host
# keys could not be had from the console.
set -eu

fail() {
    status=$1
    shift
    echo "xennet-audit-instance: $*" >&2
    exit "$status"
}

for name in XENNET_HOST XENNET_USER XENNET_IDENTITY_FILE; do
    eval "value=\${$name:-}"
    [ -n "$value" ] || fail 64 "$name is not set"
done
port=${XENNET_PORT:-22}
host_keys=${XENNET_HOST_KEYS:-console}
reports=${XENNET_REPORTS_DIR:-reports}
audit=${XENNET_AUDIT:-xennet-audit}
here=$(dirname "$0")

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
known=$work/known_hosts

case $host_keys in
    console)
        policy=strict
        [ -n "${XENNET_INSTANCE_ID:-}" ] || fail 64 "XENNET_INSTANCE_ID is not set (needed for XENNET_HOST_KEYS=console)"
        [ -n "${XENNET_REGION:-}" ] || fail 64 "XENNET_REGION is not set (needed for XENNET_HOST_KEYS=console)"
        timeout=${XENNET_CONSOLE_TIMEOUT:-600}
        deadline=$(($(date +%s) + timeout))
        # The console output is posted some time after boot: wait for a complete key block.
        until aws ec2 get-console-output --region "$XENNET_REGION" --instance-id "$XENNET_INSTANCE_ID" \
            --output text --query Output >"$work/console" 2>"$work/aws.err" &&
            sh "$here/xennet-known-hosts.sh" "$XENNET_HOST" "$port" <"$work/console" >"$known"; do
            if [ "$(date +%s)" -ge "$deadline" ]; then
                [ -s "$work/aws.err" ] && tail -n 1 "$work/aws.err" >&2
                fail 69 "no SSH host keys on the EC2 console of $XENNET_INSTANCE_ID after ${timeout}s" \
                    "(cloud-init prints them at first boot): not auditing a host whose key cannot be verified;" \
                    "XENNET_HOST_KEYS=accept-new trusts the first key offered instead"
            fi
            sleep 10
        done
        ;;
    accept-new)
        policy=accept-new
        : >"$known"
        ;;
    *)
        fail 64 "XENNET_HOST_KEYS must be console or accept-new, not '$host_keys'"
        ;;
esac

mkdir -p "$reports"
status=0
# The suite's arguments for a freshly built instance. IdentitiesOnly: an ssh-agent's keys (a CI
# agent's) are not offered before the instance's own key. XENNET_AUDIT_ARGS may add
# --xennet-require-persistent --sudo: an image whose configuration turns SG off at boot then
# fails although SG is on now.
# shellcheck disable=SC2086 # XENNET_AUDIT_ARGS is split on blanks on purpose
"$audit" \
    "--hosts=ssh://$XENNET_USER@$XENNET_HOST:$port" \
    "--ssh-identity-file=$XENNET_IDENTITY_FILE" \
    "--ssh-extra-args=-o IdentitiesOnly=yes" \
    "--ssh-known-hosts=$known" \
    "--ssh-host-key-policy=$policy" \
    --xennet-require-applicable \
    "--reports-dir=$reports" \
    ${XENNET_AUDIT_ARGS:-} || status=$?
cp "$known" "$reports/known_hosts" || true
exit "$status"
