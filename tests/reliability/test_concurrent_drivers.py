"""Drivers sharing one store: every trial computed once, nothing lost; dead drivers' trials taken over
(at once on this host, after the lease elsewhere); Ctrl-C keeps finished records and frees claims."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flatminima.experiments import InProcessExecutor, Store, parse_spec, run_sweep, run_trial
from flatminima.experiments.claims import LeaseKeeper, owner_is_dead

_SPEC = {
    "name": "shared",
    "draws": 20,
    "problem": {"name": "matrix_sensing", "rank": 1, "dim": 4},
    "grid": {"num_measurements": [12, 20]},
    "solvers": ["least_norm"],
}  # 40 trials of a few milliseconds

#: one driver process: waits for the go file, runs the sweep logging every execution, prints the result.
_DRIVER = """
import dataclasses, json, os, sys, time
from pathlib import Path
from flatminima.experiments import InProcessExecutor, Store, parse_spec, run_sweep

store_path, log_path, go_path, pause = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
spec = parse_spec(json.loads(sys.argv[5]))

class Logging(InProcessExecutor):
    def map_unordered(self, function, items):
        for item in items:
            with open(log_path, "a") as log:
                log.write(item.key + "\\n")
            time.sleep(pause)
            yield item, function(item)

Path(go_path + f".ready-{os.getpid()}").touch()
while not Path(go_path).exists():
    time.sleep(0.01)
with Store(store_path) as store:
    result = run_sweep(spec, store, executor=Logging(), progress=False)
print(json.dumps(dataclasses.asdict(result)))
"""


def _driver(tmp_path: Path, name: str, pause: float) -> tuple[subprocess.Popen[str], Path]:
    script = tmp_path / "driver.py"
    script.write_text(_DRIVER)
    log = tmp_path / f"{name}.log"
    command = [sys.executable, str(script), str(tmp_path / "s.sqlite"), str(log), str(tmp_path / "go")]
    command += [str(pause), json.dumps(_SPEC)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return process, log


def _wait_ready(tmp_path: Path, count: int) -> None:
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("go.ready-*"))) < count:
        assert time.monotonic() < deadline, "the drivers did not start"
        time.sleep(0.02)


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def _query(path: Path, sql: str) -> list[Any]:
    connection = sqlite3.connect(path)
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


def _stored_keys(path: Path) -> list[str]:
    return [row[0] for row in _query(path, "SELECT key FROM trials")]


def test_two_driver_processes_compute_every_trial_once(tmp_path: Path) -> None:
    (a, log_a), (b, log_b) = _driver(tmp_path, "a", 0.02), _driver(tmp_path, "b", 0.02)
    _wait_ready(tmp_path, 2)
    (tmp_path / "go").touch()
    results = []
    for process in (a, b):
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    expected = {t.key for t in parse_spec(_SPEC).iter_trials()}
    executed = _lines(log_a) + _lines(log_b)
    assert sorted(executed) == sorted(expected)  # every trial computed exactly once, by one driver
    stored = _stored_keys(tmp_path / "s.sqlite")
    assert sorted(stored) == sorted(expected)
    assert sum(r["completed"] for r in results) == 40
    for result in results:
        assert result["total"] == 40 and result["running_elsewhere"] == 0
        assert result["skipped"] + result["completed"] + result["elsewhere"] == 40
    with Store(tmp_path / "s.sqlite", read_only=True) as store:
        assert store.live_claims() == 0


def test_killed_driver_is_taken_over_at_once(tmp_path: Path) -> None:
    process, log = _driver(tmp_path, "killed", 0.2)
    _wait_ready(tmp_path, 1)
    (tmp_path / "go").touch()
    store_path = tmp_path / "s.sqlite"
    deadline = time.monotonic() + 60
    while len(_stored_keys(store_path) if store_path.exists() else []) < 2:
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL
    with Store(store_path, read_only=True) as store:
        assert store.live_claims() == 0  # its claims are still there, but their owner is dead
        assert _query(store_path, "SELECT COUNT(*) FROM claims")[0][0] > 0
    before = set(_stored_keys(store_path))
    assert before <= set(_lines(log))  # what it stored, it ran
    start = time.monotonic()
    with Store(store_path) as store:  # lease 600 s: only the dead-pid check makes this quick
        result = run_sweep(parse_spec(_SPEC), store, executor=InProcessExecutor(), progress=False)
    assert time.monotonic() - start < 60
    assert (result.skipped, result.completed, result.running_elsewhere) == (len(before), 40 - len(before), 0)
    stored = _stored_keys(store_path)
    assert len(stored) == len(set(stored)) == 40


def test_lease_of_a_driver_elsewhere_expires(tmp_path: Path) -> None:
    spec = parse_spec({**_SPEC, "draws": 2})
    keys = [t.key for t in spec.iter_trials()]
    other = "another-host.example:4242:feedbeef"
    with Store(tmp_path / "s.sqlite") as store:
        assert store.claim(keys[:3], other, lease_seconds=1.0) == keys[:3]
        early = run_sweep(spec, store, executor=InProcessExecutor(), progress=False, wait=False)
        assert (early.completed, early.running_elsewhere, early.elsewhere) == (1, 3, 0)
        assert store.claimed_elsewhere(keys) == set(keys[:3])
        start = time.monotonic()
        late = run_sweep(spec, store, executor=InProcessExecutor(), progress=False, lease_seconds=2.0)
        waited = time.monotonic() - start
        assert (late.skipped, late.completed, late.running_elsewhere) == (1, 3, 0)
        assert 0.3 < waited < 30  # it waited for the lease, then ran the trials itself
        assert store.count("shared") == 4 and store.live_claims() == 0


def test_waits_for_a_live_driver_elsewhere(tmp_path: Path) -> None:
    spec = parse_spec({**_SPEC, "draws": 2})
    trials = list(spec.iter_trials())
    other = "another-host.example:4242:feedbeef"
    path = tmp_path / "s.sqlite"
    with Store(path) as store:
        store.register_sweep(spec.to_dict())
        store.claim([t.key for t in trials[:2]], other, lease_seconds=60.0)

        def other_driver() -> None:  # finishes its two trials half a second later
            time.sleep(0.5)
            with Store(path) as mine:
                for trial in trials[:2]:
                    mine.write(run_trial(trial))

        thread = threading.Thread(target=other_driver)
        thread.start()
        result = run_sweep(spec, store, executor=InProcessExecutor(), progress=False, lease_seconds=1.0)
        thread.join()
    assert (result.completed, result.elsewhere, result.running_elsewhere) == (2, 2, 0)


class _Interrupting(InProcessExecutor):
    """Raises KeyboardInterrupt (as Ctrl-C does) after ``after`` trials."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after = after

    def map_unordered(self, function: Any, items: Any) -> Iterator[tuple[Any, Any]]:
        for count, pair in enumerate(super().map_unordered(function, items)):
            if count == self.after:
                raise KeyboardInterrupt
            yield pair


def test_interrupt_keeps_records_and_releases_claims(tmp_path: Path) -> None:
    spec = parse_spec(_SPEC)
    path = tmp_path / "s.sqlite"
    with Store(path) as store, pytest.raises(KeyboardInterrupt):
        run_sweep(spec, store, executor=_Interrupting(after=3), progress=False)
    with Store(path, read_only=True) as store:
        assert store.count("shared") == 3 and store.live_claims() == 0
    assert _query(path, "SELECT COUNT(*) FROM claims") == [(0,)]
    with Store(path) as store:
        resumed = run_sweep(spec, store, executor=InProcessExecutor(), progress=False)
    assert (resumed.skipped, resumed.completed) == (3, 37)


def test_claim_protocol(tmp_path: Path) -> None:
    spec = parse_spec({**_SPEC, "draws": 2})
    trials = list(spec.iter_trials())
    keys = [t.key for t in trials]
    with Store(tmp_path / "s.sqlite") as store:
        assert store.claim(keys[:2], "a-host:1:a", 60.0) == keys[:2]
        assert store.claim(keys, "b-host:2:b", 60.0) == keys[2:]  # live claims of a are skipped
        assert store.claim(keys[:1], "a-host:1:a", 60.0) == keys[:1]  # a holder may claim again
        assert store.release("b-host:2:b", keys[3:]) == 1
        store.write(run_trial(trials[0]))  # a record frees its claim, whoever held it
        assert store.claim(keys, "c-host:3:c", 60.0) == keys[3:]  # stored and live-claimed are taken
        assert store.claimed_elsewhere(keys, "c-host:3:c") == {keys[1], keys[2]}
        assert store.renew("a-host:1:a", lease_seconds=0.05) == 1
        time.sleep(0.1)
        assert store.claim(keys[1:2], "c-host:3:c", 60.0) == keys[1:2]  # expired: taken over
        assert store.release("c-host:3:c") == 2 and store.release("b-host:2:b") == 1
        assert store.live_claims() == 0
        with pytest.raises(ValueError, match=r"lease_seconds: must be a positive number"):
            store.claim(keys, "a-host:1:a", 0)


def test_dead_owner_and_lease_keeper(tmp_path: Path) -> None:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    dead = f"{socket.gethostname()}:{int(finished.stdout)}:x"
    assert owner_is_dead(dead) and not owner_is_dead(f"{socket.gethostname()}:{os.getpid()}:x")
    assert not owner_is_dead("another-host.example:1:x") and not owner_is_dead("free text")
    path = tmp_path / "s.sqlite"
    with Store(path) as store:
        assert store.claim(["k1"], dead, 600.0) == ["k1"]
        assert store.claim(["k1"], "me-host:1:me", 600.0) == ["k1"]  # the dead holder is passed over
        keeper = LeaseKeeper(path, "me-host:1:me", lease_seconds=0.3).start()
        try:
            time.sleep(0.6)
            assert store.claim(["k1"], "you-host:2:you", 1.0) == []  # kept alive past its lease
        finally:
            keeper.stop()
        time.sleep(0.4)
        assert store.claim(["k1"], "you-host:2:you", 1.0) == ["k1"]
