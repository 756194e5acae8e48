"""Early stopping through the real service: real subprocess jobs that report learning curves, a real SQLite log."""

from __future__ import annotations

import io
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from dispatchers.local import LocalDispatcher
from dispatchers.registry import RoutingDispatcher, parse_routes
from orchestrator.core import early_stopping
from orchestrator.core import events as ev
from orchestrator.core.config import ConfigError, load_config
from orchestrator.core.contract import ContractReader
from orchestrator.core.jobs import JobHandle, JobSpec, Output, Report
from orchestrator.core.reducer import reduce
from orchestrator.core.state import SweepState
from orchestrator.logs import configure_logging
from orchestrator.runtime import build_service
from stores.sqlite import SQLiteStore
from tests.conftest import ROOT, ledger, serve_env

CURVE_JOB = ROOT / "tests" / "jobs" / "curve_job.py"

SWEEP = """
max_trials = {trials}
max_parallel_jobs = 1
scheduler = "sequential"
monitoring_interval = 60
recipe_module = "curve"
command = ["{python}", "{job}"]
max_retries = 0
seed = 3

[early_stopping]
method = "{method}"
grace_steps = 2
reduction_factor = 3
min_trials = 2
evaluate_stopped = {evaluate}

[protein_config]
metric = "score"
method = "random"

[protein_config.parameters."toy.x"]
distribution = "uniform"
min = 0.0
max = 1.0
"""


def write(cwd: Path, trials: int = 3, method: str = "asha", evaluate: bool = False) -> None:
    text = SWEEP.format(
        trials=trials, method=method, evaluate=str(evaluate).lower(), python=sys.executable, job=CURVE_JOB
    )
    (cwd / "sweep.toml").write_text(text)


def serve(cwd: Path, sweep: str = "es", **env: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "orchestrator", "serve", "--sweep", sweep, "--config", "sweep.toml"]
    return subprocess.Popen(
        [*argv, "--log-format", "json"],
        cwd=cwd,
        env=serve_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def logged(cwd: Path, sweep: str = "es") -> list[ev.Event]:
    store = SQLiteStore(cwd / "train_dir" / sweep / "events.db")
    try:
        return [s.event for s in store.read(0)]
    finally:
        store.close()


def fold_all(events: list[ev.Event]) -> SweepState:
    state = SweepState()
    for e in events:
        state = reduce(state, e)
    return state


def test_the_reader_keeps_increasing_reports_and_warns_about_the_rest() -> None:
    reader = ContractReader()
    lines = [
        'SWEEP_REPORT {"step": 10, "score": 0.5, "loss": 2}',
        "SWEEP_REPORT {not json",
        'SWEEP_REPORT {"step": 10, "score": 0.6}',
        'SWEEP_REPORT {"score": 0.6}',
        'SWEEP_REPORT {"step": 20, "score": "high"}',
        'SWEEP_REPORT {"step": 20, "score": 0.7}',
    ]
    updates = [u for line in lines for u in reader.read(line)[1:]]
    assert [u for u in updates if isinstance(u, Report)] == [
        Report(10.0, {"score": 0.5, "loss": 2}),
        Report(20.0, {"score": 0.7}),
    ]
    warnings = [u.line for u in updates if isinstance(u, Output)]
    assert len(warnings) == 4 and all(w.startswith("warning: SWEEP_REPORT ignored") for w in warnings)
    assert "not above the last" in warnings[1] and "no 'step'" in warnings[2] and "not a number" in warnings[3]


@pytest.mark.parametrize(
    ("field", "value"),
    [("method", "hyperband"), ("reduction_factor", 1), ("grace_steps", 0), ("min_trials", 0), ("typo", 1)],
)
def test_bad_early_stopping_values_name_the_field(field: str, value: object) -> None:
    base = {"protein_config": {"metric": "score", "parameters": {"x": {"distribution": "uniform", "min": 0, "max": 1}}}}
    with pytest.raises(ConfigError, match=f"early_stopping.{field}"):
        load_config(base={**base, "early_stopping": {field: value}})


def test_bad_early_stopping_value_exits_2_from_the_command_line(sweep_dir: Path) -> None:
    write(sweep_dir, method="hyperband")
    proc = serve(sweep_dir)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "early_stopping.method" in out and "Traceback" not in out


def test_reports_arrive_as_events_and_bad_ones_are_ignored(sweep_dir: Path) -> None:
    write(sweep_dir, trials=1, method="none")
    proc = serve(sweep_dir, CURVE_STEPS="6", CURVE_STEP_SECONDS="0.3", CURVE_BAD_REPORTS="1")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    events = logged(sweep_dir)
    reports = [e for e in events if isinstance(e, ev.JobReported)]
    steps = [r.step for r in reports]
    assert reports and steps == sorted(set(steps)) and steps[-1] == 6  # throttled, increasing, the latest kept
    assert all(r.values["score"] == r.step and r.values["loss"] == pytest.approx(1 / r.step) for r in reports)
    assert "SWEEP_REPORT ignored" in out
    (trial,) = fold_all(events).shown_trials()
    assert trial.status == "completed" and trial.best_reported == 6.0 and trial.curve[-1] == (6.0, 6.0)


def test_asha_stops_poor_trials_at_their_rung_and_does_not_evaluate_them(sweep_dir: Path) -> None:
    write(sweep_dir, trials=3, method="asha")
    proc = serve(sweep_dir, CURVE_STEPS="20")
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, out
    events = logged(sweep_dir)
    state = fold_all(events)
    first, second, third = state.shown_trials()
    assert first.status == "completed" and first.score == 20.0
    for t in (second, third):
        assert t.status == "stopped", t
        assert t.stop_reason is not None and t.stop_reason.startswith("asha at rung 0 (step 2)")
        assert 2 <= t.stop_step < 20 and t.score == pytest.approx(t.stop_step / t.trial)
        assert t.cost > 0 and [j.kind for j in t.jobs] == ["train"]  # not evaluated
    starts = {key for kind, key, *_ in ledger(sweep_dir / "ledger.txt") if kind == "start"}
    ends = {key for kind, key, *_ in ledger(sweep_dir / "ledger.txt") if kind == "end"}
    assert "es_trial_0002.train.1" in starts and "es_trial_0002.train.1" not in ends  # cancelled midway
    assert "es_trial_0002.eval.1" not in starts
    assert state.early_stopped == 2 and state.best_trial == 1
    assert "stopped" in out

    # A replay reproduces the decisions: the pure rule over the folded log asks for exactly the stops it holds.
    asked: set[int] = set()
    replay = SweepState()
    for e in events:
        if isinstance(e, ev.TrialStopRequested):
            assert e.trial in {s.trial for s in early_stopping.decide(replay)}  # type: ignore[attr-defined]
        replay = reduce(replay, e)
        asked |= {s.trial for s in early_stopping.decide(replay)}  # type: ignore[attr-defined]
    assert asked == {e.trial for e in events if isinstance(e, ev.TrialStopRequested)} == {2, 3}


def test_evaluate_stopped_runs_the_eval_of_a_stopped_trial(sweep_dir: Path) -> None:
    write(sweep_dir, trials=2, method="median", evaluate=True)
    proc = serve(sweep_dir, CURVE_STEPS="20")
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, out
    _, second = fold_all(logged(sweep_dir)).shown_trials()
    assert second.status == "stopped" and [j.kind for j in second.jobs] == ["train", "eval"]
    assert second.score == 10.0  # what its eval reported (steps / trial), not its last report


def test_a_stop_decided_before_a_crash_is_carried_out_on_restart(sweep_dir: Path) -> None:
    write(sweep_dir, trials=1, method="asha")
    env = {"CURVE_STEPS": "40", "CURVE_STEP_SECONDS": "0.25"}
    proc = serve(sweep_dir, **env)
    deadline = time.time() + 60
    while "start es_trial_0001.train.1" not in " ".join(" ".join(r) for r in ledger(sweep_dir / "ledger.txt")):
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)  # the service dies; its job runs on
    proc.communicate(timeout=30)
    # The decision made durable just before the crash, as the service writes it, with no cancel after it.
    store = SQLiteStore(sweep_dir / "train_dir" / "es" / "events.db")
    try:
        store.append([ev.TrialStopRequested(trial=1, step=2.0, reason="asha at rung 0 (step 2): test")])
    finally:
        store.close()
    proc = serve(sweep_dir, **env)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, out  # the sweep's one trial was stopped: no trial completed
    (trial,) = fold_all(logged(sweep_dir)).shown_trials()
    assert trial.status == "stopped" and trial.stop_step < 40 and [j.kind for j in trial.jobs] == ["train"]
    rows = ledger(sweep_dir / "ledger.txt")
    assert ["start", "es_trial_0001.train.1"] in [r[:2] for r in rows]
    assert ["term", "es_trial_0001.train.1"] in [r[:2] for r in rows]  # the restart cancelled it (SIGTERM)
    assert ["end", "es_trial_0001.train.1"] not in [r[:2] for r in rows]


@pytest.mark.parametrize("minimize", [False, True])
def test_the_rules_judge_the_last_arrival_against_those_before_it(minimize: bool) -> None:
    settings = {"reduction_factor": 3, "min_trials": 3}
    sign = -1 if minimize else 1  # the same ranking, whichever the goal
    arrived = tuple((t, sign * v) for t, v in [(1, 0.9), (2, 0.5), (3, 0.7)])
    assert early_stopping.judge("median", arrived[:2], settings, minimize) is None  # fewer than min_trials
    assert early_stopping.judge("median", arrived, settings, minimize) is None  # 0.7 is the median of 0.9 and 0.5
    worse = (*arrived, (4, sign * 0.6))
    assert "median" in (early_stopping.judge("median", worse, settings, minimize) or "")
    assert "ranked 2 of 3" in (early_stopping.judge("asha", arrived, settings, minimize) or "")  # keeps top 1
    best = (*arrived, (4, sign * 0.95))
    assert early_stopping.judge("asha", best, settings, minimize) is None
    assert early_stopping.rung_of(2.9, {"grace_steps": 3}) == -1
    assert [early_stopping.rung_of(s, {"grace_steps": 3}) for s in (3, 8.9, 9, 27, 80)] == [0, 0, 1, 2, 2]


def test_a_stopped_trial_reads_as_stopped_in_the_w_and_b_record() -> None:
    from stores.wandb_records import trial_record

    config = {"protein_config": {"metric": "score"}, "early_stopping": {"method": "asha", "grace_steps": 2}}
    events: list[ev.Event] = [
        ev.SweepCreated(sweep="s", config=config),
        ev.TrialSuggested(trial=1, run="s_trial_0001", params={"x": 1}),
        ev.JobRequested(key="k", trial=1, kind="train", argv=["t"]),
        ev.JobReported(key="k", step=3, values={"score": 0.2, "loss": 4}),
        ev.TrialStopRequested(trial=1, step=3, reason="asha at rung 0 (step 2): test"),
        ev.JobExited(key="k", exit_code=143, error="cancelled", duration=5.0),
        ev.TrialStopped(trial=1, score=0.2, step=3, cost=5.0),
    ]
    state = fold_all(events)
    (trial,) = state.shown_trials()
    record = trial_record(state, trial)
    assert record.exit_code == 0 and record.summary["sweep/status"] == "stopped"
    assert record.summary["sweep/stopped_at_step"] == 3 and record.summary["sweep/score"] == 0.2
    assert record.summary["sweep/report_step"] == 3 and state.rungs[0] == ((1, 0.2),)


class CancelFailsFirst(LocalDispatcher):
    """The local dispatcher, except that its first cancel raises (a dispatcher error, e.g. a flaky API)."""

    def __init__(self) -> None:
        super().__init__(poll_interval=0.05, kill_grace=2.0)
        self.cancels = 0

    async def cancel(self, spec: JobSpec, handle: JobHandle) -> None:
        self.cancels += 1
        if self.cancels == 1:
            raise RuntimeError("cancel refused (the first time)")
        await super().cancel(spec, handle)


def test_a_cancel_that_fails_is_retried_in_process(sweep_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(sweep_dir, trials=2, method="asha")
    monkeypatch.setenv("CURVE_STEPS", "40")
    monkeypatch.setenv("CURVE_STEP_SECONDS", "0.25")
    log = io.StringIO()
    configure_logging("json", stream=log)
    service = build_service(load_config(sweep_dir / "sweep.toml", {"sweep_name": "es"}))
    dispatcher = CancelFailsFirst()
    service.dispatcher = RoutingDispatcher(parse_routes("local"), dispatchers={"local": dispatcher})
    state = anyio.run(service.run)
    first, second = state.shown_trials()
    assert first.status == "completed" and second.status == "stopped"
    assert dispatcher.cancels == 2  # refused once, then done in the same serve, no restart needed
    assert second.stop_step < 40
    rows = [r[:2] for r in ledger(sweep_dir / "ledger.txt")]
    assert ["term", "es_trial_0002.train.1"] in rows and ["end", "es_trial_0002.train.1"] not in rows
    text = log.getvalue()
    assert "could not stop es_trial_0002.train.1 (attempt 1)" in text and "cancel refused" in text


def test_a_stopped_trial_is_told_to_the_optimizer_at_its_imputed_final_score_and_an_unknown_cost() -> None:
    from orchestrator.service import _observation

    config = {"protein_config": {"metric": "score"}, "early_stopping": {"method": "asha", "grace_steps": 2}}
    events: list[ev.Event] = [ev.SweepCreated(sweep="s", config=config)]
    for n, curve in ((1, [1.0, 2.0, 2.5]), (2, [1.5, 3.5, 4.0]), (3, [0.5, 1.0])):
        key = f"s_trial_000{n}.train.1"
        events += [
            ev.TrialSuggested(trial=n, run=f"s_trial_000{n}", params={"x": n}),
            ev.JobRequested(key=key, trial=n, kind="train", argv=["t"]),
        ]
        events += [ev.JobReported(key=key, step=s, values={"score": v}) for s, v in enumerate(curve, start=1)]
        if n < 3:  # 1 and 2 reached rung 0 (step 2) at 2.0 and 3.5, and scored 10 and 9.5 at the end
            events += [
                ev.JobExited(key=key, exit_code=0, duration=8.0),
                ev.TrialCompleted(trial=n, score=10.5 - n / 2, cost=8.0),
            ]
        else:  # 3 reached it at 1.0 and was stopped at step 2, a quarter of its run, having spent 2 s
            events += [
                ev.TrialStopRequested(trial=3, step=2, reason="asha at rung 0 (step 2): test"),
                ev.JobExited(key=key, exit_code=143, error="cancelled", duration=2.0),
                ev.TrialStopped(trial=3, score=1.0, step=2, cost=2.0),
            ]
    state = fold_all(events)
    finals = {1: 10.0, 2: 9.5}
    stopped = state.recent[-1]
    assert stopped.status == "stopped"
    # Its rung value 1.0 plus the median of the gains 10 - 2 and 9.5 - 3.5 from that rung: 1 + 7.
    assert early_stopping.imputed_score(stopped, state, finals) == pytest.approx(8.0)
    assert early_stopping.imputed_score(stopped, state, {}) is None  # no completed trial to learn the gain from
    told = _observation(stopped, state, finals)
    assert told.score == pytest.approx(8.0) and told.cost is not None and math.isnan(told.cost) and not told.failed
    assert _observation(stopped, state, {}).score == 1.0  # nothing to impute from: its last reported value


def test_protein_models_cost_without_the_stopped_trials_it_was_told_of_at_an_unknown_cost() -> None:
    from optimizers import Observation, ProteinConfig
    from optimizers.base import ObservationLog
    from optimizers.protein import Protein

    space = {n: {"distribution": "uniform", "min": 0.0, "max": 1.0} for n in ("x", "y")}
    protein = Protein(ProteinConfig(parameters=space), seed=0)
    log = ObservationLog()
    for i in range(16):  # completed runs cost 10 to 25 (dearer with x); every third trial was stopped
        x, y = (i * 0.37) % 1, (i * 0.61) % 1
        log.append(Observation({"x": x, "y": y}, -((x - 0.5) ** 2), math.nan if i % 3 == 2 else 10 + 15 * x))
    assert math.isnan(log[2].cost or 0.0)  # kept as unknown, not as "no cost given"
    for s in protein.suggest(log, [], 3):  # the model path, its cost model fitted on the completed runs alone
        assert s.info["source"] == "bayes" and "fallback" not in s.info
        assert 9 < s.info["predicted_cost"] < 27
