"""Fixtures shared by the test modules, and how a run shares the machine's cores (pytest-xdist, ``-n auto``)."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import sys
from pathlib import Path

import pytest

try:
    import fcntl
except ImportError:  # not on Windows
    fcntl = None

ONEDNN_ISA_ENV = "ONEDNN_MAX_CPU_ISA"
FIXTURES_ONEDNN_ISA = "AVX2"

# OpenMP threads that spin while waiting make torch on a busy 2-core machine many times slower; let them sleep.
# Set before torch is first imported (test modules import it after this file).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# The parity fixtures' numbers are those of oneDNN's AVX2 kernels. On a CPU with AVX-512 (this project's 2-core EPYC
# machine since 2026-12-07, a Zen 4) oneDNN picks other convolution kernels, which sum a conv's bias gradient over
# its ~10^5-10^6 positions in another float32 order: HSNet's step-0 gradient norm of hpn_learner.encoder_layer2.0
# conv biases then ends 1.2e-4 relative from the authors' (their value is 3.3e-5 from the float64 sum, the AVX-512
# one 8.4e-5 on the other side), beyond the training fixture's 1e-4, which is never loosened. Capping oneDNN at
# AVX2 gives the fixtures' kernels, and their numbers, on any x86 CPU (docs/faithfulness.md). Read by oneDNN when
# torch first uses it, so set here, before any test imports torch; a caller's own value is kept.
if platform.machine().lower() in ("x86_64", "amd64"):
    os.environ.setdefault(ONEDNN_ISA_ENV, FIXTURES_ONEDNN_ISA)
# Compiled test modules (pytest's assertion rewriting: ~4 s of each worker's collection) and package modules are
# cached in __pycache__ even where PYTHONDONTWRITEBYTECODE is set: the next run, and every subprocess of this one,
# reads them instead of compiling again.
sys.dont_write_bytecode = False

# --- workers: how many, and how many threads each ------------------------------------------------------------------

WORKER_MEMORY = {"full": 8 * 2**30, "fast": 3 * 2**30}
"""Memory one worker may need: a VAT-sized test (parity, DDP, training) peaks near 8 GB, the fast tier near 2 GB."""
MAX_WORKERS = 8


def _cpu_count() -> int:
    """The cores this process may run on (the affinity mask, not the machine's count, where the OS has one)."""
    with contextlib.suppress(AttributeError):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _available_memory() -> int | None:
    """MemAvailable of /proc/meminfo in bytes; None where there is no such file."""
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None


@pytest.hookimpl(optionalhook=True)  # an xdist hook: no error where xdist is not loaded
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: one worker per core, as far as the available memory allows (``WORKER_MEMORY`` each, the fast
    tier's figure when slow tests are deselected), at most ``MAX_WORKERS``; 0 (one process, no workers) where that
    comes to one. PYTEST_XDIST_AUTO_NUM_WORKERS sets the count directly, as in xdist itself."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return int(os.environ["PYTEST_XDIST_AUTO_NUM_WORKERS"])
    tier = "fast" if "not slow" in (config.option.markexpr or "") else "full"
    memory = _available_memory()
    by_memory = memory // WORKER_MEMORY[tier] if memory is not None else MAX_WORKERS
    workers = min(_cpu_count(), by_memory, MAX_WORKERS)
    return workers if workers > 1 else 0


TERMINAL_SIZE_ENV = ("COLUMNS", "LINES")
"""Set in a process's C environment (not in os.environ) once GNU readline is loaded (pytest loads it), and so passed
on to the workers: there rich's consoles, built at import, would keep 80 columns whatever a test sets."""


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    """In the controller, for each worker: which terminal-size variables the controller's os.environ lacks."""
    node.workerinput["hmrepro_unset_env"] = [name for name in TERMINAL_SIZE_ENV if name not in os.environ]


def _worker_threads(config: pytest.Config) -> int | None:
    """Threads per xdist worker: the cores shared out among the workers (at least 1); None outside a worker."""
    workerinput = getattr(config, "workerinput", None)
    return max(1, _cpu_count() // workerinput["workercount"]) if workerinput else None


PARITY_MODULE_SUFFIX = "_parity"
"""Tests in test_*_parity.py compare with the authors' outputs at the tolerance they were checked at: with the thread
count of a run in one process (some pass at 2 threads and not at 1: reductions summed in another order)."""
_SERIAL_THREADS = pytest.StashKey[int]()


def pytest_configure(config: pytest.Config) -> None:
    """In a worker, before any test module imports torch: the controller's environment, and OMP_NUM_THREADS at the
    worker's share of the cores unless the caller set it (the CLI subprocesses that tests start inherit both)."""
    threads = _worker_threads(config)
    if threads is None:
        return
    for name in config.workerinput.get("hmrepro_unset_env", ()):
        os.environ.pop(name, None)
    config.stash[_SERIAL_THREADS] = int(os.environ.get("OMP_NUM_THREADS", str(_cpu_count())).split(",")[0])
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    """In a worker, torch computes on the worker's share of the cores (a test that sets its own count keeps it until
    it ends); a parity test, its module fixtures' setup and teardown included, with the threads of a run in one
    process (see PARITY_MODULE_SUFFIX)."""
    with _freed_memory_reused(item, nextitem):
        threads = _worker_threads(item.config)
        if threads is None:
            return (yield)
        if item.path.stem.endswith(PARITY_MODULE_SUFFIX):
            threads = item.config.stash[_SERIAL_THREADS]
        elif "torch" not in sys.modules:  # when imported, torch starts from OMP_NUM_THREADS (pytest_configure)
            return (yield)
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return (yield)
        finally:
            torch.set_num_threads(before)


def _freed_memory_reused(item: pytest.Item, nextitem: pytest.Item | None):
    """helpers.reuse_freed_memory around each ``slow`` test, its fixtures' setup and teardown included: memory the
    test frees is reused by it rather than handed back and zero-filled afresh by the kernel (a VAT step frees and
    re-allocates blocks of up to 0.5 GB: a third of its time went to page faults). It is handed back after the last
    of a worker's consecutive slow tests, so that the next one (VAT's parity fixtures follow each other) reuses the
    pages too. Not around the fast tier's small tests: there the hand-back after each test cost more than it saved
    (measured: docs/performance.md)."""
    if not item.get_closest_marker("slow"):
        return contextlib.nullcontext()
    from helpers import reuse_freed_memory

    return reuse_freed_memory(hand_back=nextitem is None or not nextitem.get_closest_marker("slow"))


# --- the synthetic benchmark: built once per run, shared by the workers -------------------------------------------


@contextlib.contextmanager
def _exclusive(lock: Path):
    """Hold an exclusive lock on the file ``lock`` (created if needed) for the block."""
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def built_once_per_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, name: str, build):
    """The folder ``name`` that ``build(folder)`` fills, built once per test run: in one process, a folder of its
    own; under xdist, by the first worker that needs it, in the run's temporary folder, for all (the others wait on
    its lock). A build that died half-way (no ``.complete`` marker) is built again. Treat the folder as read-only."""
    worker = getattr(request.config, "workerinput", {}).get("workerid")
    if not worker or fcntl is None:  # one process, or no file locks: a folder of its own
        folder = tmp_path_factory.mktemp(name) / name
        build(folder)
        return folder
    folder = tmp_path_factory.getbasetemp().parent / name
    done = folder.with_name(f"{name}.complete")
    with _exclusive(folder.with_name(f"{name}.lock")):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            build(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """The synthetic benchmark (seed 0), generated once per test run; treat it as read-only."""
    from hmrepro.data.synthetic import make_synthetic

    return built_once_per_run(request, tmp_path_factory, "synthetic", lambda root: make_synthetic(root, seed=0))


@pytest.fixture(scope="session")
def trained_hsnet_run(synthetic_root, tmp_path_factory, request) -> Path:
    """hsnet trained on the synthetic FSS-like split (engine_helpers.LEARN_EPOCHS epochs, ~45 CPU s), once per test
    run: the evaluation, training and HSNet learning tests share it; treat it as read-only."""
    from engine_helpers import train_tiny_hsnet

    return built_once_per_run(request, tmp_path_factory, "hsnet_fss", lambda out: train_tiny_hsnet(synthetic_root, out))


@pytest.fixture(scope="session", autouse=True)
def _cli_command_tree_built_once():
    """typer's ``CliRunner.invoke(app, ...)`` rebuilds the app's whole click command tree on every call (~0.05 s
    for hmrepro's, up to half of a short invoke); build it once per app, as a real process does. Each invoke still
    parses its arguments and runs its command in a fresh click context. ``hmrepro.cli.app.run`` (the entry point
    test_cli_errors.py calls) is untouched: it builds its app and tree on every call."""
    import typer.testing

    built: dict[int, tuple] = {}
    original = typer.testing._get_command

    def get_command_once(app):
        if id(app) not in built:
            built[id(app)] = (app, original(app))  # the app kept alive: its id is not reused
        return built[id(app)][1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(typer.testing, "_get_command", get_command_once)
        yield


def _missing_reference(report: pytest.TestReport) -> str | None:
    """The absent path of a test skipped by helpers.reference_path, or None for any other skip."""
    from helpers import MISSING_REFERENCE

    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else ""
    _, found, path = str(reason).partition(MISSING_REFERENCE)
    return path.strip() if found else None


def _onednn_capped_below_the_cpu() -> bool:
    """Whether this run caps oneDNN at the fixtures' ISA on a CPU that has AVX-512 (Linux: /proc/cpuinfo)."""
    if os.environ.get(ONEDNN_ISA_ENV) != FIXTURES_ONEDNN_ISA:
        return False
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        return any(line.startswith("flags") and " avx512f" in line for line in cpuinfo)
    return False


@pytest.hookimpl(trylast=True)  # after the durations list, next to the final counts
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line when oneDNN runs below the CPU's ISA for the parity fixtures; one when parity tests were skipped for
    want of the reference material: how many, and where it was looked for."""
    from helpers import REQUIRE_FIXTURES_ENV

    if _onednn_capped_below_the_cpu():
        terminalreporter.write_line(
            f"oneDNN capped at {FIXTURES_ONEDNN_ISA} on this AVX-512 CPU: the parity fixtures' kernels "
            f"({ONEDNN_ISA_ENV}, see tests/conftest.py; set it to ALL to run on the CPU's own)"
        )
    missing = [_missing_reference(r) for r in terminalreporter.stats.get("skipped", [])]
    paths = sorted({p for p in missing if p})
    if paths:
        count = sum(p is not None for p in missing)
        terminalreporter.write_line(
            f"{count} parity tests skipped: {', '.join(paths)} not found "
            f"(set HMREPRO_SHARED / HMREPRO_FIXTURES; {REQUIRE_FIXTURES_ENV}=1 turns this into a failure)",
            yellow=True,
            bold=True,
        )
