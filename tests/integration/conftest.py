import os

import pytest

from ferrylib import FERRY, GUEST, Vm


def pytest_sessionstart(session):
    # Real KVM or nothing: a missing /dev/kvm fails the run loudly.
    if not os.path.exists("/dev/kvm"):
        raise pytest.UsageError("/dev/kvm is missing: integration tests need real KVM")
    for path in (FERRY, GUEST):
        if not os.path.exists(path):
            raise pytest.UsageError(f"{path} is missing: run `make asan guest` first")


@pytest.fixture
def vm_factory(tmp_path):
    vms = []

    def make(**kw):
        sub = tmp_path / f"vm{len(vms)}"
        sub.mkdir()
        vm = Vm(sub, **kw)
        vms.append(vm)
        return vm

    yield make
    # Every VM is stopped even if an earlier one's check fails; the first
    # failure is raised after.
    errors = []
    for vm in vms:
        try:
            vm.close()
        except AssertionError as e:
            errors.append(e)
    if errors:
        raise errors[0]
