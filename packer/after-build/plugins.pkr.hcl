# Packer 1.7 or later, with the Amazon plugin: `packer init packer/after-build` installs it.
packer {
  required_version = ">= 1.7.0"
  required_plugins {
    amazon = {
      source  = "github.com/hashicorp/amazon"
      version = ">= 1.2.0"
    }
  }
}
