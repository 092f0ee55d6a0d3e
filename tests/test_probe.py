"""The probe's parsers, on real captured output and on hostile or broken variants."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from compliance.probe import (
    END,
    ETHTOOL_END,
    PROBE_COMMAND,
    PROBE_SCRIPT,
    PROTOCOL,
    HostFacts,
    ProbeError,
    parse_ethtool_features,
    parse_probe,
)

DATA = Path(__file__).parent / "data"


def ethtool_text(name: str) -> str:
    return (DATA / "ethtool" / name).read_text()


@pytest.mark.parametrize(
    ("fixture", "iface", "expected"),
    [
        ("veth-sg-on.txt", "v0", (True, False)),
        ("veth-sg-off.txt", "v0", (False, False)),
        ("lo-sg-fixed.txt", "lo", (True, True)),
        ("virtio-net-eth0.txt", "eth0", (True, False)),
        ("old-offload-parameters.txt", "eth0", (False, False)),  # reconstructed
        ("xen-sg-refused.txt", "eth0", (False, False)),  # reconstructed: [requested on]
    ],
)
def test_ethtool_features_from_captured_output(fixture, iface, expected):
    assert parse_ethtool_features(ethtool_text(fixture), iface) == expected


def test_ethtool_error_text_is_not_a_state():
    with pytest.raises(ProbeError, match="unexpected ethtool -k output: netlink error"):
        parse_ethtool_features(ethtool_text("nodev.txt"), "nosuch")


def test_ethtool_refusal_text_is_not_a_state():
    with pytest.raises(ProbeError):
        parse_ethtool_features(ethtool_text("lo-sg-off-refused.txt"), "lo")


def test_ethtool_output_for_another_interface_is_rejected():
    with pytest.raises(ProbeError, match="answered for v0, not eth0"):
        parse_ethtool_features(ethtool_text("veth-sg-on.txt"), "eth0")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "no ethtool -k output"),
        ("Features for eth0:\nrx-checksumming: on\n", "no single scatter-gather line"),
        ("Features for eth0:\nscatter-gather: on\nscatter-gather: off\n", "no single scatter-gather line"),
        ("Features for eth0:\nscatter-gather: on\n\ttx-scatter-gather: on\n\ttx-scatter-gather: on\n", "no single"),
        ("Features for eth0:\nscatter-gather: maybe\n", "unexpected ethtool -k line"),
        (
            "Features for eth0:\nscatter-gather: on\n\x00\xff\x1b[2J\n",
            r"unexpected ethtool -k line: \\x00\\xff\\x1b\[2J",
        ),
        ("Features for eth0:\nscatter-gather: on [fixed] extra\n", "unexpected ethtool -k line"),
    ],
)
def test_ethtool_output_in_doubt_fails_closed(text, match):
    with pytest.raises(ProbeError, match=match):
        parse_ethtool_features(text, "eth0")


def test_truncated_ethtool_output_fails_closed():
    # Cut just before the scatter-gather line of real output.
    text = ethtool_text("veth-sg-off.txt")
    with pytest.raises(ProbeError, match="no single scatter-gather line"):
        parse_ethtool_features(text[: text.index("scatter-gather: off")], "v0")


def test_error_excerpts_are_bounded():
    with pytest.raises(ProbeError) as info:
        parse_ethtool_features("Features for eth0:\n" + "x" * 5000 + "\n", "eth0")
    assert len(str(info.value)) < 300


# ---- the whole probe output -------------------------------------------------------


def probe_output(*iface_blocks: str, ethtool: str = "/usr/sbin/ethtool", end: bool = True) -> bytes:
    """A probe output (protocol 3, without its boot section) as the host sends it: bytes."""
    head = [
        PROTOCOL.decode(),
        "kernel\t4.14.355-1.el7.x86_64",
        "hypervisor\txen",
        "sys_vendor\tXen",
        "board_asset_tag\t",
        f"ethtool\t{ethtool}",
    ]
    text = "\n".join(head + list(iface_blocks) + ([END.decode()] if end else [])) + "\n"
    return text.encode("utf-8", "surrogateescape")


def xen_iface(name="eth0", mtu="1500", rc="0", ethtool_lines=None, driver="xen_netfront"):
    lines = (
        ethtool_lines
        if ethtool_lines is not None
        else [f"Features for {name}:", "scatter-gather: off", "\ttx-scatter-gather: off"]
    )
    return "\n".join(
        [f"iface\t{name}", "virtual\t0", f"driver\t{driver}", f"mtu\t{mtu}", f"ethtool_rc\t{rc}", "ethtool_begin\t"]
        + lines
        + [ETHTOOL_END.decode()]
    )


def test_captured_probe_output_parses():
    # Captured with protocol 2; protocol 3 only added keys (the boot configuration among them).
    facts = parse_probe((DATA / "probe-local-virtio.txt").read_bytes().replace(b"XENNET-PROBE 2", PROTOCOL, 1))
    assert facts.kernel == "6.18.44-fc-v669"
    assert facts.hypervisor is None and facts.ethtool == "/usr/sbin/ethtool"
    assert [(i.name, i.driver, i.virtual, i.mtu, i.scatter_gather) for i in facts.interfaces] == [
        ("eth0", "virtio_net", False, 1400, True),
        ("ifb0", None, True, 1500, True),
        ("ifb1", None, True, 1500, True),
    ]


def test_xen_guest_probe_output_parses():  # reconstructed: a Xen guest per the driver source
    facts = parse_probe(probe_output(xen_iface("eth0"), xen_iface("eth1", mtu="9001")))
    assert (facts.hypervisor, facts.sys_vendor, facts.board_asset_tag) == ("xen", "Xen", None)
    assert [(i.name, i.mtu, i.scatter_gather, i.problem) for i in facts.interfaces] == [
        ("eth0", 1500, False, None),
        ("eth1", 9001, False, None),
    ]


def test_facts_round_trip_through_dict():
    facts = parse_probe(probe_output(xen_iface("eth0")))
    assert HostFacts.from_dict(facts.to_dict()) == facts


@pytest.mark.parametrize("name", ["$(reboot)", "`id`", "a;b", "a|b", "a'b", "<b>x<b>"])
def test_hostile_names_survive_intact(name):
    facts = parse_probe(probe_output(xen_iface(name)))
    assert facts.interfaces[0].name == name and facts.interfaces[0].problem is None


@pytest.mark.parametrize(
    ("output", "match"),
    [
        (b"", "no probe output"),
        (b"sudo: a password is required\n", "no probe output"),
        (probe_output(xen_iface(), end=False), "truncated"),
        (probe_output(xen_iface(), ethtool=""), "ethtool not found"),
        (probe_output(xen_iface(), "surprise\tvalue"), "unexpected probe line"),
        (probe_output(xen_iface(), "no tab here"), "unexpected probe line"),
        (probe_output(xen_iface(), xen_iface()), "lists an interface twice"),
        (probe_output(xen_iface()).replace(b"kernel\t", b"kernal\t"), "unexpected probe line"),
        (probe_output(xen_iface().removesuffix("\nXENNET-ETHTOOL-END")), "not closed"),
        (
            probe_output(xen_iface(), xen_iface("eth1").replace("ethtool_begin", "ethtool_begun")),
            "unexpected probe line",
        ),
        (probe_output(xen_iface() + "\nmtu\t1500"), "unexpected probe line"),
    ],
)
def test_probe_output_in_doubt_fails_closed(output, match):
    with pytest.raises(ProbeError, match=match):
        parse_probe(output)


def test_non_directory_entry_is_a_problem_not_an_interface():
    facts = parse_probe(probe_output("iface\tbonding_masters\nkind\tnotdir"))
    assert facts.interfaces[0].problem == "/sys/class/net/bonding_masters is not an interface directory"


def test_vanished_interface_is_a_problem():
    block = xen_iface(
        mtu="cat: /sys/class/net/eth9/mtu: No such file or directory",
        rc="1",
        ethtool_lines=["netlink error: no device matches name (offset 24)"],
    )
    (iface,) = parse_probe(probe_output(block)).interfaces
    assert iface.mtu is None and iface.scatter_gather is None
    assert iface.problem == "cannot read MTU of eth0: cat: /sys/class/net/eth9/mtu: No such file or directory"


def test_ethtool_failure_keeps_its_text():
    (iface,) = parse_probe(probe_output(xen_iface(rc="1", ethtool_lines=["netlink error: No such device"]))).interfaces
    assert iface.problem == "ethtool -k failed (exit 1): netlink error: No such device"


def test_binary_junk_in_ethtool_output_is_a_problem_with_an_escaped_excerpt():
    block = xen_iface(ethtool_lines=["Features for eth0:", "scatter-gather: on", "\x7f\x1b]0;pwned\x07"])
    (iface,) = parse_probe(probe_output(block)).interfaces
    assert iface.scatter_gather is None
    assert "\\x1b]0;pwned\\x07" in iface.problem and "\x1b" not in iface.problem


@pytest.mark.skipif(
    shutil.which("ethtool") is None and not Path("/usr/sbin/ethtool").exists(),
    reason="ethtool is not installed on this machine",
)
def test_probe_script_runs_on_this_machine():
    """The real script, under the real /bin/sh, lists exactly what the kernel lists."""
    out = subprocess.run(PROBE_COMMAND, shell=True, input=PROBE_SCRIPT.encode(), capture_output=True, check=True)
    facts = parse_probe(out.stdout)
    expected = sorted(p.name for p in Path("/sys/class/net").iterdir() if p.name != "lo")
    assert [i.name for i in facts.interfaces] == expected
    for iface in facts.interfaces:
        assert iface.problem is None, iface
        assert iface.mtu == int((Path("/sys/class/net") / iface.name / "mtu").read_text())


def test_unreadable_mtu_is_a_problem():
    (iface,) = parse_probe(probe_output(xen_iface(mtu=""))).interfaces
    assert iface.mtu is None and iface.problem == "cannot read MTU of eth0 (it may have vanished)"


# ---- names that hold any byte: the line protocol is split on \n alone ------------------------


@pytest.mark.parametrize("name", ["a\x1cb", "a\x1db", "a\x1eb", "a\x85b", "a\u2028b", "a\u2029b", "e\u0301th0"])
def test_names_that_python_would_split_lines_at_survive(name):
    # str.splitlines breaks at \x1c-\x1e, \x85, U+2028/2029: the probe's protocol never does.
    facts = parse_probe(probe_output(xen_iface(name), xen_iface("eth0")))
    assert {i.name: (i.problem, i.scatter_gather) for i in facts.interfaces} == {
        name: (None, False),
        "eth0": (None, False),
    }


def test_a_name_that_is_not_utf8_is_its_own_error_row_and_the_others_are_judged():
    bad = "eth\udcff"  # the byte 0xff, as the kernel allows
    facts = parse_probe(probe_output(xen_iface(bad), xen_iface("eth0")))
    rows = {i.name: i for i in facts.interfaces}
    assert set(rows) == {"eth\\xff", "eth0"}  # the bytes, shown escaped
    assert rows["eth\\xff"].problem == "interface name is not UTF-8 (its bytes are shown escaped)"
    assert rows["eth0"].problem is None and rows["eth0"].scatter_gather is False


def test_any_byte_elsewhere_in_the_output_is_decoded_here_never_an_exception():
    block = xen_iface(driver="drv\udcfe", ethtool_lines=["Features for eth0:", "scatter-gather: on", "caf\udce9: on"])
    (iface,) = parse_probe(probe_output(block)).interfaces
    assert iface.driver == "drv\\xfe"
    assert iface.scatter_gather is None and "\\udce9" in iface.problem


def test_a_failed_ethtool_is_no_reading_even_when_its_output_parses():
    block = xen_iface(rc="1", ethtool_lines=["Features for eth0:", "scatter-gather: on", "\ttx-scatter-gather: on"])
    (iface,) = parse_probe(probe_output(block)).interfaces
    assert iface.scatter_gather is None and iface.problem.startswith("ethtool -k failed (exit 1): Features for eth0:")
