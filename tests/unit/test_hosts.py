"""HostSpec parsing, hostfiles and the worker distribution rule."""

from __future__ import annotations

import pytest

from dockkit.errors import ConfigError, HostSpecError
from dockkit.launch.hosts import HostSpec, distribute, parse_hostfile, parse_hostfile_text, parse_hosts


@pytest.mark.parametrize(
    "text, expected",
    [
        ("node1", HostSpec("node1")),
        ("alice@node1", HostSpec("node1", user="alice")),
        ("node1:2222", HostSpec("node1", port=2222)),
        ("node1*4", HostSpec("node1", workers=4)),
        ("alice@10.0.0.5:2222*8", HostSpec("10.0.0.5", user="alice", port=2222, workers=8)),
        ("b:4", HostSpec("b", workers=4)),  # a lone ':N' below 1024 is a count
        ("b:1023", HostSpec("b", workers=1023)),
        ("c:1024", HostSpec("c", port=1024)),  # from 1024 on it is a port
        ("user@c:2222", HostSpec("c", user="user", port=2222)),
        ("c:2222*3", HostSpec("c", port=2222, workers=3)),
        ("c:2222:3", HostSpec("c", port=2222, workers=3)),
        ("ssh://c:22", HostSpec("c", port=22)),  # the URL form: always a port
        ("ssh://bob@c:4*2", HostSpec("c", user="bob", port=4, workers=2)),
        ("ssh://c", HostSpec("c")),
        ("ssh://[::1]:22", HostSpec("::1", port=22)),
        ("[::1]:2222", HostSpec("::1", port=2222)),
        ("[::1]:4", HostSpec("::1", workers=4)),
        ("[::1]:2222:4", HostSpec("::1", port=2222, workers=4)),
        ("[::1]", HostSpec("::1")),
        ("[fe80::1]*3", HostSpec("fe80::1", workers=3)),
        ("bob@[::1]:2200*2", HostSpec("::1", user="bob", port=2200, workers=2)),
        ("::1", HostSpec("::1")),
        ("  node-2.example_x  ", HostSpec("node-2.example_x")),
        ("a.b@host", HostSpec("host", user="a.b")),
        ("n:65535", HostSpec("n", port=65535)),
    ],
)
def test_parse_forms(text, expected):
    assert HostSpec.parse(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "node1",
        "alice@node1",
        "node1:2222",
        "node1*4",
        "alice@10.0.0.5:2222*8",
        "[::1]:2222",
        "[::1]*2",
        "bob@[::1]:2200*2",
        "ssh://c:22",
        "ssh://bob@[::1]:22*2",
        "::1",
        "bob@::1",
    ],
)
def test_str_round_trips(text):
    spec = HostSpec.parse(text)
    assert HostSpec.parse(str(spec)) == spec
    assert str(spec) == text


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "empty host spec"),
        ("   ", "empty host spec"),
        ("node1:", "count ''"),
        ("node1:abc", "count 'abc'"),
        ("node1:0", "ssh://host:port"),
        ("node1:65536", "not in 1..65535"),
        ("node1:-1", "port or worker count '-1'"),
        ("node1:4*2", "worker count given twice"),
        ("node1:22:4", "write ssh://host:22*4"),
        ("node1:2222:4*2", "worker count given twice"),
        ("ssh://node1:22:4", "too many ':'"),
        ("ssh://node1:0", "not in 1..65535"),
        ("node1*0", "at least 1"),
        ("node1*-2", "worker count '-2'"),
        ("node1*", "worker count ''"),
        ("node1*x", "worker count 'x'"),
        ("@node1", "empty user"),
        ("alice@", "empty host name"),
        (":22", "empty host name"),
        ("*4", "empty host name"),
        ("no de", "white space"),
        ("a/b", "bad host name"),
        ("a:2222:2:3", "too many ':'"),
        ("[::1", "missing ']'"),
        ("[::1]x", "unexpected"),
        ("[nothost]:22", "not a valid IPv6"),
        ("bad user@h", "white space"),
        ("us%er@h", "bad user name"),
        ("-rf", "bad host name"),
    ],
)
def test_bad_specs(text, fragment):
    with pytest.raises(HostSpecError) as info:
        HostSpec.parse(text)
    assert fragment in str(info.value)
    assert isinstance(info.value, ConfigError)


def test_constructor_validates_too():
    with pytest.raises(HostSpecError):
        HostSpec("node", port=70000)
    with pytest.raises(HostSpecError):
        HostSpec("node", workers=0)
    with pytest.raises(HostSpecError):
        HostSpec("")


def test_label_key_and_with_workers():
    spec = HostSpec.parse("alice@n:2222*4")
    assert spec.label == "alice@n:2222"
    assert spec.key == ("alice", "n", 2222)
    assert spec.with_workers(None) == HostSpec("n", user="alice", port=2222)


def test_parse_hosts_keeps_order_and_duplicates():
    assert parse_hosts(["a", "b:4", "alice@c:2222", "a"]) == [
        HostSpec("a"),
        HostSpec("b", workers=4),
        HostSpec("c", user="alice", port=2222),
        HostSpec("a"),
    ]


HOSTFILE = """\
# the cluster
node1 4
node2           # trailing comment, no count

alice@node3:2222 2
   node4*3
[::1]:2200 1
node5:3
ssh://node6:22 2
"""


def test_hostfile_text_with_comments_and_blanks():
    assert parse_hostfile(HOSTFILE) == [
        HostSpec("node1", workers=4),
        HostSpec("node2"),
        HostSpec("node3", user="alice", port=2222, workers=2),
        HostSpec("node4", workers=3),
        HostSpec("::1", port=2200, workers=1),
        HostSpec("node5", workers=3),
        HostSpec("node6", port=22, workers=2),
    ]


def test_hostfile_from_path(tmp_path):
    path = tmp_path / "hosts"
    path.write_text(HOSTFILE)
    assert parse_hostfile(path) == parse_hostfile(str(path)) == parse_hostfile(HOSTFILE)


def test_missing_hostfile_is_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read hostfile"):
        parse_hostfile(tmp_path / "nope")


@pytest.mark.parametrize(
    "line, fragment",
    [
        ("node 4 5", "expected 'host [count]', got 3 fields"),
        ("node x", "worker count 'x'"),
        ("node 0", "worker count '0'"),
        ("node -1", "worker count '-1'"),
        ("node*2 3", "worker count given twice"),
        ("node:2 3", "worker count given twice"),
        ("node:99999", "not in 1..65535"),
        ("no/de 2", "bad host name"),
    ],
)
def test_hostfile_bad_line_names_file_and_line(tmp_path, line, fragment):
    path = tmp_path / "hosts"
    path.write_text(f"# header\n\ngood 2\n{line}  # comment\n")
    with pytest.raises(HostSpecError) as info:
        parse_hostfile(path)
    assert info.value.source == str(path)
    assert info.value.line == 4
    assert str(info.value).startswith(f"{path}:4: ")
    assert fragment in str(info.value)


def test_hostfile_text_source_name():
    with pytest.raises(HostSpecError, match=r"^<hostfile>:2: "):
        parse_hostfile_text("a\nb c d\n")


def test_empty_hostfile_gives_no_hosts():
    assert parse_hostfile_text("# nothing\n\n") == []


def _counts(pairs):
    return [(str(spec.with_workers(None)), n) for spec, n in pairs]


def test_distribute_explicit_counts_only():
    hosts = parse_hosts(["a*2", "b*3"])
    assert _counts(distribute(hosts, None)) == [("a", 2), ("b", 3)]
    assert _counts(distribute(hosts, 5)) == [("a", 2), ("b", 3)]


def test_distribute_total_spread_evenly_remainder_first():
    hosts = parse_hosts(["a", "b", "c"])
    assert _counts(distribute(hosts, 8)) == [("a", 3), ("b", 3), ("c", 2)]
    assert _counts(distribute(hosts, 3)) == [("a", 1), ("b", 1), ("c", 1)]


def test_distribute_total_minus_explicit_goes_to_free_hosts():
    hosts = parse_hosts(["a", "b:4", "alice@c:2222"])  # the example
    assert _counts(distribute(hosts, 16)) == [("a", 6), ("b", 4), ("alice@c:2222", 6)]


def test_distribute_hosts_with_zero_share_are_left_out():
    assert _counts(distribute(parse_hosts(["a", "b", "c"]), 2)) == [("a", 1), ("b", 1)]
    assert _counts(distribute(parse_hosts(["a*4", "b"]), 4)) == [("a", 4)]


def test_distribute_without_total_uses_default():
    hosts = parse_hosts(["a", "b*3"])
    assert _counts(distribute(hosts, None)) == [("a", 1), ("b", 3)]
    assert _counts(distribute(hosts, None, default=4)) == [("a", 4), ("b", 3)]


def test_distribute_result_specs_carry_their_count():
    (spec, n), = distribute(parse_hosts(["a"]), 5)
    assert spec.workers == n == 5


def test_distribute_merges_duplicates_after_the_split():
    hosts = parse_hosts(["a", "a", "b"])
    assert _counts(distribute(hosts, 6)) == [("a", 4), ("b", 2)]
    hosts = parse_hosts(["a*2", "b", "a*3"])
    assert _counts(distribute(hosts, None)) == [("a", 5), ("b", 1)]
    # Different user or port means a different host.
    hosts = parse_hosts(["a", "bob@a", "a:2222"])
    assert len(distribute(hosts, None)) == 3


def test_distribute_counts_disagree_with_total():
    with pytest.raises(ConfigError, match="add up to 5 workers but -n is 4"):
        distribute(parse_hosts(["a*2", "b*3"]), 4)


def test_distribute_counts_exceed_total():
    with pytest.raises(ConfigError, match="ask for 6 workers but -n is only 4"):
        distribute(parse_hosts(["a*6", "b"]), 4)


@pytest.mark.parametrize("total", [0, -3])
def test_distribute_bad_total(total):
    with pytest.raises(ConfigError, match="at least 1"):
        distribute(parse_hosts(["a"]), total)


def test_distribute_no_hosts():
    with pytest.raises(ConfigError, match="no hosts"):
        distribute([], 4)


def test_distribute_bad_default():
    with pytest.raises(ConfigError):
        distribute(parse_hosts(["a"]), None, default=0)


# --- --hosts words on the command line ------------------------------------------------------
from dockkit.cli import expand_hosts  # noqa: E402


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--hosts", "a", "b:4", "user@c:2222", "-n", "16", "job.py"],
         ["--hosts", "a", "--hosts", "b:4", "--hosts", "user@c:2222", "-n", "16", "job.py"]),
        # a '--' that only ends the list before more dockkit options is dropped
        (["--hosts", "a", "b", "--", "--tunnel", "job.py"],
         ["--hosts", "a", "--hosts", "b", "--tunnel", "job.py"]),
        # otherwise '--' keeps its meaning: the script and its arguments follow
        (["--hosts", "a", "--", "job.py", "--tunnel"], ["--hosts", "a", "--", "job.py", "--tunnel"]),
        (["job.py", "--hosts", "a", "--", "--verbose"], ["job.py", "--hosts", "a", "--", "--verbose"]),
        (["-n", "2", "--", "job.py", "--hosts", "x", "y"], ["-n", "2", "--", "job.py", "--hosts", "x", "y"]),
    ],
)
def test_expand_hosts(argv, expected):
    assert expand_hosts(argv) == expected


def test_expand_hosts_leaves_the_scripts_arguments_alone_without_interspersed_options():
    argv = ["--hosts", "a", "job.py", "--hosts", "x", "y"]
    assert expand_hosts(argv, interspersed=False) == ["--hosts", "a", "job.py", "--hosts", "x", "y"]
    assert expand_hosts(argv) == ["--hosts", "a", "job.py", "--hosts", "x", "--hosts", "y"]
