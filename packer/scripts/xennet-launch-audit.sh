#!/bin/sh
# xennet-launch-audit.sh: launch an instance of a new AMI on a Xen instance type, audit it with
# xennet-compliance (xennet-audit-instance.sh), and terminate it, whatever happens.
#
# The after-build pattern (packer/after-build/): Packer's `shell-local` post-processor runs it
# once the AMI exists. The instance boots the image as users will, so what the audit sees is
# the image's own boot configuration, not the build's leftovers.
#
# Environment (a default in brackets):
#   XENNET_AMI_ID             the AMI; or, from Packer's manifest post-processor:
#   XENNET_MANIFEST, XENNET_RUN_UUID   the manifest file and the build's run (its artifact in
#                             XENNET_REGION); without XENNET_RUN_UUID, the manifest's last run
#   XENNET_REGION             the region
#   XENNET_INSTANCE_TYPE [t2.micro]   must be a Xen instance type (checked with the EC2 API)
#   XENNET_SUBNET_ID, XENNET_SECURITY_GROUP_ID   where to launch it; the group must let this
#                             machine reach port 22
#   XENNET_USER [ec2-user]    the image's login user
#   XENNET_ADDRESS [private]  private or public: the address this machine connects to
#   XENNET_TAG_AMI [yes]      tag the AMI xennet-compliance=passed|failed (no: leave it alone)
#   and xennet-audit-instance.sh's: XENNET_HOST_KEYS, XENNET_REPORTS_DIR, XENNET_AUDIT,
#   XENNET_AUDIT_ARGS, XENNET_CONSOLE_TIMEOUT.
#
# The login key is made here (ssh-keygen) and only its public half is imported into EC2, as a
# key pair of this run. The instance and the key pair are tagged/named after the run and
# removed on every exit, failure and interruption (INT, TERM, HUP) included; only SIGKILL can
# leave them behind (find them by the tag xennet-audit-run). Exit status: the audit's (0 pass),
# 64 for a bad setting, 69 when the instance cannot be launched or verified, 70 when it could
# not be terminated.
set -eu

fail() {
    status=$1
    shift
    echo "xennet-launch-audit: $*" >&2
    exit "$status"
}

region=${XENNET_REGION:-}
[ -n "$region" ] || fail 64 "XENNET_REGION is not set"
instance_type=${XENNET_INSTANCE_TYPE:-t2.micro}
user=${XENNET_USER:-ec2-user}
address=${XENNET_ADDRESS:-private}
case $address in
    private) address_query=PrivateIpAddress ;;
    public) address_query=PublicIpAddress ;;
    *) fail 64 "XENNET_ADDRESS must be private or public, not '$address'" ;;
esac
for name in XENNET_SUBNET_ID XENNET_SECURITY_GROUP_ID; do
    eval "value=\${$name:-}"
    [ -n "$value" ] || fail 64 "$name is not set"
done
here=$(dirname "$0")

# The AMI: given, or this run's artifact in this region from Packer's manifest
# ({"builds": [{"artifact_id": "us-east-1:ami-1,eu-west-1:ami-2", "packer_run_uuid": ...}], "last_run_uuid": ...}).
ami=${XENNET_AMI_ID:-}
if [ -z "$ami" ]; then
    [ -n "${XENNET_MANIFEST:-}" ] || fail 64 "neither XENNET_AMI_ID nor XENNET_MANIFEST is set"
    ami=$(python3 -c '
import json, sys
manifest, run, region = sys.argv[1:]
data = json.load(open(manifest))
run = run or data.get("last_run_uuid")
ids = [b["artifact_id"] for b in data.get("builds", []) if b.get("packer_run_uuid") == run]
amis = [a.split(":", 1)[1] for i in ids[-1:] for a in i.split(",") if a.split(":", 1)[0] == region]
print(amis[0] if amis else "")
' "$XENNET_MANIFEST" "${XENNET_RUN_UUID:-}" "$region") || fail 64 "cannot read the manifest $XENNET_MANIFEST"
    [ -n "$ami" ] || fail 64 "no AMI of run ${XENNET_RUN_UUID:-(last)} in $region in $XENNET_MANIFEST"
fi

# On Nitro every NIC is ena: the audit would find nothing in scope (and fail, with
# --xennet-require-applicable). Say so before paying for an instance.
hypervisor=$(aws ec2 describe-instance-types --region "$region" --instance-types "$instance_type" \
    --query 'InstanceTypes[0].Hypervisor' --output text) || fail 69 "cannot describe instance type $instance_type"
[ "$hypervisor" = xen ] || fail 64 "$instance_type runs on $hypervisor, not xen: choose a Xen instance type (t2, m3...)"

run=${XENNET_RUN_UUID:-$(date +%s)-$$}
keypair=xennet-audit-$run
work=$(mktemp -d)
launched=
imported=

# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
    status=$?
    trap - EXIT INT TERM HUP
    if [ -n "$launched" ]; then
        # By tag, not by id: an instance launched just before an interruption has no id here yet.
        ids=$(aws ec2 describe-instances --region "$region" \
            --filters "Name=tag:xennet-audit-run,Values=$run" \
            "Name=instance-state-name,Values=pending,running,stopping,stopped,shutting-down" \
            --query 'Reservations[].Instances[].InstanceId' --output text) || ids=unknown
        if [ "$ids" = unknown ]; then
            echo "xennet-launch-audit: cannot list the instances tagged xennet-audit-run=$run: terminate them by hand" >&2
            status=70
        elif [ -n "$ids" ] && [ "$ids" != None ]; then
            # shellcheck disable=SC2086 # one argument per instance id
            if aws ec2 terminate-instances --region "$region" --instance-ids $ids >/dev/null &&
                aws ec2 wait instance-terminated --region "$region" --instance-ids $ids; then
                echo "xennet-launch-audit: terminated $ids" >&2
            else
                echo "xennet-launch-audit: could not terminate $ids: terminate it by hand" >&2
                status=70
            fi
        fi
    fi
    if [ -n "$imported" ]; then
        aws ec2 delete-key-pair --region "$region" --key-name "$keypair" >/dev/null ||
            echo "xennet-launch-audit: could not delete the key pair $keypair" >&2
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

ssh-keygen -q -t ed25519 -N '' -C "$keypair" -f "$work/id"
imported=yes
aws ec2 import-key-pair --region "$region" --key-name "$keypair" \
    --public-key-material "fileb://$work/id.pub" >/dev/null || fail 69 "cannot import the key pair $keypair"
launched=yes
instance=$(aws ec2 run-instances --region "$region" --image-id "$ami" --instance-type "$instance_type" \
    --key-name "$keypair" --subnet-id "$XENNET_SUBNET_ID" --security-group-ids "$XENNET_SECURITY_GROUP_ID" \
    --count 1 --instance-initiated-shutdown-behavior terminate \
    --tag-specifications "ResourceType=instance,Tags=[{Key=Name,Value=xennet-audit-$ami},{Key=xennet-audit-run,Value=$run}]" \
    --query 'Instances[0].InstanceId' --output text) || fail 69 "cannot launch $ami on $instance_type"
echo "xennet-launch-audit: launched $instance ($instance_type) from $ami" >&2
aws ec2 wait instance-running --region "$region" --instance-ids "$instance" ||
    fail 69 "$instance did not reach running"
host=$(aws ec2 describe-instances --region "$region" --instance-ids "$instance" \
    --query "Reservations[0].Instances[0].$address_query" --output text) || fail 69 "cannot describe $instance"
case $host in
    '' | None) fail 69 "$instance has no $address address" ;;
esac

status=0
XENNET_HOST=$host XENNET_PORT=22 XENNET_USER=$user XENNET_IDENTITY_FILE=$work/id \
    XENNET_INSTANCE_ID=$instance XENNET_REGION=$region \
    sh "$here/xennet-audit-instance.sh" || status=$?
if [ "${XENNET_TAG_AMI:-yes}" = yes ]; then
    result=failed
    [ "$status" -eq 0 ] && result=passed
    aws ec2 create-tags --region "$region" --resources "$ami" --tags "Key=xennet-compliance,Value=$result" ||
        echo "xennet-launch-audit: could not tag $ami xennet-compliance=$result" >&2
fi
exit "$status"
