"""Ingest: lakelet ``Lake.add`` against cp, cp + sync, cp + blake3 and ``dvc add``, on the same data.

Cases, each the median of N repetitions (default 3) into fresh destinations:

  a. one 1 GiB file of random bytes
  b. 10,000 files of 4 KiB, added as one directory
  c. re-adding the 1 GiB file, unchanged, under the same name: lakelet must write no
     second copy (checked with /proc/self/io ``wchar`` and the object count on disk)

The sources are written once, synced and read once before timing, so they sit in the
page cache for every tool alike (dropping the page cache needs root and is not reliable
in a VM). Every timed step starts right after an ``os.sync()``, so no tool pays for
another's dirty pages. ``wchar`` counts bytes passed to write syscalls; a reaped child's
counters fold into its parent's, so the column covers cp, lakelet's CLI and dvc too.

lakelet fsyncs what it stores (one fsync per object for a single file, one ``syncfs``
for a batch); cp and dvc do not, hence the "cp + sync" rows. "cp + blake3" is the cost
of copying and then hashing with lakelet's hash (blake3, ``max_threads=AUTO``, 4 MiB
chunks) as two separate steps: the floor a copy-while-hashing ``add`` should reach.

DVC runs from bench/.venv-dvc with DVC_NO_ANALYTICS=1, its cache and site cache inside
the scratch directory (the same filesystem), and ``cache.type copy``, so that it makes a
real copy as lakelet does. Its input must sit inside its workspace, so each rep first
copies the source there (untimed, then synced).

    .venv/bin/python bench/ingest.py            # 1 GiB, 10,000 files, 3 reps (6-9 min here)
    .venv/bin/python bench/ingest.py --quick    # 128 MiB, 2,000 files, 1 rep
    .venv/bin/python bench/ingest.py --no-dvc   # without the DVC rows
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import blake3
from _common import (
    BENCH_DIR,
    MB,
    GiB,
    MiB,
    OtherLoad,
    fs_type,
    load_note,
    machine,
    median,
    proc_io,
    scratch,
    table,
    write_random_file,
)

import lakelet

CHUNK = 4 * MiB  # lakelet.core._digest.CHUNK_SIZE
DVC = BENCH_DIR / ".venv-dvc" / "bin" / "dvc"
LAKELET_CLI = Path(sys.executable).parent / "lakelet"

LAKELET = "lakelet Lake.add"
LAKELET_CLI_ROW = "lakelet add (CLI)"
CP = "cp -r"
CP_SYNC = "cp -r + sync"
CP_HASH = "cp -r + blake3"
CP_SYNC_HASH = "cp -r + sync + blake3"
DVC_ADD = "dvc add (cache.type copy)"
HASH_ONLY = "blake3 of the source (reference)"


@dataclass
class Prepared:
    """One repetition of one tool: ``run`` is timed, ``after`` (untimed) checks and closes."""

    run: Callable[[], object]
    after: Callable[[], object] = lambda: None


@dataclass
class Row:
    case: str
    tool: str
    nbytes: int
    times: list[float] = field(default_factory=list)
    wchar: list[int] = field(default_factory=list)
    rchar: list[int] = field(default_factory=list)
    disk_reads: list[int] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return median(self.times)


# the tools


def sh(*args: str | os.PathLike[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
    proc = subprocess.run(
        [os.fspath(a) for a in args], cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    if proc.returncode != 0:
        sys.exit(f"{' '.join(map(str, args))} failed ({proc.returncode}): {proc.stderr.decode()[-2000:]}")


def files_under(path: Path) -> Iterator[Path]:
    if path.is_file():
        yield path
        return
    for dirpath, _dirs, names in os.walk(path):
        for n in sorted(names):
            yield Path(dirpath, n)


def blake3_files(src: Path) -> None:
    """Hash every file under ``src`` as lakelet does: blake3, max_threads=AUTO, 4 MiB reads."""
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    for path in files_under(src):
        hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(buffer):
                hasher.update(view[:n])
        hasher.hexdigest()


def lakelet_api(src: Path, dest: Path, name: str) -> Prepared:
    lake = lakelet.init(dest / "lake")
    return Prepared(lambda: lake.add(src, name), lake.close)


def lakelet_cli(src: Path, dest: Path, name: str) -> Prepared:
    lakelet.init(dest / "lake").close()
    return Prepared(lambda: sh(LAKELET_CLI, "--lake", dest / "lake", "add", src, name))


def cp(src: Path, dest: Path, name: str) -> Prepared:
    return Prepared(lambda: sh("cp", "-r", src, dest / name))


def cp_sync(src: Path, dest: Path, name: str) -> Prepared:
    return Prepared(lambda: (sh("cp", "-r", src, dest / name), sh("sync")))


def cp_hash(src: Path, dest: Path, name: str) -> Prepared:
    return Prepared(lambda: (sh("cp", "-r", src, dest / name), blake3_files(src)))


def cp_sync_hash(src: Path, dest: Path, name: str) -> Prepared:
    return Prepared(lambda: (sh("cp", "-r", src, dest / name), sh("sync"), blake3_files(src)))


class Dvc:
    """``dvc add`` in a fresh repo per rep, with a real-copy cache on the same filesystem."""

    def __init__(self, work: Path) -> None:
        self.env = {
            **os.environ,
            "DVC_NO_ANALYTICS": "1",
            "DVC_SITE_CACHE_DIR": os.fspath(work / "dvc-site-cache"),
        }
        self.link_kinds: set[str] = set()

    def repo(self, src: Path, dest: Path, name: str) -> Path:
        repo = dest / "repo"
        repo.mkdir()
        sh(DVC, "init", "--no-scm", "-q", cwd=repo, env=self.env)
        sh(DVC, "config", "cache.type", "copy", cwd=repo, env=self.env)
        # A copy, not a hard link: DVC replaces a hard-linked workspace file by a second copy.
        sh("cp", "-r", src, repo / name)
        return repo

    def add(self, src: Path, dest: Path, name: str) -> Prepared:
        repo = self.repo(src, dest, name)
        return Prepared(
            lambda: sh(DVC, "add", "-q", name, cwd=repo, env=self.env),
            lambda: self.link_kinds.add(self.link_kind(repo, name)),
        )

    def readd(self, src: Path, dest: Path, name: str) -> tuple[Prepared, Path]:
        repo = self.repo(src, dest, name)
        sh(DVC, "add", "-q", name, cwd=repo, env=self.env)
        return Prepared(lambda: sh(DVC, "add", "-q", name, cwd=repo, env=self.env)), repo / ".dvc" / "cache"

    @staticmethod
    def link_kind(repo: Path, name: str) -> str:
        """How the workspace relates to the cache: separate inodes mean a real copy."""
        workspace = {os.lstat(p).st_ino for p in files_under(repo / name)}
        cache = [os.lstat(p) for p in files_under(repo / ".dvc" / "cache")]
        if any(os.path.islink(p) for p in files_under(repo / name)):
            return "symlink"
        if any(st.st_ino in workspace for st in cache):
            return "hardlink (or the cache file was moved in)"
        return "copy (every cache file is its own inode)"

    def startup(self, cwd: Path) -> float:
        """The CLI's fixed cost: ``dvc config cache.type`` in an existing repo."""
        return median(
            [timed_call(lambda: sh(DVC, "config", "cache.type", cwd=cwd, env=self.env)) for _ in range(3)]
        )


def timed_call(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(row: Row, prepared: Prepared) -> None:
    os.sync()  # nobody pays for the dirty pages of the previous step
    before = proc_io()
    t0 = time.perf_counter()
    prepared.run()
    seconds = time.perf_counter() - t0
    after = proc_io()
    prepared.after()
    row.times.append(seconds)
    row.wchar.append(after["wchar"] - before["wchar"])
    row.rchar.append(after["rchar"] - before["rchar"])
    row.disk_reads.append(after["read_bytes"] - before["read_bytes"])
    print(
        f"  {row.case} | {row.tool}: {seconds:.3f} s, wrote {row.wchar[-1] / MB:.1f} MB, "
        f"read {row.disk_reads[-1] / MB:.1f} MB from disk",
        flush=True,
    )


def fresh(runs: Path, label: str) -> Path:
    dest = runs / label
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    return dest


def stored_files(path: Path) -> set[tuple[int, int]]:
    """(inode, size) of every file under ``path``: unchanged means nothing was rewritten or added."""
    return {(st.st_ino, st.st_size) for st in map(os.lstat, files_under(path))}


def create_cost(directory: Path, n: int = 1_000) -> float:
    """Microseconds to create and write one 4 KiB file in ``directory`` (median of ``n``): what
    a small-file add pays per file before any tool does anything, and it varies with what the
    machine's other processes created and deleted on this filesystem lately."""
    directory.mkdir()
    data = os.urandom(4096)
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        fd = os.open(directory / str(i), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, data)
        os.close(fd)
        times.append(time.perf_counter() - t0)
    return median(times) * 1e6  # the files stay until the scratch directory goes: see main()


def read_once(src: Path) -> None:
    for path in files_under(src):
        with open(path, "rb", buffering=0) as f:
            while f.read(CHUNK):
                pass


# the report


def fmt_ratio(x: float) -> str:
    return f"{x:.2f}x"


def print_table(rows: list[Row]) -> None:
    base = {r.case: r.seconds for r in rows if r.tool == LAKELET}
    body = [
        (
            r.case,
            r.tool,
            f"{r.seconds:.3f}",
            f"{min(r.times):.2f}-{max(r.times):.2f}",
            f"{r.nbytes / r.seconds / MB:,.0f}",
            fmt_ratio(r.seconds / base[r.case]),
            f"{median(r.wchar) / MB:,.1f}",
            f"{median(r.disk_reads) / MB:,.1f}",
        )
        for r in rows
    ]
    headers = [
        "case",
        "tool",
        "median s",
        "min-max s",
        "MB/s",
        "time vs lakelet",
        "MB written (wchar)",
        "MB read from disk",
    ]
    print(table(headers, body))
    print("\n'time vs lakelet' is the tool's median time / Lake.add's: above 1x the tool is slower.")
    print("MB/s is the data size (decimal MB) / median time; for case c it is the size of the re-added file.")
    print("'MB read from disk' is /proc/self/io read_bytes (median): block-layer reads, file system metadata")
    print("included; ~0 means the source came from the page cache.")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="128 MiB file, 2,000 files, 1 rep")
    ap.add_argument("--reps", type=int, help="repetitions per measurement (default 3, --quick 1)")
    ap.add_argument("--no-dvc", action="store_true", help="skip the dvc rows")
    args = ap.parse_args()
    size = 128 * MiB if args.quick else GiB
    nfiles = 2_000 if args.quick else 10_000
    small = 4096
    reps = args.reps or (1 if args.quick else 3)
    use_dvc = not args.no_dvc and DVC.exists()

    from lakelet.core._digest import CHUNK_SIZE

    assert CHUNK_SIZE == CHUNK, "lakelet's chunk size changed: update bench/ingest.py"

    size_label = f"{size // GiB} GiB" if size >= GiB else f"{size // MiB} MiB"
    case_a = f"a: 1 file of {size_label}"
    case_b = f"b: {nfiles:,} files of 4 KiB"
    case_c = f"c: re-add {size_label} unchanged"

    other = OtherLoad()
    with scratch("ingest") as work:
        print(f"# ingest: median of {reps} rep(s), fresh destinations each rep")
        print(f"# {machine()}")
        print(
            f"# {fs_type(work)} at {work}; {load_note()} at start; "
            f"creating a 4 KiB file here: {create_cost(work / 'probe-start'):.0f} us"
        )
        print(f"# lakelet {lakelet.__version__}, blake3 {blake3.__version__}", end="")
        if use_dvc:
            out = subprocess.run([DVC, "--version"], capture_output=True, text=True).stdout.strip()
            print(f", dvc {out} (cache.type copy, DVC_NO_ANALYTICS=1)")
        else:
            print(" (dvc skipped)" if args.no_dvc else f" (dvc not found at {DVC}: skipped)")

        src = work / "src"
        src.mkdir()
        big = src / "big.bin"
        write_random_file(big, size)
        tree = src / "small"
        tree.mkdir()
        for i in range(nfiles):
            (tree / f"f{i:05d}.bin").write_bytes(os.urandom(small))
        os.sync()
        read_once(src)  # in the page cache for every tool alike
        runs = work / "runs"
        dvc = Dvc(work) if use_dvc else None

        tools: list[tuple[str, Callable[[Path, Path, str], Prepared]]] = [
            (LAKELET, lakelet_api),
            (LAKELET_CLI_ROW, lakelet_cli),
            (CP, cp),
            (CP_SYNC, cp_sync),
            (CP_HASH, cp_hash),
            (CP_SYNC_HASH, cp_sync_hash),
        ]
        if dvc is not None:
            tools.append((DVC_ADD, dvc.add))

        rows: list[Row] = []
        for case, source, name, nbytes in [
            (case_a, big, "big.bin", size),
            (case_b, tree, "small", nfiles * small),
        ]:
            case_rows = [Row(case, label, nbytes) for label, _ in tools]
            rows += case_rows
            done: list[Path] = []
            for rep in range(reps):
                for k, (row, (_, setup)) in enumerate(zip(case_rows, tools, strict=True)):
                    dest = fresh(runs, f"{case[0]}{k}-{rep}")
                    measure(row, setup(source, dest, name))
                    done.append(dest)
                    if source.is_file():
                        shutil.rmtree(dest)
            # Many files are removed only once the case is over: ext4 without a journal (this
            # VM's) passes over every inode freed in the last minute when it allocates one, so
            # deleting 10,000 files right before the next tool made each of its creates cost up
            # to ~1 ms (perf: recently_deleted() under __ext4_new_inode): that tool measured
            # the previous one's clean-up.
            for dest in done:
                shutil.rmtree(dest, ignore_errors=True)

        # c: the same file again under the same name
        readd = Row(case_c, LAKELET, size)
        readd_cli = Row(case_c, LAKELET_CLI_ROW, size)
        hash_only = Row(case_c, HASH_ONLY, size)
        dvc_readd = Row(case_c, DVC_ADD, size)
        objects_kept: list[bool] = []
        dvc_objects_kept: list[bool] = []
        for rep in range(reps):
            dest = fresh(runs, f"readd-{rep}")
            lake = lakelet.init(dest / "lake")
            lake.add(big, "big.bin")
            objects = dest / "lake" / "objects"
            before = stored_files(objects)
            measure(readd, Prepared(lambda lake=lake: lake.add(big, "big.bin")))
            objects_kept.append(stored_files(objects) == before)
            lake.close()
            cli = Prepared(lambda dest=dest: sh(LAKELET_CLI, "--lake", dest / "lake", "add", big, "big.bin"))
            measure(readd_cli, cli)
            objects_kept.append(stored_files(objects) == before)
            measure(hash_only, Prepared(lambda: blake3_files(big)))
            if dvc is not None:
                dvc_dest = fresh(runs, f"readd-dvc-{rep}")
                prepared, cache = dvc.readd(big, dvc_dest, "big.bin")
                before = stored_files(cache)
                measure(dvc_readd, prepared)
                dvc_objects_kept.append(stored_files(cache) == before)
                shutil.rmtree(dvc_dest)
            shutil.rmtree(dest)
        rows += [readd, readd_cli, hash_only] + ([dvc_readd] if dvc is not None else [])

        # the fixed cost of starting each CLI, for reading the CLI rows
        probe = fresh(runs, "startup")
        lakelet.init(probe / "lake").close()
        lakelet_startup = median(
            [timed_call(lambda: sh(LAKELET_CLI, "--lake", probe / "lake", "ls")) for _ in range(3)]
        )
        dvc_startup = None
        if dvc is not None:
            sh(DVC, "init", "--no-scm", "-q", cwd=probe, env=dvc.env)
            dvc_startup = dvc.startup(probe)
        shutil.rmtree(probe)
        print()
        print(
            f"# {load_note()} at end; {other.note()}; "
            f"creating a 4 KiB file here: {create_cost(work / 'probe-end'):.0f} us"
        )
        print()
        print_table(rows)

        by = {(r.case, r.tool): r for r in rows}
        print("\nnotes:")
        if dvc is not None:
            print(
                f"- dvc link type observed: {', '.join(sorted(dvc.link_kinds))}; "
                f"{fs_type(work)} has no reflink, so DVC's default 'reflink,copy' would copy too"
            )
        print(f"- CLI start-up alone: `lakelet ls` on an empty lake {lakelet_startup:.3f} s", end="")
        print(f", `dvc config cache.type` {dvc_startup:.3f} s" if dvc_startup is not None else "")
        print("\ntargets (the issue's (a) is about case a, (b) about case b; other cases for reference):")
        lk, ref, durable_ref = by[(case_a, LAKELET)], by[(case_a, CP_HASH)], by[(case_a, CP_SYNC_HASH)]
        share = ref.seconds / lk.seconds  # = lakelet MB/s / (cp + blake3) MB/s
        print(
            f"- {verdict(share >= 0.8)} (a) {case_a}: lakelet {lk.nbytes / lk.seconds / MB:,.0f} MB/s "
            f"= {share:.2f}x of cp + blake3 ({ref.nbytes / ref.seconds / MB:,.0f} MB/s); target >= 0.80x"
        )
        print(
            f"  lakelet's add is durable (fsync before the name is bound): against cp + sync + blake3 "
            f"({durable_ref.nbytes / durable_ref.seconds / MB:,.0f} MB/s) it is "
            f"{durable_ref.seconds / lk.seconds:.2f}x"
        )
        if dvc is None:
            print(f"- n/a (b) {case_b}: dvc was not run")
        else:
            for case, target in ((case_b, True), (case_a, False)):
                lk, theirs = by[(case, LAKELET)], by[(case, DVC_ADD)]
                speedup = theirs.seconds / lk.seconds
                line = (
                    f"(b) {case}: lakelet {lk.seconds:.3f} s vs dvc add {theirs.seconds:.3f} s "
                    f"= {speedup:.2f}x faster"
                )
                if target:
                    print(f"- {verdict(speedup >= 3)} {line}; target >= 3x")
                else:
                    print(f"  for reference, {line}")
        worst = max(readd.wchar + readd_cli.wchar)
        no_copy = worst < MiB and all(objects_kept)
        print(
            f"- {verdict(no_copy)} (c) re-add: lakelet wrote at most {worst:,} bytes (wchar) per re-add "
            f"of a {size:,}-byte file, same object files (inodes, sizes): {all(objects_kept)}; "
            f"median {readd.seconds:.3f} s (reads the source once to hash it: "
            f"{median(readd.rchar) / MB:,.0f} MB read)"
        )
        if dvc is not None:
            print(
                f"  dvc re-add for comparison: {dvc_readd.seconds:.3f} s, wrote at most "
                f"{max(dvc_readd.wchar):,} bytes, same cache files: {all(dvc_objects_kept)}"
            )


if __name__ == "__main__":
    main()
