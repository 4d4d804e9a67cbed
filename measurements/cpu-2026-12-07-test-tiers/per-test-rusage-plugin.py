"""pytest plugin: each test's wall time and CPU (user, system; its own and its waited-for subprocesses'), one
tab-separated line per test in ru_<worker>.txt under $RUSAGE_DIR (default: the current folder).

Run as it was for per-test-cpu-d8dfcdd.tsv (nothing else running):
    RUSAGE_DIR=out PYTHONPATH=<this folder> python -m pytest -q -p per-test-rusage-plugin -p no:cacheprovider
(with the file renamed to a module name, e.g. per_test_rusage_plugin.py).
"""

import os
import resource
import time

_started = {}


def _usage():
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return (own.ru_utime, own.ru_stime, children.ru_utime, children.ru_stime, own.ru_minflt, own.ru_majflt)


def pytest_runtest_logstart(nodeid, location):
    _started[nodeid] = (time.time(), _usage())


def pytest_runtest_logfinish(nodeid, location):
    start, before = _started.pop(nodeid)
    after = _usage()
    deltas = "\t".join(f"{b - a:.1f}" for a, b in zip(before, after))
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    with open(os.path.join(os.environ.get("RUSAGE_DIR", "."), f"ru_{worker}.txt"), "a") as out:
        out.write(f"{start:.1f}\t{time.time() - start:.1f}\t{deltas}\t{nodeid}\n")
