"""Fault injection, fast form (issue 7): SQLite I/O errors, a full disk (libfiu and a real
tmpfs), a failed fsync, failed SQLite allocations, a database locked by another process, and
an SMTP upstream that hangs or refuses. Each case, in tools/check.d/faults_lib.py, measures:
the server never dies, answers 503/507 in the surface's error format with Retry-After (never
another 5xx), leaves nothing half-written and nothing acknowledged lost, passes
integrity_check, and serves the same requests again once the fault clears, without a restart;
/health says unhealthy during a storage fault and healthy after. tools/check faults runs the
same cases and randomised, longer ones.

The libfiu POSIX preload (I/O error, ENOSPC, fsync cases) cannot run with ASan — both wrap the
same libc calls and the server hangs at start — so those cases run against builds without a
sanitizer and are skipped under ASan; the allocation case needs only libfiu itself and runs
under ASan too.
"""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.environ.get("TESSERA_SRC", os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..")), "tools", "check.d"))
import faults_lib as F  # noqa: E402

needs_fiu = pytest.mark.skipif(not F.fiu_available(), reason="fiu-run (fiu-utils) is not installed")
needs_posix_fiu = pytest.mark.skipif(
    not F.fiu_available() or F.asan_build(),
    reason="fiu-utils missing" if not F.fiu_available()
    else "the fiu POSIX preload cannot run under ASan (see the module docstring)")


def check(outcome):
    assert outcome.ok(), outcome.summary()


@needs_posix_fiu
def test_io_error_on_write_is_503_and_rolled_back():
    check(F.case_io_error_write())


@needs_posix_fiu
def test_disk_full_on_write_is_507():
    check(F.case_disk_full_fiu())


@needs_posix_fiu
def test_io_error_on_read_is_503():
    check(F.case_io_error_read())


@needs_posix_fiu
def test_failed_fsync_under_full_durability_is_503():
    check(F.case_fsync_error())


@needs_fiu
def test_failed_sqlite_allocations_are_503():
    check(F.case_sqlite_oom())


def test_database_locked_by_another_process_is_503():
    check(F.case_busy())


@pytest.mark.skipif(not F.can_mount_tmpfs(), reason="mounting a tmpfs needs root")
def test_real_full_disk_is_507_then_recovers():
    check(F.case_disk_full_tmpfs())


def test_smtp_upstream_that_hangs_neither_blocks_nor_loses_mail():
    check(F.case_smtp_hang())


def test_smtp_upstream_that_refuses_is_retried_or_failed_for_good():
    check(F.case_smtp_refuses())
