"""parse_ethtool_features against every ethtool -k sample in tests/data/ethtool, and its rules.

The expected reading of each sample is recorded once, in tests/data/ethtool/manifest.csv;
where each sample comes from is in tests/data/README.md.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from compliance.probe import ProbeError, clean_sg, parse_ethtool_features, read_lines

CORPUS = Path(__file__).parent / "data" / "ethtool"
MANIFEST = list(csv.DictReader((CORPUS / "manifest.csv").open(newline="")))
READINGS = {"on": (True, False), "off": (False, False), "on [fixed]": (True, True), "off [fixed]": (False, True)}


def test_manifest_lists_every_sample_once():
    files = [row["file"] for row in MANIFEST]
    assert len(files) == len(set(files))
    assert sorted(files) == sorted(p.name for p in CORPUS.glob("*.txt"))
    assert {row["origin"] for row in MANIFEST} <= {"real", "captured", "reconstructed"}


def test_corpus_holds_enough_real_samples():
    assert sum(row["origin"] == "real" for row in MANIFEST) >= 15


@pytest.mark.parametrize("row", MANIFEST, ids=[row["file"] for row in MANIFEST])
def test_every_sample_reads_as_recorded(row):
    text = (CORPUS / row["file"]).read_text()
    expected = row["expected"]
    if expected.startswith("undetermined: "):
        with pytest.raises(ProbeError, match=re.escape(expected.removeprefix("undetermined: "))) as info:
            parse_ethtool_features(text, row["iface"])
        assert "\n" not in str(info.value)
    else:
        assert parse_ethtool_features(text, row["iface"]) == READINGS[expected]


@pytest.mark.parametrize("row", MANIFEST, ids=[row["file"] for row in MANIFEST])
def test_the_one_pass_reading_agrees_with_the_line_by_line_one(row):
    """The fast path takes clean output only, and reads it as the line-by-line path does."""
    text = (CORPUS / row["file"]).read_text()
    fast = clean_sg(text, row["iface"])
    if row["expected"].startswith("undetermined: "):
        assert fast is None
    else:
        assert fast in (None, read_lines(text, row["iface"]))


def test_the_one_pass_reading_takes_most_real_samples():
    taken = [row for row in MANIFEST if clean_sg((CORPUS / row["file"]).read_text(), row["iface"]) is not None]
    assert len(taken) >= 15


@pytest.mark.parametrize("row", MANIFEST, ids=[row["file"] for row in MANIFEST])
def test_every_sample_names_its_interface(row):
    text = (CORPUS / row["file"]).read_text()
    if "for " + row["iface"] + ":" not in text:
        pytest.skip("not ethtool -k output")
    with pytest.raises(ProbeError, match="answered for"):
        parse_ethtool_features(text, row["iface"] + "x")


# ---- the rules, one at a time ----------------------------------------------------------

FEATURES = "Features for eth0:\n"
OFFLOAD = "Offload parameters for eth0:\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # ethtool 6.x after `ethtool -K eth0 tx-scatter-gather off` with fraglist still on.
        (FEATURES + "scatter-gather: on\n\ttx-scatter-gather: off\n\ttx-scatter-gather-fraglist: on\n", (False, False)),
        (
            FEATURES + "scatter-gather: off\n\ttx-scatter-gather: on\n\ttx-scatter-gather-fraglist: off [fixed]\n",
            (True, False),
        ),
        # sg_fixed comes from the line that decides, not from the legacy line or fraglist.
        (
            FEATURES + "scatter-gather: on\n\ttx-scatter-gather: off [fixed]\n\ttx-scatter-gather-fraglist: on\n",
            (False, True),
        ),
        (
            FEATURES + "scatter-gather: on\n\ttx-scatter-gather: on\n\ttx-scatter-gather-fraglist: off [fixed]\n",
            (True, False),
        ),
        # No sub-feature shown (one netdev feature behind the flag, or an old kernel): the flag decides.
        (FEATURES + "scatter-gather: off [fixed]\n", (False, True)),
        (FEATURES + "scatter-gather: on\n", (True, False)),
    ],
)
def test_tx_scatter_gather_decides_when_shown(text, expected):
    assert parse_ethtool_features(text, "eth0") == expected


@pytest.mark.parametrize(
    "text",
    [
        # ethtool 3-6: the legacy ioctl failed, then the zero default is printed as "off".
        OFFLOAD + "Cannot get device scatter-gather settings: Operation not supported\n"
        "rx-checksumming: off\nscatter-gather: off\ntcp segmentation offload: off\n",
        # stdout on a pipe is flushed after stderr: the Cannot get line comes first.
        "Cannot get device scatter-gather settings: Operation not supported\n" + OFFLOAD + "scatter-gather: off\n",
        # Whatever follows, even "on".
        OFFLOAD + "Cannot get device scatter-gather settings: No such device\nscatter-gather: on\n",
        # ethtool 3.4-5.x: the legacy read failed, the netdev one did not: still not trusted.
        FEATURES + "Cannot get device scatter-gather settings: Operation not supported\n"
        "scatter-gather: off\n\ttx-scatter-gather: on\n",
        # ETHTOOL_GFEATURES failed: the sub-feature lines come from memory ethtool never filled.
        FEATURES + "Cannot get device generic features: Operation not supported\n"
        "scatter-gather: on\n\ttx-scatter-gather: off\n",
    ],
)
def test_cannot_get_scatter_gather_is_undetermined(text):
    with pytest.raises(ProbeError, match="could not read scatter-gather of eth0: Cannot get") as info:
        parse_ethtool_features(text, "eth0")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "line",
    [
        "Cannot get device udp-fragmentation-offload settings: Operation not supported",
        "Cannot get device udp large send offload settings: Operation not supported",
        "Cannot get device rx csum settings: Operation not supported",
        "Cannot get device GRO settings: Operation not supported",
        "Cannot get device flags: Operation not supported",
    ],
)
def test_other_cannot_get_lines_are_harmless(line):
    assert parse_ethtool_features(f"{line}\n{OFFLOAD}scatter-gather: on\n{line}\n", "eth0") == (True, False)


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        ("", (False, False)),
        (" [fixed]", (False, True)),
        (" [requested on]", (False, False)),
        (" [requested off]", (False, False)),
        (" [not requested]", (False, False)),
    ],
)
def test_each_annotation(annotation, expected):
    text = f"{FEATURES}rx-checksumming: on{annotation}\nscatter-gather: off\n\ttx-scatter-gather: off{annotation}\n"
    assert parse_ethtool_features(text, "eth0") == expected


@pytest.mark.parametrize(
    "annotation",
    [" [FIXED]", " [requested]", " [requested maybe]", " [fixed] [fixed]", "  [fixed]", " [not requested on]"],
)
def test_unknown_annotations_fail_closed(annotation):
    with pytest.raises(ProbeError, match="unexpected ethtool -k line"):
        parse_ethtool_features(f"{FEATURES}scatter-gather: on\n\ttx-scatter-gather: on{annotation}\n", "eth0")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # ethtool 3 (2005): four lines, one of them spaced.
        (
            OFFLOAD + "rx-checksumming: on\ntx-checksumming: on\nscatter-gather: off\ntcp segmentation offload: off\n",
            (False, False),
        ),
        # RHEL's ethtool 6 with GRO backported: spaced and hyphenated names in one output.
        (
            OFFLOAD + "rx-checksumming: on\ntx-checksumming: on\nscatter-gather: on\ntcp segmentation offload: on\n"
            "udp fragmentation offload: off\ngeneric segmentation offload: off\ngeneric-receive-offload: on\n",
            (True, False),
        ),
        # ethtool 2.6.33-3.3: all hyphenated under the old header.
        (OFFLOAD + "scatter-gather: on\ntcp-segmentation-offload: on\nlarge-receive-offload: off\n", (True, False)),
    ],
)
def test_spaced_and_hyphenated_names(text, expected):
    assert parse_ethtool_features(text, "eth0") == expected


@pytest.mark.parametrize(
    ("text", "match"),
    [
        # ethtool's own message when every legacy read failed.
        (OFFLOAD + "no offload info available\n", "unexpected ethtool -k line: no offload info available"),
        (FEATURES + "scatter-gather: on\nno feature info available\n", "unexpected ethtool -k line"),
        # A sub-feature indented with spaces is not ethtool's output (it prints a tab).
        (FEATURES + "scatter-gather: on\n        tx-scatter-gather: off\n", "unexpected ethtool -k line"),
        # The legacy flag is never a sub-feature.
        (FEATURES + "\tscatter-gather: on\n", "unexpected ethtool -k line"),
        (FEATURES + "scatter-gather: on\n\ttx-scatter-gather: on\n\ttx-scatter-gather: off\n", "no single"),
        (FEATURES + "scatter-gather:  on\n", "unexpected ethtool -k line"),
        (FEATURES + "scatter-gather: on \n", "unexpected ethtool -k line"),
        (FEATURES + "Scatter-Gather: on\n", "unexpected ethtool -k line"),
        (FEATURES + "scatter-gather: on\nActual changes:\n", "unexpected ethtool -k line: Actual changes:"),
        (FEATURES + "scatter-gather: on\nFeatures for eth0:\n", "unexpected ethtool -k line"),
        # An unknown line after the deciding lines still fails, wherever it is.
        (FEATURES + "scatter-gather: on\n\ttx-scatter-gather: on\nrx-all: off\nsurprise\n", "line: surprise"),
        ("Features for eth0\nscatter-gather: on\n", "unexpected ethtool -k output"),
        ("Offload parameters for eth1:\nscatter-gather: on\n", "answered for eth1, not eth0"),
        (OFFLOAD, "no single scatter-gather line"),
    ],
)
def test_unknown_lines_fail_closed(text, match):
    with pytest.raises(ProbeError, match=match) as info:
        parse_ethtool_features(text, "eth0")
    assert "\n" not in str(info.value)


def test_a_wrong_header_outranks_a_missing_reading():
    text = "Offload parameters for eth1:\nCannot get device scatter-gather settings: Operation not supported\n"
    with pytest.raises(ProbeError, match="answered for eth1, not eth0"):
        parse_ethtool_features(text, "eth0")
