# Pre-release AMI validation, in the build: the last provisioner audits the build instance
# over SSH with xennet-compliance, and a failing audit fails the build before any AMI exists.
#
#   packer init packer/in-build
#   packer build -var source_ami=ami-... packer/in-build
#
# Needs, on the machine running Packer: xennet-audit (e.g. a virtualenv's bin/xennet-audit, see
# var.xennet_audit), OpenSSH's ssh, the AWS CLI (the host key comes from the EC2 console), and
# ec2:GetConsoleOutput besides what Packer itself needs. See README.md, "Pre-release AMI
# validation".

variable "region" {
  type    = string
  default = "us-east-1"
}

variable "source_ami" {
  type        = string
  description = "The AMI the image is built from."
}

variable "ssh_username" {
  type    = string
  default = "ec2-user"
}

# The audit means something only on a Xen instance type: there the NIC can be xen-netfront.
# On Nitro every NIC is ena, and --xennet-require-applicable fails the build (nothing in scope).
# t2 and m3 always have xen-netfront NICs; c3, c4, d2, i2, m4 and r3 have them unless the AMI
# enables the Intel 82599 VF (sriovNetSupport = simple; then the NIC is ixgbevf).
# Xen types that require ENA (r4, i3, h1, g3, p2, p3, x1, m4.16xlarge) never show xen-netfront.
variable "instance_type" {
  type    = string
  default = "t2.micro"
  validation {
    condition     = length(split(".", var.instance_type)) == 2 && contains(["t2", "m3", "c3", "c4", "d2", "i2", "m4", "r3"], split(".", var.instance_type)[0]) && var.instance_type != "m4.16xlarge"
    error_message = "The instance_type must be a Xen type whose NIC can be xen-netfront (t2, m3; c3, c4, d2, i2, m4, r3 without SR-IOV): on Nitro every NIC is ena and the audit has nothing to judge."
  }
}

# How the audit verifies the build instance's host key (Packer's own SSH connection checks
# none): "console", strictly against the keys the instance printed on its EC2 console at first
# boot; or "accept-new", trust on first use into a known_hosts file of this run only.
variable "host_keys" {
  type    = string
  default = "console"
  validation {
    condition     = contains(["console", "accept-new"], var.host_keys)
    error_message = "The host_keys must be \"console\" or \"accept-new\"."
  }
}

variable "reports_dir" {
  type        = string
  default     = "reports/in-build"
  description = "Where the audit's reports go (relative to the directory Packer runs in): keep them as build artifacts."
}

variable "xennet_audit" {
  type        = string
  default     = "xennet-audit"
  description = "The audit command, e.g. /opt/xennet/bin/xennet-audit."
}

# More audit arguments, split on blanks, e.g. "--xennet-timeout=60". For a release gate add
# "--xennet-require-persistent --sudo": an image whose configuration turns SG off at boot then
# fails although SG is on now (--sudo: NetworkManager keyfiles are readable by root only).
variable "xennet_audit_args" {
  type    = string
  default = ""
}

source "amazon-ebs" "xen" {
  region        = var.region
  source_ami    = var.source_ami
  instance_type = var.instance_type
  ssh_username  = var.ssh_username
  ami_name      = "xennet-validated-{{timestamp}}"
  # A key pair of this build only; the audit logs in with it too (build.SSHPrivateKey). With
  # ssh_keypair_name and ssh_private_key_file instead, build.SSHPrivateKey is that file's key.
  temporary_key_pair_type = "ed25519"
}

build {
  sources = ["source.amazon-ebs.xen"]

  # ... the image's own provisioners go here, before the audit ...

  # The audit, last: it judges the state the AMI will be made from. environment_vars end up
  # on a command line and in PACKER_LOG's log, so they carry no secret; the private key goes
  # into a file of this run only (mode 0600), written by the shell from this script's own text
  # (a temporary file of Packer's, mode 0700), and removed on exit.
  provisioner "shell-local" {
    environment_vars = [
      "XENNET_HOST=${build.Host}",
      "XENNET_PORT=${build.Port}",
      "XENNET_USER=${build.User}",
      "XENNET_INSTANCE_ID=${build.ID}",
      "XENNET_REGION=${var.region}",
      "XENNET_HOST_KEYS=${var.host_keys}",
      "XENNET_REPORTS_DIR=${var.reports_dir}",
      "XENNET_AUDIT=${var.xennet_audit}",
      "XENNET_AUDIT_ARGS=${var.xennet_audit_args}",
    ]
    inline = [
      "umask 077",
      "key=$(mktemp)",
      "trap 'rm -f \"$key\"' EXIT",
      "trap 'exit 130' INT",
      "trap 'exit 143' TERM",
      "trap 'exit 129' HUP",
      "cat >\"$key\" <<'XENNET_PACKER_KEY'",
      "${build.SSHPrivateKey}",
      "XENNET_PACKER_KEY",
      "XENNET_IDENTITY_FILE=\"$key\" sh '${path.root}/../scripts/xennet-audit-instance.sh'",
    ]
  }
}
