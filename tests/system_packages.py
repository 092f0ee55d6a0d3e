"""Install the Debian packages the lab needs, when missing (root only; otherwise say what is missing).

Run by ``tox -e tests`` before the tests: ``python -m tests.system_packages``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

# command -> Debian package that provides it
NEEDED = {
    "ip": "iproute2",
    "ethtool": "ethtool",
    "sshd": "openssh-server",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "sudo": "sudo",  # lab users with and without sudo rights
}
SBIN = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def missing_packages() -> list[str]:
    return sorted({pkg for cmd, pkg in NEEDED.items() if shutil.which(cmd, path=SBIN) is None})


def main() -> int:
    missing = missing_packages()
    if not missing:
        return 0
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        print(f"lab packages missing: {' '.join(missing)}; lab tests will be skipped", file=sys.stderr)
        return 0
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], check=True, env=env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
