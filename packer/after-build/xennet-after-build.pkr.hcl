# Pre-release AMI validation, after the build: once the AMI exists, a post-processor launches
# an instance of it on a Xen instance type, audits it over SSH with xennet-compliance, and
# terminates it (always: failure and interruption included). A failing audit fails
# `packer build` and tags the AMI xennet-compliance=failed (passed otherwise): release only
# AMIs tagged passed.
#
#   packer init packer/after-build
#   packer build -var source_ami=ami-... -var audit_subnet_id=subnet-... \
#       -var audit_security_group_id=sg-... packer/after-build
#
# Needs, on the machine running Packer: xennet-audit, OpenSSH (ssh, ssh-keygen), python3, the
# AWS CLI, and the EC2 permissions DescribeInstanceTypes, ImportKeyPair, DeleteKeyPair,
# RunInstances, CreateTags, DescribeInstances, GetConsoleOutput, TerminateInstances. See
# README.md, "Pre-release AMI validation".

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

# The builder may be any type (the audit does not run on it)...
variable "instance_type" {
  type    = string
  default = "t3.micro"
}

# ... the audited instance must be Xen: on Nitro every NIC is ena, and the audit (with
# --xennet-require-applicable) fails for having nothing in scope. t2 and m3 always have
# xen-netfront NICs; c3, c4, d2, i2, m4 and r3 only when the AMI does not enable the Intel
# 82599 VF (sriovNetSupport). The launch script also asks EC2 for the type's hypervisor.
variable "audit_instance_type" {
  type    = string
  default = "t2.micro"
  validation {
    condition     = length(split(".", var.audit_instance_type)) == 2 && contains(["t2", "m3", "c3", "c4", "d2", "i2", "m4", "r3"], split(".", var.audit_instance_type)[0]) && var.audit_instance_type != "m4.16xlarge"
    error_message = "The audit_instance_type must be a Xen type whose NIC can be xen-netfront (t2, m3; c3, c4, d2, i2, m4, r3 without SR-IOV): on Nitro every NIC is ena and the audit has nothing to judge."
  }
}

variable "audit_subnet_id" {
  type        = string
  description = "The subnet the audited instance is launched in."
}

variable "audit_security_group_id" {
  type        = string
  description = "A security group that lets the machine running Packer reach the instance's port 22."
}

variable "audit_address" {
  type        = string
  default     = "private"
  description = "private or public: the instance address the audit connects to."
}

# "console": the instance's host key is checked strictly against the keys it printed on its
# EC2 console at first boot; "accept-new": trust on first use, into a known_hosts of this run.
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
  default     = "reports/after-build"
  description = "Where the audit's reports go (relative to the directory Packer runs in): keep them as build artifacts."
}

variable "manifest" {
  type    = string
  default = "packer-manifest.json"
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

source "amazon-ebs" "image" {
  region                  = var.region
  source_ami              = var.source_ami
  instance_type           = var.instance_type
  ssh_username            = var.ssh_username
  ami_name                = "xennet-candidate-{{timestamp}}"
  temporary_key_pair_type = "ed25519"
}

build {
  sources = ["source.amazon-ebs.image"]

  # ... the image's own provisioners go here ...

  post-processors {
    # The AMI's id, for the next post-processor: Packer gives post-processors no variable for it.
    post-processor "manifest" {
      output = var.manifest
    }
    post-processor "shell-local" {
      environment_vars = [
        "XENNET_MANIFEST=${var.manifest}",
        "XENNET_RUN_UUID=${build.PackerRunUUID}",
        "XENNET_REGION=${var.region}",
        "XENNET_INSTANCE_TYPE=${var.audit_instance_type}",
        "XENNET_SUBNET_ID=${var.audit_subnet_id}",
        "XENNET_SECURITY_GROUP_ID=${var.audit_security_group_id}",
        "XENNET_USER=${var.ssh_username}",
        "XENNET_ADDRESS=${var.audit_address}",
        "XENNET_HOST_KEYS=${var.host_keys}",
        "XENNET_REPORTS_DIR=${var.reports_dir}",
        "XENNET_AUDIT=${var.xennet_audit}",
        "XENNET_AUDIT_ARGS=${var.xennet_audit_args}",
      ]
      # exec: an interruption (INT, TERM, HUP) reaches the script, which then terminates the instance.
      inline = ["exec sh '${path.root}/../scripts/xennet-launch-audit.sh'"]
    }
  }
}
