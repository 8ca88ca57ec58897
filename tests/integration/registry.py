"""A container registry of the tests' own: Debian's ``docker-registry`` (Distribution 2.x).

Built offline from the host's apt sources like the other beds' images, started on docker0,
where the engine bed's engines reach it over plain HTTP (they trust private addresses as
insecure registries, see :mod:`tests.integration.engines`). Removed at the end.
"""

from __future__ import annotations

import contextlib
import time
import urllib.request
from dataclasses import dataclass

import docker
import docker.errors

from dockkit.cluster.base_image import build_debian_image, image_exists
from dockkit.cluster.engine import LABEL
from tests.integration.beds import Bed
from tests.integration.engines import RUN_LABEL

REGISTRY_IMAGE = "dockkit-test-registry:bookworm"
PORT = 5000
READY_TIMEOUT = 60
# Debian's own config asks for htpasswd logins; the tests' registry is open, on docker0 only.
_CONFIG = ("version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /var/lib/docker-registry\n"
           f"http:\n  addr: :{PORT}\n")


@dataclass
class RegistryBed(Bed):
    """``with RegistryBed(client, run_id) as registry:`` ``registry.address`` is ``host:port``."""

    docker: docker.DockerClient
    run_id: str
    log: callable = print
    container: object = None
    address: str = ""

    def _start(self) -> None:
        if not image_exists(self.docker, REGISTRY_IMAGE):
            build_debian_image(self.docker, REGISTRY_IMAGE, ("docker-registry", "ca-certificates"), log=self.log)
        self.container = self.docker.containers.run(
            REGISTRY_IMAGE, ["sh", "-c", f"printf '{_CONFIG}' > /tmp/config.yml && "
                                         "exec docker-registry serve /tmp/config.yml"], detach=True,
            name=f"dockkit-test-{self.run_id}-registry", labels={LABEL: "true", RUN_LABEL: self.run_id})
        self.container.reload()
        self.address = f"{self.container.attrs['NetworkSettings']['IPAddress']}:{PORT}"
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            try:
                with urllib.request.urlopen(f"http://{self.address}/v2/", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            self.container.reload()
            if self.container.status != "running" or time.monotonic() > deadline:
                logs = self.container.logs(tail=20).decode(errors="replace")
                raise RuntimeError(f"the test registry did not answer on {self.address}:\n{logs}")
            time.sleep(0.3)

    def repositories(self) -> list[str]:
        """What the registry holds (its catalog)."""
        import json

        with urllib.request.urlopen(f"http://{self.address}/v2/_catalog", timeout=5) as answer:
            return json.load(answer)["repositories"]

    def close(self) -> None:
        if self.container is not None:
            with contextlib.suppress(docker.errors.APIError):
                self.container.remove(force=True, v=True)
            self.container = None
