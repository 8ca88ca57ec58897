"""A cluster run's working directory travelling with each agent: the configuration that
announces it, the agent unpacking it, and the options that carry it to the head's root."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile

import pytest

from dockkit.cluster.head import BRIDGE, RunOptions, head_command
from dockkit.cluster.sync import pack
from dockkit.launch import agent as agent_module
from dockkit.launch.agent import unpack_files, unpack_tar
from dockkit.runtime.protocol import AgentConfig, WorkerConfig


def _config(files: int = 0) -> AgentConfig:
    worker = WorkerConfig(address="tcp://127.0.0.1:1", secret="s", workers=1, heartbeat_timeout=10.0)
    return AgentConfig(worker, identity="run/0/agent", workers=[("h:w0", "run/0/w0")], files=files)


def test_the_configuration_says_how_many_bytes_of_files_follow():
    assert AgentConfig.from_json(_config(files=1234).to_json()).files == 1234
    line = json.loads(_config().to_json())
    del line["files"]  # a line from a root that ships no files
    assert AgentConfig.from_json(json.dumps(line)).files == 0


@pytest.mark.parametrize("compress", [False, True], ids=["tar", "gzip"])
def test_unpacking_puts_back_every_file_with_its_content_and_time(tmp_path, compress):
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "job.py").write_text("print('hi')\n")
    (project / "data" / "table.csv").write_bytes(b"a,b\n1,2\n")
    os.utime(project / "job.py", (1_600_000_000, 1_600_000_000))
    bundle = pack(project)
    for path in (project / "job.py", project / "data" / "table.csv"):
        path.unlink()
    sent = gzip.compress(bundle.tar, compresslevel=1) if compress else bundle.tar
    unpack_files(io.BytesIO(sent + b"the lifeline's bytes"), len(sent))
    assert (project / "job.py").read_text() == "print('hi')\n"
    assert (project / "data" / "table.csv").read_bytes() == b"a,b\n1,2\n"
    assert int((project / "job.py").stat().st_mtime) == 1_600_000_000


def tar_of(files: dict) -> bytes:
    """A tar of ``{path: (content, mtime, mode)}``, its members named from ``/`` as a bundle's are."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path, (content, mtime, mode) in files.items():
            member = tarfile.TarInfo(str(path).lstrip("/"))
            member.size, member.mtime, member.mode = len(content), mtime, mode
            tar.addfile(member, io.BytesIO(content))
    return buffer.getvalue()


def test_unpacking_again_writes_only_the_files_that_changed(tmp_path):
    # A run's directory is unpacked on every node at every run: mostly files that are there
    # already, with the size, time and permissions the bundle gives them.
    node = tmp_path / "node"
    node.mkdir()
    on_node = {"same.py": (b"THERE", 1_600_000_000, 0o644), "bigger.py": (b"old", 1_600_000_000, 0o644),
               "newer.py": (b"THERE", 1_600_000_000, 0o644), "tool.sh": (b"THERE", 1_600_000_000, 0o644)}
    for name, (content, mtime, mode) in on_node.items():
        (node / name).write_bytes(content)
        (node / name).chmod(mode)
        os.utime(node / name, (mtime, mtime))
    sent = {"same.py": (b"HERE!", 1_600_000_000, 0o644), "bigger.py": (b"longer", 1_600_000_000, 0o644),
            "newer.py": (b"HERE!", 1_700_000_000, 0o644), "tool.sh": (b"HERE!", 1_600_000_000, 0o755),
            "new.py": (b"HERE!", 1_600_000_000, 0o644)}
    same_before = (node / "same.py").stat()
    unpack_tar(tar_of({node / name: file for name, file in sent.items()}))
    # Same size, time and permissions: taken as unchanged (as rsync's quick check does), not written.
    assert (node / "same.py").read_bytes() == b"THERE"
    assert (node / "same.py").stat().st_ctime_ns == same_before.st_ctime_ns
    for name in ("bigger.py", "newer.py", "tool.sh", "new.py"):
        content, mtime, mode = sent[name]
        found = (node / name).stat()
        assert ((node / name).read_bytes(), int(found.st_mtime), found.st_mode & 0o777) == (content, mtime, mode), name


@pytest.mark.parametrize("data_filter", [True, False], ids=["data-filter", "no-filter"])
def test_unpacked_files_are_this_users_whoever_owned_them_where_they_were_packed(tmp_path, monkeypatch,
                                                                                 data_filter):
    if not data_filter:  # a Python before tarfile's extraction filters, as some images have
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    target = tmp_path / "project" / "job.py"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        member = tarfile.TarInfo(str(target).lstrip("/"))
        member.size, member.uid, member.gid, member.uname, member.gname = 3, 4321, 4321, "someone", "staff"
        tar.addfile(member, io.BytesIO(b"x=1"))
    unpack_tar(buffer.getvalue())
    assert target.read_bytes() == b"x=1"
    assert (target.stat().st_uid, target.stat().st_gid) == (os.getuid(), os.getgid())


def test_a_tar_unpacked_before_and_still_in_place_is_not_even_read_again(tmp_path, monkeypatch):
    # The same project run again (a sweep's next point): its node keeps a record of the last tar.
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "job.py").write_text("print('hi')\n")
    (project / "data" / "table.csv").write_text("a,b\n")
    tar = pack(project).tar
    record = tmp_path / "run" / "unpacked.json"
    unpack_tar(tar, record=str(record))
    assert json.loads(record.read_text())["digest"] == hashlib.sha256(tar).hexdigest()
    opened = []
    read_tar = agent_module._OwnFiles.open
    monkeypatch.setattr(agent_module._OwnFiles, "open", lambda *a, **k: opened.append(1) or read_tar(*a, **k))

    unpack_tar(tar, record=str(record))
    assert opened == []  # everything as the record says: the tar is not opened
    packed_time = (project / "job.py").stat().st_mtime
    os.utime(project / "job.py", (1, 1))  # a run changed it since
    unpack_tar(tar, record=str(record))
    assert opened == [1] and (project / "job.py").stat().st_mtime == packed_time
    shutil.rmtree(project / "data")  # a run removed a directory
    unpack_tar(tar, record=str(record))
    assert len(opened) == 2 and (project / "data" / "table.csv").read_text() == "a,b\n"
    record.write_text("{not json")  # a record cut short: the tar is unpacked, the record made again
    unpack_tar(tar, record=str(record))
    assert len(opened) == 3 and json.loads(record.read_text())["digest"] == hashlib.sha256(tar).hexdigest()
    unpack_tar(tar, record=str(record))
    assert len(opened) == 3


def test_a_stream_that_ends_early_is_an_error_that_says_how_much_came():
    with pytest.raises(OSError, match="stdin ended after 3 of the 10 bytes"):
        unpack_files(io.BytesIO(b"abc"), 10)


def test_an_agent_that_cannot_unpack_says_so_and_exits_2():
    garbage = b"not a tar at all" * 64
    agent = subprocess.run([sys.executable, "-m", "dockkit.launch.agent"],
                           input=_config(files=len(garbage)).to_json() + garbage,
                           capture_output=True, timeout=60)
    assert agent.returncode == 2
    assert b"could not unpack the run's files" in agent.stderr, agent.stderr


def test_the_head_command_announces_the_files_on_its_stdin():
    command = head_command(["node0*2", "node1*2"], "/p/job.py", [], workers=4, options=RunOptions(),
                           network=BRIDGE, files=4096)
    assert command[command.index("--files-on-stdin") + 1] == "4096"
    assert command[-3:] == ["-n", "4", "/p/job.py"]
    without = head_command(["node0*2"], "/p/job.py", [], workers=None, options=RunOptions(), network=BRIDGE)
    assert "--files-on-stdin" not in without


def test_files_on_stdin_without_ssh_hosts_is_refused(tmp_path):
    (tmp_path / "job.py").write_text("print('ran')\n")
    result = subprocess.run([sys.executable, "-m", "dockkit", "--files-on-stdin", "10", "job.py"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "DOCKKIT_STATE_DIR": str(tmp_path / "state")})
    assert result.returncode == 2 and "ran" not in result.stdout
    assert "--files-on-stdin is for runs over SSH hosts" in result.stderr, result.stderr


def _root_with_files(tmp_path, files: bytes, workdir) -> subprocess.CompletedProcess:
    """A cluster head's root as the cluster starts it, given ``files`` on its stdin; its one
    host does not exist, so it goes no further than the files and the directory."""
    return subprocess.run([sys.executable, "-m", "dockkit", "--hosts", "no-such-host.invalid", "--",
                           "--files-on-stdin", str(len(files)), "--workdir", str(workdir), "job.py"],
                          input=files, cwd="/", capture_output=True, text=False, timeout=60,
                          env={**os.environ, "DOCKKIT_STATE_DIR": str(tmp_path / "state")})


def test_the_heads_root_unpacks_the_files_and_runs_in_the_directory_they_bring(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "job.py").write_text("import os\nprint('ran in', os.getcwd())\n")
    files = gzip.compress(pack(project).tar)
    (project / "job.py").unlink()
    project.rmdir()
    root = _root_with_files(tmp_path, files, project)
    assert (project / "job.py").is_file()
    # job.py, named relative to the directory the files made, ran there (it needs no worker)
    assert f"ran in {project}".encode() in root.stdout.splitlines(), (root.stdout, root.stderr)


def test_files_the_heads_root_cannot_unpack_are_one_clear_error(tmp_path):
    root = _root_with_files(tmp_path, b"not a tar at all" * 64, tmp_path)
    assert root.returncode != 0
    assert b"could not unpack the run's files here" in root.stderr, root.stderr
