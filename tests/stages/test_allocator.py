"""stages.allocator: a freed batch-sized buffer is reused, not faulted in again."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# Allocates a 96 MB array, frees it, allocates it again and prints the minor page faults
# of the second allocation: each fresh page faults once (48 at least, with 2 MB huge pages),
# reused heap memory does not.
PROBE = textwrap.dedent(
    """
    import resource, sys
    import numpy as np
    from stages.allocator import reuse_freed_memory

    if sys.argv[1] == "reuse":
        assert reuse_freed_memory()
    size = 96 * 2**20
    np.ones(size, dtype=np.uint8)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    again = np.ones(size, dtype=np.uint8)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def second_allocation_faults(mode: str) -> int:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True
    )
    return int(result.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt only")
def test_freed_batch_memory_is_reused_instead_of_faulted_in_again() -> None:
    default = second_allocation_faults("default")
    reused = second_allocation_faults("reuse")
    assert default >= 48, "glibc should map a 96 MB array afresh by default"
    assert reused <= default // 10
