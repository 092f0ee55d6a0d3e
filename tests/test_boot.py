"""The boot configuration readers, on real files from the wild (tests/data/boot, sources in
tests/data/README.md), shipped through the probe's own awk program as a host ships them."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import pytest

from compliance import boot, boot_link, boot_netcfg
from compliance.boot import BootFiles, ConfFile, Device, Level, Outcome, Setting
from compliance.probe import excerpt

DATA = Path(__file__).parent / "data" / "boot"
AWK = shutil.which("awk")
UDEV_ETC, UDEV_LIB, UDEV_RUN = "/etc/udev/rules.d", "/usr/lib/udev/rules.d", "/run/udev/rules.d"
NM_ETC = "/etc/NetworkManager/system-connections"
IFCFG = "/etc/sysconfig/network-scripts"
LINK_ETC, LINK_LIB = "/etc/systemd/network", "/usr/lib/systemd/network"

# Devices as the probe reads them: a xen-netfront NIC (its device vif-0 is bound to the vif
# driver on the xen bus), an ENA NIC behind PCI, and a veth (no device at all).
XEN = (Level("vif-0", "xen", "vif"),)
ENA = (Level("0000:00:05.0", "pci", "ena"), Level("pci0000:00", "", ""))


def xen(name: str = "eth0", **changes) -> Device:
    values = {"address": "0a:1b:2c:3d:4e:5f", "type": "1", "renamed": False, "parents": XEN, **changes}
    return Device(name, **values)


def ship(tmp_path: Path, *files: tuple[str, str, str], extra: tuple[str, ...] = ()) -> BootFiles:
    """(kind, sample, path on the host) through the probe's awk, as the host would ship them."""
    if AWK is None:
        pytest.skip("no awk on this machine")
    args, where = [], {}
    for i, (kind, sample, host_path) in enumerate(files):
        local = tmp_path / f"f{i}" / host_path.rsplit("/", 1)[-1]
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes((DATA / sample).read_bytes() if sample else b"")
        args += [kind, str(local)]
        where[str(local)] = host_path
    out = subprocess.run(
        [AWK, "-v", f"CAP={boot.OUTPUT_CAP}", boot.AWK_PROGRAM, *args, *extra], capture_output=True, check=True
    )
    found = boot.parse_section(out.stdout.decode().split("\n")[:-1], excerpt)
    return dataclasses.replace(
        found, files=tuple(dataclasses.replace(f, path=where.get(f.path, f.path)) for f in found.files)
    )


def described(files: BootFiles, device: Device) -> str:
    return boot.evaluate(files, device).describe()


# --------------------------------------------------------------------------- udev


@pytest.mark.parametrize(
    ("sample", "device", "expected"),
    [
        # The suite's own rule (compliance/persist.py): DRIVERS=="vif" is the parent's driver.
        ("70-xennet-compliance-sg.rules", xen(), f"on ({UDEV_ETC}/70-xennet-compliance-sg.rules:2)"),
        ("70-xennet-compliance-sg.rules", Device("ens5", type="1", renamed=False, parents=ENA), "default"),
        ("70-xennet-compliance-sg.rules", Device("veth1", type="1", renamed=False, virtual=True), "default"),
        # KERNEL=="veth*" / "sbr0", sg off among other features, %k for the device.
        ("99-veth-offload.rules", Device("veth7", renamed=False), f"off ({UDEV_ETC}/99-veth-offload.rules:2)"),
        ("99-veth-offload.rules", Device("sbr0", renamed=False), f"off ({UDEV_ETC}/99-veth-offload.rules:3)"),
        ("99-veth-offload.rules", xen(), "default"),
        # A renamed interface: KERNEL== saw another name at boot, which the suite cannot know.
        (
            "99-veth-offload.rules",
            Device("veth7", renamed=True),
            f"undetermined: cannot tell whether udev rule {UDEV_ETC}/99-veth-offload.rules:2 (KERNEL) applies to veth7",
        ),
        # A rule continued over lines with "\", the device named literally, SG on.
        ("99-net-offload.rules", xen(), f"on ({UDEV_ETC}/99-net-offload.rules:1)"),
        ("99-net-offload.rules", xen("eth1"), "default"),
        # ethtool -K without SG (tso/gro/gso, checksums, GRO) and -G/-C: nothing to do with SG.
        (
            "70-e1000e-fix.rules",
            Device("eno1", renamed=False, parents=(Level("0000:00:1f.6", "pci", "e1000e"),)),
            "default",
        ),
        ("99-r8169-fix.rules", Device("nic0", renamed=False), "default"),
        ("99-ethtool.rules", Device("eno12409v2", renamed=False), "default"),
        ("70-nanopi-m6-network.rules", xen(), "default"),
        # NetworkManager's own rule: ethtool -i in PROGRAM=, GOTOs on keys the suite cannot check.
        ("84-nm-drivers.rules", xen(), "default"),
    ],
)
def test_udev_rules_from_the_wild(tmp_path, sample, device, expected):
    files = ship(tmp_path, ("udev", f"udev/{sample}", f"{UDEV_ETC}/{sample}"))
    assert described(files, device) == expected


def test_udev_files_that_name_ethtool_only_in_comments_are_not_shipped(tmp_path):
    files = ship(
        tmp_path,
        ("udev", "udev/85-nm-unmanaged.rules", f"{UDEV_LIB}/85-nm-unmanaged.rules"),
        ("udev", "udev/84-nm-drivers.rules", f"{UDEV_LIB}/84-nm-drivers.rules"),
    )
    assert [f.name for f in files.files] == ["84-nm-drivers.rules"]
    assert files.touches_sg is False  # nothing names SG: every interface is "default" at once
    assert all(not text.lstrip().startswith("#") for _, text in files.files[0].lines)


def test_later_udev_files_win_and_etc_masks_usr_lib(tmp_path):
    # 70 turns SG on for vif, 99 (lexically later) turns it off for sbr0: the later one runs last.
    on_then_off = ship(
        tmp_path,
        ("udev", "udev/99-veth-offload.rules", f"{UDEV_LIB}/99-veth-offload.rules"),
        ("udev", "udev/70-xennet-compliance-sg.rules", f"{UDEV_ETC}/70-xennet-compliance-sg.rules"),
    )
    assert described(on_then_off, xen("sbr0")) == f"off ({UDEV_LIB}/99-veth-offload.rules:3)"
    # An empty file of the same name in /etc masks the one in /usr/lib (udev(7)).
    masked = ship(
        tmp_path,
        ("udev", "udev/99-veth-offload.rules", f"{UDEV_LIB}/99-veth-offload.rules"),
        ("udev", "", f"{UDEV_ETC}/99-veth-offload.rules"),
    )
    assert described(masked, xen("sbr0")) == "default"


def rules(text: str, path: str = f"{UDEV_ETC}/50-test.rules") -> ConfFile:
    return ConfFile("udev", path, tuple((n, line) for n, line in enumerate(text.splitlines(), 1) if line))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # RUN= empties the list: the earlier SG program never runs.
        (
            'DRIVERS=="vif", RUN+="/sbin/ethtool -K $name sg off"\nSUBSYSTEM=="net", RUN="/bin/true"',
            "default",
        ),
        # RUN:= is final: a later rule cannot add to the list.
        (
            'DRIVERS=="vif", RUN:="/sbin/ethtool -K $name sg on"\nKERNEL=="eth0", RUN+="/sbin/ethtool -K %k sg off"',
            "on (/etc/udev/rules.d/50-test.rules:1)",
        ),
        # GOTO skips to its LABEL in the same file.
        (
            'SUBSYSTEM=="net", GOTO="end"\nRUN+="/sbin/ethtool -K $name sg off"\nLABEL="end"',
            "default",
        ),
        # Through a shell, with the device as $1: the suite cannot tell which interface that is.
        (
            'DRIVERS=="vif", RUN+="/bin/sh -c \'/sbin/ethtool -K $1 sg off\' -- $name"',
            "undetermined: /etc/udev/rules.d/50-test.rules:1: cannot tell which interface '$1' is in: "
            "/sbin/ethtool -K '$1' sg off",
        ),
        # A key the suite cannot check, on a rule that decides: both ways are followed, and differ.
        (
            'ATTRS{vendor}=="0x8086", RUN+="/sbin/ethtool -K $name sg off"',
            "undetermined: cannot tell whether udev rule /etc/udev/rules.d/50-test.rules:1 (ATTRS{vendor}) applies to eth0",
        ),
        # ... and on a rule that cannot matter, it does not matter.
        ('ATTRS{vendor}=="0x8086", RUN+="/sbin/ethtool -G $name rx 512"', "default"),
        # ATTR{address} is read by the probe; ACTION is add at boot, never change.
        (
            'ATTR{address}=="0a:1b:2c:3d:4e:5f", RUN+="/sbin/ethtool -K $name sg off"',
            "off (/etc/udev/rules.d/50-test.rules:1)",
        ),
        ('ACTION=="change", RUN+="/sbin/ethtool -K $name sg off"', "default"),
        # A later word wins within one ethtool command; tx-scatter-gather is SG's kernel name.
        (
            'DRIVERS=="vif", RUN+="/sbin/ethtool --offload $name sg off tx-scatter-gather on"',
            "on (/etc/udev/rules.d/50-test.rules:1)",
        ),
    ],
)
def test_udev_semantics(text, expected):
    assert described(BootFiles((rules(text),)), xen()) == expected


# --------------------------------------------------------------------------- systemd .link


def test_link_files_from_systemd_match_but_set_nothing(tmp_path):
    files = ship(
        tmp_path,
        ("link", "link/99-default.link", f"{LINK_LIB}/99-default.link"),
        ("link", "link/73-usb-net-by-mac.link", f"{LINK_LIB}/73-usb-net-by-mac.link"),
        ("link", "link/test99.link", f"{LINK_ETC}/test99.link"),
    )
    assert described(files, xen()) == "default"
    assert [f.name for f in files.files] == ["99-default.link", "73-usb-net-by-mac.link", "test99.link"]


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        (260, f"off ({LINK_ETC}/10-xen-sg-off.link:6)"),
        (252, "default"),  # before v260 udevd ignores ScatterGather=
        (
            None,
            f"undetermined: {LINK_ETC}/10-xen-sg-off.link:6 sets ScatterGather=, and the systemd version is not known",
        ),
    ],
)
def test_link_scatter_gather_needs_systemd_260(tmp_path, version, expected):
    files = ship(
        tmp_path,
        ("link", "link/10-xen-sg-off.link", f"{LINK_ETC}/10-xen-sg-off.link"),
        ("link", "link/99-default.link", f"{LINK_LIB}/99-default.link"),
    )
    assert described(dataclasses.replace(files, udev_version=version), xen()) == expected
    # The first matching file is the only one applied: 99-default.link would match too.
    assert described(dataclasses.replace(files, udev_version=version), Device("ens5", parents=ENA)) == "default"


def test_an_earlier_link_file_that_matches_hides_a_later_one():
    first = ConfFile(
        "link",
        f"{LINK_ETC}/05-all.link",
        ((1, "[Match]"), (2, "OriginalName=*"), (3, "[Link]"), (4, "NamePolicy=kernel")),
    )
    later = ConfFile(
        "link", f"{LINK_ETC}/10-off.link", ((1, "[Match]"), (2, "Driver=vif"), (3, "[Link]"), (4, "ScatterGather=off"))
    )
    assert boot_link.evaluate([first, later], xen(), 260).describe() == "default"
    unknown = dataclasses.replace(first, lines=((1, "[Match]"), (2, "Property=ID_BUS=xen")))
    assert boot_link.evaluate([unknown, later], xen(), 260).describe() == (
        f"undetermined: cannot tell whether {LINK_ETC}/05-all.link (Property=) applies to eth0"
    )


# --------------------------------------------------------------------------- RHEL ifcfg


@pytest.mark.parametrize(
    ("sample", "name", "device", "expected"),
    [
        ("ifcfg-bond0.64", "ifcfg-bond0.64", "bond0.64", f"off ({IFCFG}/ifcfg-bond0.64:8)"),
        ("ifcfg-bond0.64", "ifcfg-bond0.64", "eth0", "default"),
        # "-K ${DEVICE} tso on; -G ${DEVICE} rx 256 tx 256": two commands, neither about SG.
        ("cloud-init-sysconf.txt", "ifcfg-eth0", "eth0", "default"),
        # ETHTOOL_OPTS without a leading "-": ethtool -s DEVICE ... (wake-on-lan here).
        ("ifcfg-test-wired-unknown-ethtool-opt", "ifcfg-eth0", "eth0", "default"),
        ("ifcfg-test_roundtrip_ethtool-4.cexpected", "ifcfg-net0", "net0", "default"),
        ("ifcfg-br-mgmt", "ifcfg-br-mgmt", "br-mgmt", "default"),
    ],
)
def test_ifcfg_from_the_wild(tmp_path, sample, name, device, expected):
    files = ship(tmp_path, ("ifcfg", f"ifcfg/{sample}", f"{IFCFG}/{name}"))
    assert described(files, Device(device, renamed=False)) == expected


def test_ifcfg_ships_only_the_lines_it_reads(tmp_path):
    files = ship(tmp_path, ("ifcfg", "ifcfg/ifcfg-test-wired-unknown-ethtool-opt", f"{IFCFG}/ifcfg-eth0"))
    assert [text.split("=")[0] for _, text in files.files[0].lines] == ["DEVICE", "ONBOOT", "ETHTOOL_OPTS"]


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (
            ["DEVICE=eth0", 'ETHTOOL_OPTS="-K eth0 sg on; -K eth0 sg off"'],
            "off (/etc/sysconfig/network-scripts/ifcfg-eth0:2)",
        ),
        (["DEVICE=eth0", "ONBOOT=no", 'ETHTOOL_OPTS="-K ${DEVICE} sg off"'], "default"),  # not up at boot
        (
            ['ETHTOOL_OPTS="-K $DEVICE sg off"'],
            "off (/etc/sysconfig/network-scripts/ifcfg-eth0:1)",
        ),  # DEVICE from the name
        (
            ['ETHTOOL_OPTS="-K ${DEVICE} sg off'],
            "undetermined: cannot read ETHTOOL_OPTS at /etc/sysconfig/network-scripts/ifcfg-eth0:1",
        ),
    ],
)
def test_ifcfg_semantics(lines, expected):
    file = ConfFile("ifcfg", f"{IFCFG}/ifcfg-eth0", tuple(enumerate(lines, 1)))
    assert boot_netcfg.ifcfg([file], xen()).describe() == expected


def test_an_ifcfg_file_can_turn_another_interfaces_sg_off():
    bond = ConfFile("ifcfg", f"{IFCFG}/ifcfg-bond0", ((1, "DEVICE=bond0"), (2, 'ETHTOOL_OPTS="-K eth0 sg off"')))
    assert boot_netcfg.ifcfg([bond], xen()).describe() == f"off ({IFCFG}/ifcfg-bond0:2)"
    assert boot_netcfg.ifcfg([bond], xen("eth1")).describe() == "default"


# --------------------------------------------------------------------------- Debian ifupdown


@pytest.mark.parametrize(
    ("sample", "device", "expected"),
    [
        ("br-mgmt-offload-sg.interfaces", "br-mgmt", "off (/etc/network/interfaces:44)"),
        ("br-mgmt-offload-sg.interfaces", "br-storage", "off (/etc/network/interfaces:58)"),
        ("br-mgmt-offload-sg.interfaces", "eth10", "default"),
        # Options need no indentation: they belong to the last iface stanza.
        ("sniffer-eno1.interfaces", "eno1", "off (/etc/network/interfaces:6)"),
        # A bare "ethtool -K …" line is an unknown option to ifupdown, not a command: offload-sg decides.
        ("proxmox-offload.interfaces", "<INTERFACE_NAME>", "off (/etc/network/interfaces:10)"),
    ],
)
def test_ifupdown_from_the_wild(tmp_path, sample, device, expected):
    files = ship(tmp_path, ("ifupdown", f"ifupdown/{sample}", "/etc/network/interfaces"))
    assert described(files, Device(device, renamed=False)) == expected


def test_ifupdown_follows_source_globs(tmp_path):
    files = ship(
        tmp_path,
        ("ifupdown", "ifupdown/openstack-ansible.interfaces", "/etc/network/interfaces"),
        ("ifupdown", "ifupdown/br-mgmt-offload-sg.interfaces", "/etc/network/interfaces.d/osa.cfg"),
        ("ifupdown", "ifupdown/sniffer-eno1.interfaces", "/etc/network/interfaces.d/eno1.disabled"),
    )
    assert described(files, Device("br-mgmt")) == "off (/etc/network/interfaces.d/osa.cfg:44)"
    assert described(files, Device("eno1")) == "default"  # not matched by "source …/*.cfg"


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (["iface eth0 inet dhcp", "offload-sg off"], "default"),  # not auto: not brought up at boot
        (
            ["allow-hotplug eth0", "iface eth0 inet dhcp", "post-up /sbin/ethtool -K $IFACE sg off"],
            "off (/etc/network/interfaces:3)",
        ),
        (
            ["auto eth0", "iface eth0 inet dhcp", "up ethtool -K eth0 sg on", "offload-sg off"],
            "undetermined: /etc/network/interfaces:3 turns it on, /etc/network/interfaces:4 off; ethtool's hook and up "
            "commands run in an order that depends on the Debian release",
        ),
        (
            ["auto eth0", "iface eth0 inet dhcp", "pre-up ethtool -K eth0 sg off", "offload-sg on"],
            "on (/etc/network/interfaces:4)",
        ),
        (
            ["auto eth0", "source /opt/net/*.cfg"],
            "undetermined: /etc/network/interfaces:2 sources /opt/net/*.cfg, which the suite does not read",
        ),
    ],
)
def test_ifupdown_semantics(lines, expected):
    file = ConfFile("ifupdown", "/etc/network/interfaces", tuple(enumerate(lines, 1)))
    assert boot_netcfg.ifupdown([file], xen()).describe() == expected


def test_ifupdown_secrets_never_leave_the_host(tmp_path):
    secret = "auto wlan0\niface wlan0 inet dhcp\n    wpa-ssid home\n    wpa-psk hunter2\n    offload-sg off\n"
    sample = tmp_path / "interfaces"
    sample.write_text(secret)
    out = subprocess.run(
        [AWK or "awk", "-v", "CAP=65536", boot.AWK_PROGRAM, "ifupdown", str(sample)], capture_output=True, text=True
    )
    assert "hunter2" not in out.stdout and "offload-sg off" in out.stdout


# --------------------------------------------------------------------------- NetworkManager


@pytest.mark.parametrize(
    ("sample", "device", "expected"),
    [
        ("Test_Wired_Connection", xen(address="00:11:22:33:44:55"), "default"),
        ("nepta-int1.nmconnection", xen("int1"), "default"),  # [ethtool] gro and gso only
        ("Test_minimal_1", xen(), "default"),
        # Written by NetworkManager 1.42.4 itself (captured in the lab): nmcli ... ethtool.feature-sg off.
        (
            "uplink-feature-sg-false.nmconnection",
            xen("eth1"),
            f"off ({NM_ETC}/uplink-feature-sg-false.nmconnection:11)",
        ),
        ("uplink-feature-sg-false.nmconnection", xen("eth0"), "default"),
        # ... and a profile that sets SG on but never autoconnects: not what boot activates.
        ("spare-autoconnect-false.nmconnection", xen(), "default"),
    ],
)
def test_networkmanager_keyfiles_from_the_wild(tmp_path, sample, device, expected):
    files = ship(tmp_path, ("nm", f"nm/{sample}", f"{NM_ETC}/{sample}"))
    assert described(files, device) == expected


def keyfile(name: str, *lines: str, directory: str = NM_ETC) -> ConfFile:
    return ConfFile("nm", f"{directory}/{name}", tuple(enumerate(lines, 1)))


SG_OFF = ("[connection]", "id=eth0", "uuid=11111111-2222-3333-4444-555555555555", "type=ethernet",
          "interface-name=eth0", "[ethtool]", "feature-sg=false")  # fmt: skip


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ([keyfile("eth0.nmconnection", *SG_OFF)], f"off ({NM_ETC}/eth0.nmconnection:7)"),
        ([keyfile("eth1.nmconnection", *SG_OFF[:4], "interface-name=eth1", *SG_OFF[5:])], "default"),
        ([keyfile("eth0.nmconnection", *SG_OFF[:4], "autoconnect=false", *SG_OFF[4:])], "default"),
        ([keyfile("eth0.nmconnection~", *SG_OFF)], "default"),  # a backup: NetworkManager skips it
        (
            [keyfile("eth0", *SG_OFF, directory="/usr/lib/NetworkManager/system-connections")],
            "default",
        ),  # needs .nmconnection
        (
            [keyfile("eth0.nmconnection", *SG_OFF[:6], "feature-sg=maybe")],
            f"undetermined: {NM_ETC}/eth0.nmconnection:7: feature-sg='maybe' is not a boolean",
        ),
        # Any Ethernet profile without interface-name may be the one NetworkManager picks.
        (
            [keyfile("eth0.nmconnection", *SG_OFF), keyfile("Test_minimal_1", "[connection]", "type=802-3-ethernet")],
            "undetermined: NetworkManager may activate 'Test_minimal_1' (/etc/NetworkManager/system-connections/Test_minimal_1) "
            "and 'eth0' (/etc/NetworkManager/system-connections/eth0.nmconnection) on eth0 (the choice depends on priority, "
            "last use or MAC address), and they disagree on ethtool.feature-sg",
        ),
        # ... unless its autoconnect-priority is lower.
        (
            [
                keyfile("eth0.nmconnection", *SG_OFF[:4], "autoconnect-priority=10", *SG_OFF[4:]),
                keyfile("Test_minimal_1", "[connection]", "type=802-3-ethernet"),
            ],
            f"off ({NM_ETC}/eth0.nmconnection:8)",
        ),
    ],
)
def test_networkmanager_semantics(files, expected):
    assert boot_netcfg.networkmanager(files, xen()).describe() == expected


def test_networkmanager_secrets_never_leave_the_host(tmp_path):
    sample = tmp_path / "wifi.nmconnection"
    sample.write_text("[connection]\nid=home\ntype=wifi\n[wifi-security]\npsk=hunter2\n[ethtool]\nfeature-sg=true\n")
    out = subprocess.run(
        [AWK or "awk", "-v", "CAP=65536", boot.AWK_PROGRAM, "nm", str(sample)], capture_output=True, text=True
    )
    assert "hunter2" not in out.stdout and "feature-sg=true" in out.stdout


# --------------------------------------------------------------------------- the host as a whole

ON_UDEV = Outcome(Setting(True, "/etc/udev/rules.d/70-xennet-compliance-sg.rules:2"))


def test_boot_order_later_wins(tmp_path):
    """.link (net_setup_link, while rules run), then udev RUN, then what brings the interface up."""
    link_off = ConfFile(
        "link", f"{LINK_ETC}/10-off.link", ((1, "[Match]"), (2, "Driver=vif"), (3, "[Link]"), (4, "ScatterGather=no"))
    )
    rule_on = rules(
        'DRIVERS=="vif", RUN+="/usr/sbin/ethtool -K $name sg on"', f"{UDEV_ETC}/70-xennet-compliance-sg.rules"
    )
    nm_off = keyfile("eth0.nmconnection", *SG_OFF)
    assert (
        described(BootFiles((link_off, rule_on), udev_version=260), xen())
        == f"on ({UDEV_ETC}/70-xennet-compliance-sg.rules:1)"
    )
    assert (
        described(BootFiles((link_off, rule_on, nm_off), udev_version=260), xen())
        == f"off ({NM_ETC}/eth0.nmconnection:7)"
    )
    ifupdown_on = ConfFile(
        "ifupdown", "/etc/network/interfaces", ((1, "auto eth0"), (2, "iface eth0 inet dhcp"), (3, "offload-sg on"))
    )
    both = described(BootFiles((nm_off, ifupdown_on)), xen())
    assert both.startswith(
        "undetermined: /etc/network/interfaces:3 turns it on, /etc/NetworkManager/system-connections/eth0.nmconnection:7 off"
    )


def test_runtime_configuration_does_not_survive_a_reboot():
    run_off = rules('DRIVERS=="vif", RUN+="/usr/sbin/ethtool -K $name sg off"', f"{UDEV_RUN}/90-now.rules")
    assert described(BootFiles((run_off,)), xen()) == (
        f"undetermined: runtime configuration ({UDEV_RUN}/90-now.rules) decides it now "
        f"(off ({UDEV_RUN}/90-now.rules:1)), but /run is emptied at boot; without it: default"
    )
    # A /run file that changes nothing does not matter.
    run_gro = rules('DRIVERS=="vif", RUN+="/usr/sbin/ethtool -K $name gro off"', f"{UDEV_RUN}/90-now.rules")
    assert described(BootFiles((run_gro,)), xen()) == "default"


def test_what_cannot_be_read_is_undetermined():
    unread = BootFiles(unreadable=(("nm", f"{NM_ETC}/eth0.nmconnection"),))
    assert (
        described(unread, xen())
        == f"undetermined: cannot read {NM_ETC}/eth0.nmconnection (audit as root, or with --sudo)"
    )
    # A doubt about an earlier stage does not matter when a later one decides.
    udev_unread = BootFiles((keyfile("eth0.nmconnection", *SG_OFF),), unreadable=(("udev", f"{UDEV_ETC}/x.rules"),))
    assert described(udev_unread, xen()) == f"off ({NM_ETC}/eth0.nmconnection:7)"  # NM runs after udev
    assert described(BootFiles(problem="awk not found"), xen()) == "undetermined: awk not found"


def test_output_past_the_cap_is_undetermined(tmp_path):
    big = tmp_path / "big.rules"
    big.write_text('KERNEL=="eth0", RUN+="/sbin/ethtool -K $name gro off"\n' * 3000)
    out = subprocess.run(
        [AWK or "awk", "-v", "CAP=65536", boot.AWK_PROGRAM, "udev", str(big)], capture_output=True, text=True
    )
    assert len(out.stdout) < 66000 and out.stdout.endswith("truncated\nend\n")
    found = boot.parse_section(out.stdout.split("\n")[:-1], excerpt)
    assert found.problem == "the boot configuration is over 65536 bytes: not read whole"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('file\tudev\t/x\nl\t1\tRUN+="x"\n', "the boot configuration was not read to its end"),
        ("file\tudev\t/x\nsurprise\nend\n", "unexpected boot configuration line: surprise"),
        ("unsafe\tudev\nend\n", "a configuration file name holds a newline"),
        ("end\nfile\tudev\t/x\n", "unexpected line after the boot configuration: file\\tudev\\t/x"),
    ],
)
def test_a_boot_section_in_doubt_is_undetermined(text, problem):
    assert boot.parse_section(text.split("\n")[:-1], excerpt).problem == problem


@pytest.mark.parametrize(
    ("address", "applies"),
    [("00:11:AA:bb:cc:55", True), ("00:11:aa:bb:cc:56", False), (None, None)],
)
def test_a_profile_bound_to_a_mac_address_applies_to_that_nic_only(tmp_path, address, applies):
    files = ship(tmp_path, ("nm", "nm/Test_Wired_Connection_MAC_Case", f"{NM_ETC}/Test_Wired_Connection_MAC_Case"))
    profile = boot_netcfg.read_profile(files.files[0])
    assert boot_netcfg.applies(profile, xen(address=address)) is applies


@pytest.mark.skipif(shutil.which("busybox") is None, reason="busybox is not installed here")
def test_busybox_awk_ships_what_this_machines_awk_ships():
    """Minimal images (Alpine, busybox-based builders) have only busybox's awk."""
    args = []
    for kind in ("udev", "link", "nm", "ifcfg", "ifupdown"):
        for sample in sorted((DATA / kind).iterdir()):
            args += [kind, str(sample)]
    args += ["ifcfg", "/nonexistent/ifcfg-eth9"]  # unreadable
    runs = [
        subprocess.run([*awk, "-v", "CAP=65536", boot.AWK_PROGRAM, *args], capture_output=True, text=True)
        for awk in ([AWK or "awk"], ["busybox", "awk"])
    ]
    assert [r.returncode for r in runs] == [0, 0]
    assert runs[0].stdout == runs[1].stdout
    assert "unreadable\tifcfg\t/nonexistent/ifcfg-eth9" in runs[1].stdout.splitlines()


def _corpus_lines() -> list[str]:
    files = sorted(p for p in DATA.rglob("*") if p.is_file() and p.name != "README.md")
    return [line for p in files for line in p.read_text(errors="replace").splitlines()]


def test_the_sg_hint_agrees_with_the_sg_regex_on_every_real_configuration_line():
    # names_sg looks for literals before the regex: it must never miss a line the regex sees.
    lines = _corpus_lines()
    odd = [
        "feature-sg on",
        "offload-tx-sg off",
        "offload-s on",
        "ScatterGather=false",
        "tx-sg off",
        "-K eth0 sg",
        "msg",
        "tsg",
    ]
    seen = [line for line in lines + odd if boot.SG_WORDS.search(line)]
    assert len(lines) > 200 and len(seen) > 10
    assert [line for line in lines + odd if boot.names_sg(line)] == seen
