"""A naive testinfra check, written as a typical user would (the benchmark's baseline (d)).

Copied into an empty directory and run there with plain testinfra:
``pytest --hosts=paramiko://root@HOST,... --ssh-identity-file=KEY test_naive.py``.
"""

import pytest

INTERFACES = ["eth0", "eth1"]


@pytest.mark.parametrize("iface", INTERFACES)
def test_scatter_gather_on_or_jumbo_mtu(host, iface):
    features = host.run("ethtool -k %s", iface)
    assert features.rc == 0, features.stderr
    mtu = int(host.file(f"/sys/class/net/{iface}/mtu").content_string)
    assert "scatter-gather: on" in features.stdout or mtu >= 9001
