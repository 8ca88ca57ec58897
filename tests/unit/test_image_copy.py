"""Copying the worker image to another Docker Engine: what it says while and after, without an engine."""

from __future__ import annotations

import docker.errors
import pytest

from dockkit.cluster.image import CopyMeter, copy_done_line, copy_image, copy_progress_line
from dockkit.errors import ImageError

TAG = "dockkit-worker:3f9a0c1b2d4e"
URL = "tcp://10.0.0.2:2375"


def test_the_lines_name_the_engine_the_megabytes_and_the_seconds():
    assert copy_progress_line(TAG, URL, 240_049_152) == f"dockkit: copying {TAG} to {URL}: 240.0 MB sent"
    assert copy_done_line(TAG, URL, 612_312_064, 14.249) == f"dockkit: copied {TAG} to {URL}: 612.3 MB in 14.2 s"


def test_the_meter_passes_chunks_unchanged_and_reports_every_few_seconds():
    ticks = iter([0.0, 1.0, 5.0, 6.0, 9.9, 10.0, 12.5])  # made, then one tick after each chunk
    reports = []
    meter = CopyMeter(reports.append, every=5.0, clock=lambda: next(ticks))
    chunks = [b"a" * 1000, b"b" * 2000, b"c" * 3000, b"d" * 4000, b"e" * 5000]
    assert list(meter.count(chunks)) == chunks
    assert reports == [3000, 15000]  # at 5.0 s, then 5 s after that (10.0), not at 6.0 or 9.9
    assert meter.sent == 15000
    assert meter.seconds() == 12.5


def test_a_short_copy_reports_nothing_until_its_end():
    reports = []
    meter = CopyMeter(reports.append, every=5.0, clock=lambda: 0.0)
    assert b"".join(meter.count([b"x" * 10, b"y" * 20])) == b"x" * 10 + b"y" * 20
    assert (reports, meter.sent) == ([], 30)


class _Engine:
    """The few calls of a DockerClient that copy_image makes: ``images.get``, ``api.get_image``
    and ``api.load_image`` (and ``api.base_url``, which names an engine docker_client did not make)."""

    def __init__(self, url: str, store: dict[str, bytes] | None = None, refuses: str = ""):
        self.store, self.refuses = dict(store or {}), refuses
        self.api = self.images = self
        self.base_url = url

    def get(self, tag):
        if tag not in self.store:
            raise docker.errors.ImageNotFound(f"No such image: {tag}")
        return tag

    def get_image(self, tag):
        data = self.store[tag]
        yield from (data[:3], data[3:])

    def load_image(self, data, quiet=None):
        received = b"".join(data)
        if self.refuses:
            yield {"errorDetail": {"message": self.refuses}, "error": self.refuses}
            return
        self.store[TAG] = received
        yield {"stream": f"Loaded image: {TAG}\n"}


def test_a_copy_names_the_target_engine_at_its_start_and_sums_up_at_its_end():
    source, target = _Engine("unix:///var/run/docker.sock", {TAG: b"0123456789"}), _Engine(URL)
    messages = []
    copy_image(source, target, TAG, log=messages.append)
    assert target.store[TAG] == b"0123456789"
    assert messages[0] == f"dockkit: copying {TAG} to the Docker Engine at {URL}"
    assert messages[1].startswith(f"dockkit: copied {TAG} to {URL}: 0.0 MB in ") and len(messages) == 2


def test_an_engine_that_has_the_image_gets_no_copy_and_no_line():
    source, target = _Engine("unix:///var/run/docker.sock", {TAG: b"x"}), _Engine(URL, {TAG: b"x"})
    messages = []
    copy_image(source, target, TAG, log=messages.append)
    assert messages == []


def test_a_load_the_engine_refuses_is_an_image_error_naming_it():
    source = _Engine("unix:///var/run/docker.sock", {TAG: b"x"})
    target = _Engine(URL, refuses="no space left on device")
    with pytest.raises(ImageError, match=f"^copying image {TAG} to the Docker Engine at {URL} failed: "
                                         "no space left on device$"):
        copy_image(source, target, TAG, log=lambda message: None)
