"""settle.py — wait until the PyTorch side of a bench has stopped using the CPU.

After a call returns, PyTorch's helper threads keep running for a while: Debian's
OpenBLAS workers spin (with sched_yield) for up to 2^28 cycles, ~0.1 s here, before they
sleep, and libgomp's team spins too (OMP_WAIT_POLICY unset). Whatever a bench times next
on a 2-core machine would share a core with them. So before every timed block the benches
call wait_idle(pids) for the long-lived processes that run PyTorch (all.py's and
decode_bench.py's workers, or the bench's own process when it runs torch itself): it
sleeps a short minimum, then polls the total CPU time of every thread of those processes
(/proc/PID/task/*/schedstat, nanoseconds) until it grows by less than IDLE_SHARE of one
core over a WINDOW, or MAX_WAIT has passed. kiln's side needs nothing: each kiln figure
comes from a child process, which has exited (with its thread pool) when the next
contender starts. The baselines keep their best settings: nothing here changes how
PyTorch waits (no OMP_WAIT_POLICY=passive), it is only not timed while it spins.
"""
import os
import time

WINDOW = 0.05      # s: one observation
IDLE_SHARE = 0.05  # idle: less CPU than this share of one core over a window
MIN_SLEEP = 0.02   # s: always at least this (the call's answer can arrive before its threads park)
MAX_WAIT = 2.0     # s: give up (and say so) after this


def cpu_seconds(pid):
    """CPU time (s) used so far by every thread of process pid; None when it is gone."""
    total = 0.0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0]) / 1e9
        except (OSError, ValueError, IndexError):
            pass  # the thread ended meanwhile
    return total


def describe():
    return (f"before every timed block the bench waits until each long-lived PyTorch process is idle "
            f"(its threads' CPU time grows by < {IDLE_SHARE:.0%} of a core over {WINDOW * 1e3:.0f} ms; "
            f"at most {MAX_WAIT:.0f} s): OpenBLAS's and OpenMP's threads spin for ~0.1 s after a call")


class Settler:
    """wait_idle(pids) with a record of how long the waits took (for the bench's output).

    A bench calls ran() whenever it has asked a PyTorch process to compute; wait_idle
    returns at once when nothing ran since the last wait (e.g. between two kiln processes),
    which keeps the quick smoke runs from paying for needless waits."""

    def __init__(self):
        self.waits = []      # seconds waited, one per wait made
        self.timeouts = 0    # waits that hit MAX_WAIT
        self.dirty = True    # PyTorch may have run since the last wait

    def ran(self):
        self.dirty = True

    def wait_idle(self, pids):
        pids = [p for p in pids if p]
        if not self.dirty or not pids:
            return 0.0
        t0 = time.perf_counter()
        time.sleep(MIN_SLEEP)
        last = [cpu_seconds(p) for p in pids]
        while True:
            time.sleep(WINDOW)
            now = [cpu_seconds(p) for p in pids]
            busy = any(a is not None and b is not None and b - a >= IDLE_SHARE * WINDOW for a, b in zip(last, now))
            waited = time.perf_counter() - t0
            if not busy or waited >= MAX_WAIT:
                break
            last = now
        self.waits.append(waited)
        self.dirty = False
        if busy:
            self.timeouts += 1
        return waited

    def summary(self):
        if not self.waits:
            return "no settle waits"
        w = sorted(self.waits)
        return (f"{len(w)} settle waits before timed blocks: median {w[len(w) // 2] * 1e3:.0f} ms, "
                f"longest {w[-1] * 1e3:.0f} ms" + (f", {self.timeouts} gave up after {MAX_WAIT:.0f} s "
                                                   f"(a worker still busy)" if self.timeouts else ""))
