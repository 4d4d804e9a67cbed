import time

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    t = time.process_time()
    yield
    d = time.process_time() - t
    if d > 1:
        print(f"\nCPU setup {d:.1f}s {item.nodeid}", flush=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    t = time.process_time()
    yield
    d = time.process_time() - t
    if d > 1:
        print(f"\nCPU call {d:.1f}s {item.nodeid}", flush=True)
