"""Install the Debian packages the lab (and the browser test) needs, when missing (root only; otherwise say what is missing).

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
    # NetworkManager hosts (HostPlan(networkmanager=True)): NM on a system bus of their own
    "NetworkManager": "network-manager",
    "nmcli": "network-manager",
    "nm-online": "network-manager",
    "dbus-daemon": "dbus",
    # Login shells (and a /bin/sh) the probe must work under: tests/test_transport_lab.py
    "zsh": "zsh",
    "fish": "fish",
    "tcsh": "tcsh",
    "csh": "csh",
    "ksh93": "ksh",
    "mksh": "mksh",
    "busybox": "busybox",
    "yash": "yash",
    "posh": "posh",
    # summary.html rendered as Jenkins serves it (its CSP): tests/test_summary_html_browser.py
    "chromium": "chromium",
    # The Packer examples (packer/): validated and formatted by Packer, their scripts checked: tests/test_packer.py
    "packer": "packer",
    "shellcheck": "shellcheck",
}
# Services these packages would start (or enable for the next boot) on this machine: the
# lab runs them only inside its namespaces.
SERVICES = {"network-manager": ("NetworkManager.service", "NetworkManager-wait-online.service")}
POLICY_RC_D = "/usr/sbin/policy-rc.d"
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
    # policy-rc.d exiting 101 forbids starting services (invoke-rc.d, deb-systemd-invoke).
    own_policy = not os.path.exists(POLICY_RC_D)
    if own_policy:
        with open(POLICY_RC_D, "w") as f:
            f.write("#!/bin/sh\n# xennet-compliance tests: start no service while installing lab packages\nexit 101\n")
        os.chmod(POLICY_RC_D, 0o755)
    try:
        subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], check=True, env=env)
    finally:
        if own_policy:
            os.unlink(POLICY_RC_D)
    units = [u for pkg in missing for u in SERVICES.get(pkg, ())]
    if units and os.path.isdir("/run/systemd/system"):  # the install enabled them for the next boot
        subprocess.run(["systemctl", "disable", "--quiet", *units], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
