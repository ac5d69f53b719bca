"""Scorecard rows for tools/check parts: one line per claim, read by tools/check.

    from scorecard import row
    row("acknowledged writes lost", "0", lost, lost == 0)

Each part also exits non-zero when any of its rows failed (scorecard.exit_status()).
"""
import sys

_failed = 0


def row(test, bar, measured, ok):
    global _failed
    if not ok:
        _failed += 1
    sys.stdout.write(f"SCORE\t{test}\t{bar}\t{measured}\t{'PASS' if ok else 'FAIL'}\n")
    sys.stdout.flush()


def exit_status():
    return 1 if _failed else 0
