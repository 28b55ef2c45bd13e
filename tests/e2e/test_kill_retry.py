"""Kill-and-retry: a cycle SIGKILLed at any stage boundary or inside the store's transaction, then run
again, leaves exactly what a clean run leaves.

A 300-person sandbox is run once cleanly, step by step in one process (kill_driver.py calls the stage
functions as the DAG tasks do), with a copy of the var directory after every step. Each trial starts
from the copy taken before its step, runs that step and the rest in a child process that a
monkeypatch SIGKILLs at the trial's point (no hook in production code), then runs the same steps again
in a fresh process, as a retried task and its downstream tasks would. Its outcome (store tables,
ledger, landed and staged batches, partner files, run records, report data; kill_driver.outcome) must
hash as the clean run's does, wall-clock fields aside (kill_driver.WALL_CLOCK_FIELDS says which and why).
Each of these runs is a process forked from one fork server that has only imported the stages
(kill_driver.PRELOAD), so that some seventy runs do not import them seventy times.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import kill_driver
import pytest
from kill_driver import PRELOAD, STEPS, outcome

pytestmark = pytest.mark.e2e

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PERSONS = 300

# (step the child starts from, kill point); see kill_driver's docstring for the notation
KILL_POINTS = [
    # ingestion: every stage's boundary; inside (cdpf: SQL, police: REST): a batch not yet renamed into
    # place, a landed batch not in the ledger, a batch staged without its verdict, a staged file half
    # published
    ("pull:cdpf", "call:stages.ingest.pull_stage:1"),
    ("pull:cdpf", "replace:-:2:connectors.landing.BatchWriter.publish"),
    ("pull:cdpf", "call:core.storage.Storage.record_batch:1"),
    ("validate:cdpf", "call:stages.ingest.validate_stage:1"),
    ("validate:cdpf", "call:core.storage.Storage.set_verdict:1"),
    ("pull:civil", "call:stages.ingest.pull_stage:1"),
    ("validate:civil", "call:stages.ingest.validate_stage:1"),
    ("pull:hrss", "call:stages.ingest.pull_stage:1"),
    ("validate:hrss", "call:stages.ingest.validate_stage:1"),
    ("pull:police", "call:stages.ingest.pull_stage:1"),
    ("validate:police", "call:stages.ingest.validate_stage:1"),
    ("validate:police", "replace:-:1:stages.ingest.validate_stage"),
    ("validate:police", "after:stages.ingest.validate_stage:1"),
    # merge: its boundary, inside the store transaction (statements, bulk inserts), after the commit
    ("merge", "call:stages.merge.merge_stage:1"),
    ("merge", "call:store.master_store.MasterStore.apply_merge:1"),
    ("merge", "execute:-:1:store.master_store.MasterStore.apply_merge"),
    ("merge", "execute:-:3:store.master_store.MasterStore.apply_merge"),
    ("merge", "call:store.backends.base.BulkSession.insert:1"),
    ("merge", "call:store.backends.base.BulkSession.insert:3"),
    ("merge", "after:store.master_store.MasterStore.apply_merge:1"),
    ("merge", "call:core.results.StageResult.save:1"),
    # eligibility: boundary, inside the decisions transaction, decisions stored but not filed
    ("eligibility", "call:stages.eligibility.eligibility_stage:1"),
    ("eligibility", "execute:-:2:store.master_store.MasterStore.apply_decisions"),
    ("eligibility", "after:store.master_store.MasterStore.apply_decisions:1"),
    ("eligibility", "call:core.results.StageResult.save:1"),
    # exchange: boundary, between partner files, before the returned rejects
    ("exchange", "call:stages.exchange.exchange_stage:1"),
    ("exchange", "replace:-:1:stages.exchange.exchange_stage"),
    ("exchange", "replace:-:3:stages.exchange.exchange_stage"),
    ("exchange", "call:stages.exchange.write_pending_rejects:1"),
    # audit and delivery: boundaries
    ("audit", "call:stages.audit.audit_stage:1"),
    ("deliver", "call:stages.deliver.deliver_stage:1"),
    # report: boundary, and the end of the run
    ("report", "call:stages.report.report_stage:1"),
    ("report", "after:stages.report.report_stage:1"),
]
# trials run side by side in child processes (each in its own copy of var/)
WORKERS = int(os.environ.get("LIANBAN_KILL_WORKERS", "3"))
# every run of the harness is a child of one fork server (kill_driver.PRELOAD imported once)
FORKS = multiprocessing.get_context("forkserver")


@dataclass
class Trial:
    killed: subprocess.CompletedProcess[str]
    retried: subprocess.CompletedProcess[str] | None
    differ: list[str]
    seconds: float


def _driver(
    var: Path, first: str, arg: str, env: dict[str, str], log: Path
) -> subprocess.CompletedProcess[str]:
    """kill_driver.child in a process forked from the fork server; its output in log.stdout and log.stderr."""
    args = (str(var), env["KILL_AS_OF"], first, arg, {**env, "LIANBAN_VAR": str(var)}, str(ROOT), str(log))
    proc = FORKS.Process(target=kill_driver.child, args=args)
    proc.start()
    proc.join(timeout=600)
    if proc.exitcode is None:
        proc.kill()
        proc.join()
        raise AssertionError(f"the run from {first} ({arg}) took more than 600 s")
    out, err = (Path(f"{log}.{s}").read_text(errors="backslashreplace") for s in ("stdout", "stderr"))
    return subprocess.CompletedProcess(args, proc.exitcode, out, err)


def _trial(
    snapshots: Path, expected: dict[str, str], env: dict[str, str], trial: Path, first: str, kill: str
) -> Trial:
    """Kill a run from `first` at `kill`, run it again from `first`, and list what differs from clean."""
    started = time.monotonic()
    shutil.copytree(snapshots / str(STEPS.index(first) - 1), trial, symlinks=True)
    var = trial / "var"
    # the installation's keys (manifest signing, pseudonyms) are made once, on first use, at random: the
    # trial runs on the same installation as the clean run, so it has them from the start
    keys = snapshots.parent / "clean" / "var" / "keys"
    if keys.exists() and not (var / "keys").exists():
        shutil.copytree(keys, var / "keys")
    # the earlier steps' records name files by absolute path: as if they had run in this var directory
    clean = str(snapshots.parent / "clean" / "var")
    for record in var.rglob("*.json"):
        text = record.read_text(encoding="utf-8")
        if clean in text:
            record.write_text(text.replace(clean, str(var)), encoding="utf-8")
    killed = _driver(var, first, kill, env, trial.with_name(f"{trial.name}-killed"))
    if killed.returncode != -signal.SIGKILL:
        return Trial(killed, None, [], time.monotonic() - started)
    retried = _driver(var, first, "-", env, trial.with_name(f"{trial.name}-retried"))
    got = outcome(var) if retried.returncode == 0 else {}
    differ = sorted(k for k in expected.keys() | got.keys() if expected.get(k) != got.get(k))
    return Trial(killed, retried, differ, time.monotonic() - started)


@pytest.fixture(scope="module")
def trials(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Trial]:
    """A clean run with a snapshot after each step, then every kill point's trial."""
    from sandbox.simulator import running_police_simulator

    base = tmp_path_factory.mktemp("kill")
    var = base / "clean" / "var"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)])}
    env.pop("LIANBAN_VAR", None)
    subprocess.run(
        [sys.executable, "-m", "hub.cli", "sandbox", "init", "--persons", str(PERSONS), "--seed", "11"],
        env={**env, "LIANBAN_VAR": str(var)},
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    env["KILL_AS_OF"] = json.loads((var / "sandbox" / "sandbox.json").read_text(encoding="utf-8"))["as_of"]
    snapshots = base / "snapshots"
    FORKS.set_forkserver_preload(["__main__", *PRELOAD])  # __main__: pytest's, which a child would import
    shutil.copytree(var.parent, snapshots / "-1", symlinks=True)
    with running_police_simulator(var / "sandbox") as (url, token):
        env.update({"LIANBAN_POLICE_URL": url, "LIANBAN_POLICE_TOKEN": token})
        done = _driver(var, STEPS[0], f"snapshots={snapshots}", env, base / "clean-run")
        assert done.returncode == 0 and "done" in done.stdout, done.stderr[-3000:]
        expected = outcome(var)
        with ThreadPoolExecutor(WORKERS) as pool:
            futures = {
                f"{first}|{kill}": pool.submit(
                    _trial, snapshots, expected, env, base / f"trial-{i}", first, kill
                )
                for i, (first, kill) in enumerate(KILL_POINTS)
            }
            return {key: future.result() for key, future in futures.items()}


def test_the_harness_kills_at_every_stage_boundary_and_twenty_points_or_more() -> None:
    assert len(set(KILL_POINTS)) >= 20
    entered = {step for step, kill in KILL_POINTS if kill.startswith("call:") and kill.endswith("_stage:1")}
    assert entered == set(STEPS)


@pytest.mark.parametrize(("first", "kill"), KILL_POINTS, ids=[f"{s}-{k}" for s, k in KILL_POINTS])
def test_a_killed_run_retried_equals_a_clean_run(trials: dict[str, Trial], first: str, kill: str) -> None:
    trial = trials[f"{first}|{kill}"]
    assert trial.killed.returncode == -signal.SIGKILL, (
        f"the run was not killed at {kill} (exit {trial.killed.returncode}):\n{trial.killed.stderr[-3000:]}"
    )
    assert "done" not in trial.killed.stdout
    assert trial.retried is not None and trial.retried.returncode == 0, (
        trial.retried.stderr[-3000:] if trial.retried else ""
    )
    assert not trial.differ, (
        f"after a kill at {kill} and a retry from {first} ({trial.seconds:.1f} s), these differ "
        f"from a clean run: {trial.differ}"
    )
