"""The simulation's fault injection: what ``World.fault`` does for each kind drawn from the
seed, planted defects (tests of the checkers), and a second process's commands."""

from __future__ import annotations

import contextlib

from edgebuf import (
    EdgebufError,
    LocalBufferManager,
)
from edgebuf.lab.simcloud import (
    SimCrash,
    damage,
    fill_disk,
    kill_at_call,
    log_uniform,
)
from edgebuf.lab.simconst import (
    DAY,
    HOUR,
)


class Faults:
    """Mixed into ``World``: one fault of the plan, applied."""

    def fault(self, kind: str) -> None:
        r, now = self.fault_rng, self.now()
        self.counts[kind] += 1
        if kind == "outage":
            length = min(log_uniform(r, 5.0, 2 * DAY), self.end_faults - now)
            self.cloud.outage_until = max(self.cloud.outage_until, now + length)
            self.disturb(self.cloud.outage_until)
            self.note(f"cloud outage for {length:.0f}s")
        elif kind == "flaky":
            length = min(log_uniform(r, 60.0, 6 * HOUR), self.end_faults - now)
            self.cloud.flaky_until = max(self.cloud.flaky_until, now + length)
            self.cloud.flaky_p = r.uniform(0.2, 0.9)
            self.disturb(self.cloud.flaky_until)
            self.note(f"cloud flaky for {length:.0f}s (p={self.cloud.flaky_p:.2f})")
        elif kind == "poison":
            length = min(log_uniform(r, 600.0, 2 * HOUR), self.end_faults - now)
            self.cloud.poison_until = max(self.cloud.poison_until, now + length)
            self.cloud.poison_mod = r.choice((3, 5, 7))
            self.note(f"cloud refuses every seq % {self.cloud.poison_mod} == 0 for {length:.0f}s")
        elif kind == "disk-full":
            length = min(log_uniform(r, 60.0, 3 * HOUR), self.end_faults - now)
            self.disk_full_until = max(self.disk_full_until, now + length)
            self.disk_full_on = True
            self.disturb(self.disk_full_until)
            if self.client is not None:
                fill_disk(self.client.store)
            self.note(f"disk full for {length:.0f}s")
        elif kind == "crash" and self.client is not None:
            self.kill("SIGKILL between steps", log_uniform(r, 1.0, HOUR))
        elif kind == "crash-send":
            self.cloud.crash_next = r.choice(("before", "after"))
            self.crash_downtime = log_uniform(r, 1.0, 600.0)
        elif kind == "crash-cleanup" and self.client is not None:
            k = r.randint(1, 6)
            store = self.client.store
            try:
                with kill_at_call(store, ("delete_rows", "incremental_vacuum", "set_last_cleanup",
                                           "checkpoint", "size_info"), k):  # fmt: skip
                    report = self.client.cleanup(older_than_days=r.uniform(0.0, 2.0))
                self.note(f"cleanup ran ({report})")
            except SimCrash:
                self.kill(f"during cleanup, at store call {k}", log_uniform(r, 1.0, 600.0))
        elif kind == "crash-repair":
            if self.client is not None:
                self.kill("before damage to the file", 0.0)
            damage(self.path)
            self.repair_crash_k = r.randint(1, 8)
            self.restart_at = now + log_uniform(r, 1.0, 600.0)
            self.note(
                f"file damaged (index page); start-up repair killed at file op {self.repair_crash_k}"
            )
        elif kind == "restart" and self.client is not None:
            client = self.client
            self._bounded("close-returns", lambda: client.close(timeout=10.0), 10.0)
            self.client = None
            if self.checker is not None:
                self.checker.close()
                self.checker = None
            self.restart_at = now + log_uniform(r, 1.0, 300.0)
            self.disturb()
            self.note("graceful restart")
        elif kind == "plant":
            self.plant()
        elif kind == "idle":
            length = log_uniform(r, 600.0, 12 * HOUR)
            self.idle_until = max(self.idle_until, now + length)
            self.note(f"camera idle for {length:.0f}s")
        elif kind == "clock-jump":
            jump = r.choice((-1, 1)) * log_uniform(r, 60.0, 10 * DAY)
            self.clock.jump_wall(jump)
            self.note(f"wall clock jumped {jump:+.0f}s")
        elif kind == "requeue":
            self.second_process_requeue()
        elif kind == "cleanup2":
            self.second_process_cleanup(
                r.uniform(0.0, 3.0), r.randint(1, 8) if r.random() < 0.3 else None
            )
        elif kind == "flush" and self.client is not None:
            client, timeout = self.client, r.choice((1.0, 5.0, 30.0))
            done = self._bounded("flush-returns", lambda: client.flush(timeout=timeout), timeout)
            if done is True and client.store.has_unsent():
                self.violate("flush-returns", "flush() returned True with records unsent")

    def plant(self) -> None:
        """A planted defect, for the tests of the checkers (never in a real run)."""
        if self.planted == "seq":  # the sequence marks lost, the process restarted
            if self.client is not None:
                self.kill("planted", 1.0)
        with LocalBufferManager(self.path, exclusive=False, clock=self.clock) as other:
            if self.planted == "counter":
                _execute(
                    other, "UPDATE buffer_metadata SET value = value + 1 WHERE key = 'total_sent'"
                )
            elif self.planted == "seq":
                _execute(other, "UPDATE buffer_metadata SET value = 0 WHERE key LIKE 'seq:%'")
            elif self.planted == "capacity":
                _execute(other, "CREATE TABLE IF NOT EXISTS ballast (b BLOB)")
                _execute(other, "INSERT INTO ballast VALUES (zeroblob(?))",
                         (4 * self.settings["capacity_bytes"],))  # fmt: skip
        self.note(f"PLANTED: {self.planted}")

    def second_process_requeue(self) -> None:
        try:
            with LocalBufferManager(self.path, exclusive=False, clock=self.clock) as other:
                if self.now() < self.disk_full_until:
                    fill_disk(other)
                n = other.requeue_failed()
        except EdgebufError as exc:  # the CLI prints it and exits 1: no change was made
            self.note(f"second process: requeue-failed refused: {type(exc).__name__}")
            return
        self.note(f"second process: requeue-failed put back {n}")
        if n:
            self.disturb()

    def second_process_cleanup(self, days: float, crash_k: int | None) -> None:
        try:
            other = LocalBufferManager(self.path, exclusive=False, clock=self.clock)
        except EdgebufError as exc:
            self.note(f"second process: cleanup refused: {type(exc).__name__}")
            return
        try:
            if self.capacity_cls is None:
                return
            manager = self.capacity_cls(other, capacity_bytes=self.settings["capacity_bytes"])
            calls = ("delete_rows", "incremental_vacuum", "set_last_cleanup", "checkpoint")
            with kill_at_call(other, calls, crash_k) if crash_k else contextlib.nullcontext():
                report = manager.cleanup(days)
            self.note(f"second process: cleanup --older-than-days {days:.2f}: {report}")
            if self.checker is not None:
                self.check_vanished()
        except SimCrash:
            self.zombies.append(other)
            self.note(f"second process killed during cleanup (store call {crash_k})")
            return
        except EdgebufError as exc:  # e.g. a damaged file while the client is down
            self.note(f"second process: cleanup failed: {type(exc).__name__}")
        other.close()


def _execute(store: LocalBufferManager, sql: str, params: tuple[object, ...] = ()) -> None:
    """A planted defect's raw write (the checkers' own tests only)."""
    with store.transaction() as conn:
        conn.execute(sql, params)
