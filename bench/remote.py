"""Remote transfers: lakelet push/pull against ``dvc push``/``dvc pull`` and plain s3fs, on one S3.

Cases, each the median of N repetitions (default 3), every repetition into fresh prefixes
of the same moto S3 server (tests/servers.py ``moto_s3()``, bucket "lakelet-tests"):

  a. a directory of 2,000 files of 4 KiB
  b. a directory holding one 512 MiB file

Tools, on the same source directory:

  lakelet  push: ``upload = "deferred"``, ``Lake.add`` (not timed), then ``Lake.push()`` timed.
           pull: a fresh second lake on the same remote, ``Lake.pull()`` timed (log read,
           every object downloaded, hashed and fsynced into the local store).
  dvc      push: ``dvc add`` (not timed), then ``dvc push`` timed. pull: a fresh clone (a new
           directory with ``.dvc/config`` and the ``.dvc`` file, no cache), ``dvc pull`` timed
           (download into .dvc/cache, then checkout: a second copy into the workspace).
           DVC 3.67 from bench/.venv-dvc (with dvc-s3), DVC_NO_ANALYTICS=1, ``cache.type copy``,
           and ``jobs`` set to lakelet's ``transfers`` (16) so both run as many requests at once.
  s3fs     ``fs.put(dir, remote, recursive=True)`` and, with a fresh S3FileSystem,
           ``fs.get(remote, dir, recursive=True)``: the floor for moving the bytes at all.

Every timed step starts right after an ``os.sync()``. The moto server runs in a child
process (started through ``tests.servers.moto_s3()``), so that its request handling does
not share a GIL with the in-process tools (lakelet, s3fs) while DVC, a subprocess, would
have a core to itself. "requests" counts the HTTP requests the server logged during the
step; "moto CPU s" is the CPU time the server process spent on them, "client CPU s" the
CPU time of the tool (this process for lakelet and s3fs, the dvc subprocess for DVC). The
machine has 2 cores: client and server share them.

moto is not S3: it serializes much of its request handling (~6-8 ms per request here)
and has no network latency, so the small-file case measures how many requests each tool
makes (and how cheaply the client issues them) far more than bandwidth.

Targets (from the issue): small files, lakelet >= 3x faster than DVC for push and pull;
large file, lakelet >= 0.9x the throughput of plain s3fs.

On a shared 2-core machine the 512 MiB rows vary by +-15% from rep to rep: use more
repetitions (``--case large --reps 7``) before reading a 0.9x target off them.

    .venv/bin/python bench/remote.py             # 2,000 x 4 KiB and 512 MiB, 3 reps (~10 min)
    .venv/bin/python bench/remote.py --quick     # 200 files, 64 MiB, 1 rep
    .venv/bin/python bench/remote.py --no-dvc    # without the DVC rows
    .venv/bin/python bench/remote.py --case large --reps 5   # one case only
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from _common import BENCH_DIR, MB, REPO, MiB, load_note, machine, median, scratch, table, write_random_file

import lakelet
from lakelet.core._environ import patched_environ

DVC = BENCH_DIR / ".venv-dvc" / "bin" / "dvc"
BUCKET = "lakelet-tests"
TRANSFERS = 16  # lakelet's default `transfers`; DVC gets the same `jobs`

LAKELET, DVC_ROW, S3FS = "lakelet", "dvc", "s3fs"
PUSH, PULL = "push", "pull"

# The child that holds tests.servers.moto_s3() open: prints the store's environment, then
# waits for its stdin to close. werkzeug logs one line per request on stderr (to a file).
_SERVER = f"""
import json, sys
sys.path.insert(0, {os.fspath(REPO)!r})
from tests import servers
with servers.moto_s3() as store:
    print(json.dumps(store.env), flush=True)
    sys.stdin.read()
"""
_REQUEST_LINE = re.compile(rb'"(?:\x1b\[[0-9;]*m)*(GET|PUT|POST|HEAD|DELETE) ')  # colours for 206/404


class MotoServer:
    """moto's ThreadedMotoServer in a child process, with a request log and a CPU clock."""

    def __init__(self, work: Path) -> None:
        self.log = work / "moto.log"
        self._log_file = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-c", _SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            cwd=REPO,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the moto server did not start: see {self.log}")
        self.env: dict[str, str] = json.loads(line)
        self.endpoint = self.env["AWS_ENDPOINT_URL"]

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()  # leaves the `with moto_s3()`: server.stop()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log_file.close()

    def mark(self) -> tuple[int, float]:
        return self.log.stat().st_size, self.cpu_seconds()

    def since(self, mark: tuple[int, float]) -> tuple[int, float]:
        """(requests logged, server CPU seconds) since ``mark``."""
        time.sleep(0.05)  # let the handler threads finish writing their log lines
        with open(self.log, "rb") as f:
            f.seek(mark[0])
            requests = len(_REQUEST_LINE.findall(f.read()))
        return requests, self.cpu_seconds() - mark[1]

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


@dataclass
class Row:
    case: str
    tool: str
    op: str
    size: int
    seconds: list[float] = field(default_factory=list)
    requests: list[int] = field(default_factory=list)
    server_cpu: list[float] = field(default_factory=list)
    client_cpu: list[float] = field(default_factory=list)

    @property
    def median_s(self) -> float:
        return median(self.seconds)

    @property
    def mbps(self) -> float:
        return self.size / self.median_s / MB


def sh(*args: str | os.PathLike[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
    proc = subprocess.run(
        [os.fspath(a) for a in args], cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    if proc.returncode != 0:
        sys.exit(f"{' '.join(map(str, args))} failed ({proc.returncode}): {proc.stderr.decode()[-2000:]}")


def client_cpu() -> float:
    """CPU seconds of this process and of its reaped children (the dvc commands; the moto
    server is a child too, but is not reaped until the end, so it is not counted)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def tree(path: Path) -> tuple[int, int]:
    """(files, bytes) under ``path``, ignoring DVC's and lakelet's bookkeeping."""
    files = size = 0
    for dirpath, _dirs, names in os.walk(path):
        for n in names:
            files += 1
            size += os.path.getsize(os.path.join(dirpath, n))
    return files, size


class Bench:
    def __init__(self, server: MotoServer, work: Path, reps: int, use_dvc: bool) -> None:
        import s3fs

        self.server = server
        self.work = work
        self.reps = reps
        self.use_dvc = use_dvc
        self.admin = s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False)
        self.dvc_env = {
            **os.environ,
            "DVC_NO_ANALYTICS": "1",
            "DVC_SITE_CACHE_DIR": os.fspath(work / "dvc-site-cache"),
        }

    def measure(self, row: Row, step: Callable[[], object]) -> None:
        os.sync()  # nobody pays for the dirty pages of the previous step
        mark = self.server.mark()
        cpu0 = client_cpu()
        t0 = time.perf_counter()
        step()
        row.seconds.append(time.perf_counter() - t0)
        row.client_cpu.append(client_cpu() - cpu0)
        requests, cpu = self.server.since(mark)
        row.requests.append(requests)
        row.server_cpu.append(cpu)

    def drop(self, prefix: str) -> None:
        """Delete a prefix from the bucket, so that moto does not keep every rep in memory."""
        with contextlib.suppress(FileNotFoundError):
            self.admin.rm(f"{BUCKET}/{prefix}", recursive=True)

    def run_case(self, case: str, src: Path) -> list[Row]:
        files, size = tree(src)
        rows = {
            (tool, op): Row(case, tool, op, size)
            for tool in (LAKELET, *([DVC_ROW] if self.use_dvc else []), S3FS)
            for op in (PUSH, PULL)
        }
        for rep in range(self.reps):
            tag = f"{case.split()[0]}-{rep}-{os.getpid()}"
            self.lakelet(tag, src, files, size, rows[LAKELET, PUSH], rows[LAKELET, PULL])
            if self.use_dvc:
                self.dvc(tag, src, files, size, rows[DVC_ROW, PUSH], rows[DVC_ROW, PULL])
            self.s3fs(tag, src, files, size, rows[S3FS, PUSH], rows[S3FS, PULL])
            print(
                f"  {case} rep {rep + 1}/{self.reps}: "
                + ", ".join(f"{tool} {op} {r.seconds[-1]:.2f} s" for (tool, op), r in rows.items()),
                flush=True,
            )
        return list(rows.values())

    def lakelet(self, tag: str, src: Path, files: int, size: int, push: Row, pull: Row) -> None:
        prefix = f"lakelet-{tag}"
        url = f"s3://{BUCKET}/{prefix}"
        with scratch("lakelet-a", self.work) as a, scratch("lakelet-b", self.work) as b:
            lakelet.init(a, remote=url).close()
            config = a / "lakelet.toml"
            text = config.read_text()
            assert 'upload = "write-through"' in text, "lakelet.toml changed: update bench/remote.py"
            config.write_text(text.replace('upload = "write-through"', 'upload = "deferred"'))
            lake = lakelet.open(a)
            lake.add(src, "data")
            report = None

            def do_push() -> None:
                nonlocal report
                report = lake.push()

            self.measure(push, do_push)
            assert report is not None and report.names == files and not report.conflicts, report
            lake.close()

            other = lakelet.init(b, remote=url)
            pulled: list = []
            self.measure(pull, lambda: pulled.extend(other.pull()))
            assert len(pulled) == files, (len(pulled), files)
            assert tree(b / "objects")[1] >= size
            other.close()
        self.drop(prefix)

    def dvc(self, tag: str, src: Path, files: int, size: int, push: Row, pull: Row) -> None:
        prefix = f"dvc-{tag}"
        env = self.dvc_env
        with scratch("dvc-repo", self.work) as repo, scratch("dvc-clone", self.work) as clone:
            sh(DVC, "init", "--no-scm", "-q", cwd=repo, env=env)
            sh(DVC, "config", "cache.type", "copy", cwd=repo, env=env)
            sh(DVC, "remote", "add", "-d", "store", f"s3://{BUCKET}/{prefix}", cwd=repo, env=env)
            sh(DVC, "remote", "modify", "store", "endpointurl", self.server.endpoint, cwd=repo, env=env)
            sh(DVC, "remote", "modify", "store", "jobs", str(TRANSFERS), cwd=repo, env=env)
            sh("cp", "-r", src, repo / "data")
            sh(DVC, "add", "-q", "data", cwd=repo, env=env)
            self.measure(push, lambda: sh(DVC, "push", "-q", cwd=repo, env=env))

            # a fresh clone: the configuration and the .dvc file, no cache, no workspace data
            sh(DVC, "init", "--no-scm", "-q", cwd=clone, env=env)
            shutil.copy(repo / ".dvc" / "config", clone / ".dvc" / "config")
            shutil.copy(repo / "data.dvc", clone / "data.dvc")
            self.measure(pull, lambda: sh(DVC, "pull", "-q", cwd=clone, env=env))
            assert tree(clone / "data") == (files, size), (tree(clone / "data"), files, size)
        self.drop(prefix)

    def s3fs(self, tag: str, src: Path, files: int, size: int, push: Row, pull: Row) -> None:
        import s3fs

        remote = f"{BUCKET}/s3fs-{tag}"
        with scratch("s3fs-get", self.work) as dest:
            fs = s3fs.S3FileSystem(skip_instance_cache=True)
            self.measure(push, lambda: fs.put(os.fspath(src), remote, recursive=True))
            fs = s3fs.S3FileSystem(skip_instance_cache=True)  # nothing cached from the put
            self.measure(pull, lambda: fs.get(remote, os.fspath(dest / "data"), recursive=True))
            assert tree(dest / "data") == (files, size), (tree(dest / "data"), files, size)
        self.drop(f"s3fs-{tag}")


def ratio_cell(rows: dict[tuple[str, str, str], Row], row: Row) -> str:
    if row.tool == LAKELET:
        return "-"
    ours = rows[row.case, LAKELET, row.op]
    return f"{row.median_s / ours.median_s:.2f}x"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="200 files, 64 MiB, 1 rep")
    ap.add_argument("--reps", type=int, help="repetitions per measurement (default 3, --quick 1)")
    ap.add_argument("--no-dvc", action="store_true", help="skip the DVC rows")
    ap.add_argument("--case", choices=("small", "large", "both"), default="both", help="which case to run")
    args = ap.parse_args()
    n_files = 200 if args.quick else 2000
    big = (64 if args.quick else 512) * MiB
    reps = args.reps or (1 if args.quick else 3)
    use_dvc = not args.no_dvc and DVC.exists()

    small_case = f"a. {n_files:,} x 4 KiB"
    big_case = f"b. 1 x {big // MiB} MiB"
    print(f"# remote transfers: lakelet vs dvc vs s3fs on moto S3, median of {reps}")
    print(f"# {machine()}")
    print(f"# {load_note()}")
    if use_dvc:
        version = subprocess.run([DVC, "--version"], capture_output=True, text=True).stdout.strip()
        print(f"# dvc {version} (dvc-s3, jobs {TRANSFERS}, cache.type copy), lakelet transfers {TRANSFERS}")
    else:
        print("# dvc skipped" if args.no_dvc else f"# dvc not found at {DVC}: skipped")

    with scratch("remote") as work:
        src_small, src_big = work / "src-small", work / "src-big"
        src_small.mkdir()
        for i in range(n_files):
            (src_small / f"part-{i:05d}.bin").write_bytes(os.urandom(4096))
        src_big.mkdir()
        if args.case != "small":
            write_random_file(src_big / "big.bin", big)
        os.sync()

        server = MotoServer(work)
        try:
            with patched_environ(server.env):
                bench = Bench(server, work, reps, use_dvc)
                rows = []
                if args.case in ("small", "both"):
                    rows += bench.run_case(small_case, src_small)
                if args.case in ("large", "both"):
                    rows += bench.run_case(big_case, src_big)
        finally:
            server.stop()

    by = {(r.case, r.tool, r.op): r for r in rows}
    print()
    print(
        table(
            [
                "case",
                "tool",
                "op",
                "median s",
                "MB/s",
                "requests",
                "client CPU s",
                "moto CPU s",
                "peer s / lakelet s",
            ],
            [
                (
                    r.case,
                    r.tool,
                    r.op,
                    f"{r.median_s:.3f}",
                    f"{r.mbps:.1f}",
                    f"{median(r.requests):.0f}",
                    f"{median(r.client_cpu):.2f}",
                    f"{median(r.server_cpu):.2f}",
                    ratio_cell(by, r),
                )
                for r in sorted(rows, key=lambda r: (r.case, r.op, r.tool != LAKELET, r.tool))
            ],
        )
    )
    per_request = [
        median(r.seconds) / median(r.requests) * 1000 for r in rows if r.case == small_case and r.requests[0]
    ]
    if per_request:
        print(
            f"\nmoto serves about one request per {min(per_request):.1f}-{max(per_request):.1f} ms here "
            "(wall time / requests, small-file rows): case a. measures request counts and client "
            "overhead per request much more than bandwidth. Real S3 answers requests in parallel, "
            "with network latency."
        )

    print("\nTargets:")
    for op in (PUSH, PULL) if args.case != "large" else ():
        ours = by[small_case, LAKELET, op]
        if use_dvc:
            peer = by[small_case, DVC_ROW, op]
            speedup = peer.median_s / ours.median_s
            print(
                f"- {verdict(speedup >= 3)} small files {op}: lakelet {ours.median_s:.2f} s vs dvc "
                f"{peer.median_s:.2f} s = {speedup:.2f}x faster; target >= 3x"
            )
        else:
            print(f"- n/a small files {op}: dvc was not run")
    for op in (PUSH, PULL) if args.case != "small" else ():
        ours, peer = by[big_case, LAKELET, op], by[big_case, S3FS, op]
        share = ours.mbps / peer.mbps
        print(
            f"- {verdict(share >= 0.9)} large file {op}: lakelet {ours.mbps:.0f} MB/s vs s3fs "
            f"{peer.mbps:.0f} MB/s = {share:.2f}x; target >= 0.9x"
        )


if __name__ == "__main__":
    main()
