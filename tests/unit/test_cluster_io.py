"""The rules behind a cluster run's files: what comes home, how cp reads its arguments,
and the head node's command. The copying itself runs against real nodes in
tests/integration/test_cluster_io.py.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from dockkit.cluster.copying import NodePath, parse_location
from dockkit.cluster.fetch import (_LIST_FILES, FetchPlan, over_limit_message, parse_listing, plan_fetch,
                                   previous_listing, save_listing, summary)
from dockkit.cluster.head import BRIDGE, OVERLAY, ROUTED, RunOptions, head_command
from dockkit.launch.warm import ROOT_MODULE, client_args
from dockkit.cluster.sync import pack
from dockkit.cluster.volumes import VolumeSpec, mounts, volume_name
from dockkit.errors import ConfigError


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "job.py").write_text("print('hi')\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "in.csv").write_text("a,b\n")
    (tmp_path / ".gitignore").write_text("*.log\nscratch/\n")
    return tmp_path


def test_the_upload_records_what_it_copied(project):
    bundle = pack(project)
    stat = (project / "data" / "in.csv").stat()
    assert bundle.manifest["data/in.csv"] == (stat.st_size, int(stat.st_mtime))
    assert set(bundle.manifest) == {"job.py", "data/in.csv", ".gitignore"}


def test_the_upload_makes_its_root_and_never_takes_the_state_directory(project, monkeypatch):
    import io
    import tarfile

    monkeypatch.setenv("DOCKKIT_STATE_DIR", str(project / "state"))
    (project / "state" / "clusters" / "c").mkdir(parents=True)
    (project / "state" / "clusters" / "c" / "id_ed25519").write_text("PRIVATE")
    bundle = pack(project)
    assert set(bundle.manifest) == {"job.py", "data/in.csv", ".gitignore"}
    members = tarfile.open(fileobj=io.BytesIO(bundle.tar)).getmembers()
    assert members[0].isdir() and members[0].name == project.as_posix().lstrip("/")  # made even if empty
    assert not any("id_ed25519" in m.name for m in members)


def test_new_and_changed_files_come_home_under_the_upload_ignore_rules(project):
    uploaded = pack(project).manifest
    on_head = dict(uploaded)
    on_head["results.csv"] = (10, 1)                                # new
    on_head["data/in.csv"] = (uploaded["data/in.csv"][0] + 5, 2)    # changed
    on_head["run.log"] = (3, 3)                                     # ignored by .gitignore
    on_head["scratch/tmp.bin"] = (4, 4)                             # in an ignored directory
    on_head["__pycache__/job.cpython-311.pyc"] = (5, 5)             # always skipped
    del on_head["job.py"]                                           # deleted by the run
    plan = plan_fetch(project, uploaded, on_head)
    assert plan.changed == [("data/in.csv", uploaded["data/in.csv"][0] + 5), ("results.csv", 10)]
    assert plan.deleted == ["job.py"]


def test_the_heads_listing_matches_the_uploads_manifest_whatever_the_names(project):
    # The head lists its copy with find (as it runs there); an untouched tree must read as
    # exactly what was uploaded, odd names included, and symlinks are left out of both.
    (project / "data" / "two words\nand a line.txt").write_text("x")
    (project / "link.py").symlink_to(project / "job.py")
    uploaded = pack(project).manifest
    listing = subprocess.run([arg.format(root=project) for arg in _LIST_FILES], check=True,
                             capture_output=True).stdout
    on_head = parse_listing(listing)
    assert "data/two words\nand a line.txt" in on_head and "link.py" not in on_head
    assert plan_fetch(project, uploaded, on_head) == FetchPlan()


def test_an_unchanged_tree_fetches_nothing(project):
    uploaded = pack(project).manifest
    assert plan_fetch(project, uploaded, dict(uploaded)) == FetchPlan()


def test_what_an_earlier_run_left_on_the_head_as_it_is_stays_there(project):
    uploaded = pack(project).manifest
    before = dict(uploaded, **{"kept.txt": (5, 1), "big.bin": (9, 1), "second.txt": (2, 1)})
    on_head = dict(before, **{"second.txt": (3, 2), "third.txt": (4, 2)})  # this run's outputs
    plan = plan_fetch(project, uploaded, on_head, before=before)
    assert plan.changed == [("second.txt", 3), ("third.txt", 4)]


def test_the_upload_s_virtualenvs_and_state_directory_never_come_home(project, monkeypatch):
    monkeypatch.setenv("DOCKKIT_STATE_DIR", str(project / "state"))
    uploaded = pack(project).manifest
    on_head = dict(uploaded, **{"env/pyvenv.cfg": (1, 1), "env/lib/x.py": (1, 1),
                                "state/clusters/c/id_ed25519": (1, 1), "out/envy.txt": (1, 1)})
    assert plan_fetch(project, uploaded, on_head).changed == [("out/envy.txt", 1)]


def test_a_kept_listing_serves_the_same_head_only(tmp_path):
    path = tmp_path / "listings" / "a.json"
    save_listing(path, "head-1", {"a b\nc.txt": (3, 4)})
    assert previous_listing(path, "head-1") == {"a b\nc.txt": (3, 4)}
    assert previous_listing(path, "head-2") == {}  # a new head: a fresh copy
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    path.write_text("{not json")
    assert previous_listing(path, "head-1") == {}
    assert previous_listing(tmp_path / "none.json", "head-1") == {}


def test_the_sdk_default_fetch_limit_is_the_cli_default():
    from dockkit.cli import run
    from dockkit.cluster.fetch import DEFAULT_FETCH_LIMIT

    (max_fetch,) = [p for p in run.params if p.name == "max_fetch"]
    assert DEFAULT_FETCH_LIMIT == max_fetch.default * 1_000_000


def test_the_summary_and_the_limit_message_name_the_files():
    plan = FetchPlan(changed=[("results.csv", 1_200_000), ("plots/a.png", 300_000), ("big.npy", 90_000_000)])
    assert summary(plan, shown=2) == "fetched 3 files (91.5 MB): results.csv, plots/a.png, …"
    message = over_limit_message(plan, 50_000_000)
    assert "91.5 MB is over the 50 MB limit" in message
    assert "largest: big.npy (90.0 MB), results.csv (1.2 MB), plots/a.png (0.3 MB)" in message
    assert "--max-fetch" in message and "dockkit cp node0:PATH ." in message


@pytest.mark.parametrize("text, expected", [
    ("node1:/data", NodePath("node1", "/data")),
    ("all:/out/", NodePath("all", "/out/")),  # the slash says "a directory"
    ("node1:/", NodePath("node1", "/")),
    ("node2:results", NodePath("node2", "/project/results")),
    ("./node1:x", Path("./node1:x")),
    ("/abs/file", Path("/abs/file")),
    ("plain.txt", Path("plain.txt")),
])
def test_cp_locations(text, expected):
    assert parse_location(text, cwd="/project") == expected


def test_a_local_file_whose_name_has_a_colon_stays_local(tmp_path, monkeypatch):
    path = tmp_path / "a:b"
    path.write_text("x")
    monkeypatch.chdir(tmp_path)
    assert parse_location("a:b") == Path("a:b")


def test_a_node_without_a_path_is_refused():
    with pytest.raises(ConfigError, match="give a path after the node name"):
        parse_location("node1:")


def test_the_head_command_carries_the_typed_options():
    options = RunOptions(env={"SEED": "1"}, prolog="ulimit -n 4096", max_retries=0, progress=True)
    command = head_command(["node0*2", "node1*2"], "/p/job.py", ["--size", "3"], workers=4, options=options,
                           network=ROUTED)
    warm_root = ["python", *client_args(ROOT_MODULE)]  # python -m dockkit, forked by the head's warm server
    assert command[:len(warm_root)] == warm_root
    command = command[len(warm_root):]
    assert command[:3] == ["--hosts", "node0*2", "node1*2"]
    assert command[-3:] == ["/p/job.py", "--size", "3"]
    rest = command[3:-3]
    assert rest[0] == "--" and "--tunnel" in rest and "--no-host-check" in rest
    assert "--no-encrypt" not in rest  # between engines the traffic is encrypted
    assert ["--env", "SEED=1"] == rest[rest.index("--env"):rest.index("--env") + 2]
    assert ["--max-retries", "0"] == rest[rest.index("--max-retries"):rest.index("--max-retries") + 2]
    assert "--progress" in rest and "--debug" not in rest and "--allow-missing-hosts" not in rest
    assert rest[-2:] == ["-n", "4"]


def test_volume_specs(tmp_path):
    spec = VolumeSpec.parse(f"{tmp_path}:/data:ro")
    assert (spec.host_path, spec.node_path, spec.read_only) == (str(tmp_path), "/data", True)
    assert str(spec) == f"{tmp_path}:/data:ro"
    assert not VolumeSpec.parse(f"{tmp_path}:/data/").read_only
    assert mounts([spec], cluster="c", local_engine=True) == {str(tmp_path): {"bind": "/data", "mode": "ro"}}
    remote = mounts([VolumeSpec.parse(f"{tmp_path}:/data")], cluster="c", local_engine=False)
    assert remote == {volume_name("c", "/data"): {"bind": "/data", "mode": "rw"}}
    assert volume_name("c", "/data").startswith("dockkit-c-data-")
    assert volume_name("c", "/data") != volume_name("c", "/data-")


@pytest.mark.parametrize("text, message", [
    ("/only-one-part", "use HOST_PATH:NODE_PATH"),
    ("{tmp}:/data:rx", "use HOST_PATH:NODE_PATH"),
    ("{tmp}:data", "must be absolute"),
])
def test_bad_volume_specs_say_what_to_do(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        VolumeSpec.parse(text.format(tmp=tmp_path))


def test_a_bind_mount_needs_its_directory_here_and_a_remote_volume_does_not(tmp_path):
    spec = VolumeSpec.parse(f"{tmp_path}/missing:/data")  # parsed: a remote engine may be all that uses it
    assert mounts([spec], cluster="c", local_engine=False) == {volume_name("c", "/data"): {"bind": "/data", "mode": "rw"}}
    with pytest.raises(ConfigError, match=r"missing is not a directory here, where this machine's engine mounts it"):
        mounts([spec], cluster="c", local_engine=True)


def test_read_only_is_refused_for_a_remote_engine_volume(tmp_path):
    with pytest.raises(ConfigError, match="Drop ':ro'"):
        mounts([VolumeSpec.parse(f"{tmp_path}:/data:ro")], cluster="c", local_engine=False)


def test_on_one_engine_workers_connect_straight_to_the_head():
    command = head_command(["node0", "node1"], "/p/job.py", [], workers=None, options=RunOptions(),
                           network=BRIDGE)
    rest = command[command.index("--"):]
    assert "--tunnel" not in rest
    assert rest[rest.index("--external-hostname") + 1] == "node0" and "--no-encrypt" in rest


def test_on_a_swarm_overlay_workers_connect_straight_to_the_head_encrypted():
    command = head_command(["node0", "node1"], "/p/job.py", [], workers=None, options=RunOptions(),
                           network=OVERLAY)
    rest = command[command.index("--"):]
    assert "--tunnel" not in rest and "--no-encrypt" not in rest  # the overlay crosses machines
    assert rest[rest.index("--external-hostname") + 1] == "node0"


def test_an_unknown_network_kind_is_refused():
    with pytest.raises(ValueError, match="network must be one of"):
        head_command(["node0"], "/p/job.py", [], workers=None, options=RunOptions(), network="mesh")


@pytest.mark.parametrize("source, destination", [("a.txt", "b.txt"), ("node0:/a", "node1:/b")])
def test_cp_needs_one_node_side_and_says_so_in_one_line(tmp_path, source, destination):
    import os
    import sys

    (tmp_path / "a.txt").write_text("a")
    result = subprocess.run([sys.executable, "-m", "dockkit.cli", "cp", source, destination], cwd=tmp_path,
                            env=dict(os.environ, DOCKKIT_STATE_DIR=str(tmp_path / "state")),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"dockkit: error: cp {source} {destination}: one side must be NODE:PATH and the other a path "
        "here (node to node: copy through this machine)"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
