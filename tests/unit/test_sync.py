"""Packing the working directory for a cluster run: the upload limit, in the CLI's units."""

from __future__ import annotations

import pytest

from dockkit.cluster.sync import DEFAULT_LIMIT, pack
from dockkit.errors import ConfigError

MB = 1_000_000  # what `--max-upload MB` and the messages count in


def test_the_sdk_default_limit_is_the_cli_default():
    from dockkit.cli import run

    (max_upload,) = [p for p in run.params if p.name == "max_upload"]
    assert DEFAULT_LIMIT == max_upload.default * MB == 200 * MB


def test_a_tree_just_over_200_mb_is_refused_by_default(tmp_path):
    with open(tmp_path / "data.bin", "wb") as handle:  # sparse: no disk space used
        handle.truncate(200 * MB + 1)
    (tmp_path / "job.py").write_text("print('hi')\n")
    with pytest.raises(ConfigError, match=r"holds 200\.0 MB to copy, over the 200 MB limit .*data\.bin"):
        pack(tmp_path)


def test_a_tree_under_the_limit_is_packed(tmp_path):
    (tmp_path / "job.py").write_text("print('hi')\n")
    bundle = pack(tmp_path, limit=12)
    assert (bundle.files, bundle.size) == (1, 12)
