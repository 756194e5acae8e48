"""Nothing a job prints can take the service down: a result line that breaks the contract fails its job with the
reason, and serve finishes the sweep. Real serve processes, real jobs, real SQLite logs."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator import events as ev
from orchestrator.contract import extract_score, parse_progress, parse_result_line, validate_result
from orchestrator.events import event_from_json, event_to_json
from tests.conftest import ROOT, SWEEP_TOML, run_orchestrator
from tests.fakes.sweeps import stored

ECHO_JOB = ROOT / "tests" / "jobs" / "echo_job.py"


# No retries, and no stop after failures in a row: a job that breaks the contract fails its trial at once, and the
# sweep goes on to the next trial's output.
def sweep_toml(trials: int) -> str:
    return "max_retries = 0\nmax_consecutive_failures = 0\n" + SWEEP_TOML.format(
        max_trials=trials, parallel=2, method="random", python=sys.executable, job=ECHO_JOB
    )


SWEEP = sweep_toml(1)

# Any JSON value, with the numbers that broke the planner before: 400-digit integers, bools, NaN, infinities.
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**300, max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
JSON_VALUES = st.recursive(
    _SCALARS, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=12
)
RESULTS = (
    st.fixed_dictionaries({"score": JSON_VALUES}, optional={"cost": JSON_VALUES, "metrics": JSON_VALUES}) | JSON_VALUES
)


def _line(value: Any) -> str:
    return "SWEEP_RESULT " + json.dumps(value, allow_nan=True)


SERVE_ARGS = ("serve", "--sweep", "poison", "--config", "sweep.toml", "--log-format")


def run_sweep(tmp: Path, outputs: list[bytes]) -> subprocess.CompletedProcess[str]:
    """A sweep of one trial per output (its train and eval both print it) under a real serve; the finished process.
    One serve for many outputs: each serve costs seconds to start."""
    (tmp / "sweep.toml").write_text(sweep_toml(len(outputs)))
    folder = tmp / "stdout"
    folder.mkdir(exist_ok=True)
    for i, out in enumerate(outputs, 1):
        (folder / f"poison_trial_{i:04d}.bin").write_bytes(out)
    return run_orchestrator(tmp, *SERVE_ARGS, "json", timeout=300, ECHO_STDOUT=str(folder))


def assert_finished(tmp: Path, proc: subprocess.CompletedProcess[str], trials: int = 1) -> list[Any]:
    """The sweep finished, not crashed, with every trial completed or failed; its trials, by number."""
    state, _ = stored(tmp, "poison")
    # 0 when a trial completed, 1 (EXIT_NO_TRIAL) when every one failed: either way the sweep finished
    assert proc.returncode == (0 if state.best_trial is not None else 1), proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert state.finished
    shown = state.shown_trials()
    assert [t.trial for t in shown] == list(range(1, trials + 1))
    assert all(t.status in ("completed", "failed") for t in shown)
    return shown


POISON = [
    ({"score": 1.0, "metrics": "x"}, "'metrics' must be a JSON object"),
    ({"score": 1.0, "metrics": [1, 2]}, "'metrics' must be a JSON object"),
    ({"score": 10**400}, "too large for a number"),
    ({"score": 1.0, "cost": 10**400}, "too large for a number"),
    ({"score": True}, "the reported score True is not a number"),
    ({"score": "0.5"}, "the reported score '0.5' is not a number"),
    ({"score": 1.0, "cost": "cheap"}, "the reported cost 'cheap' is not a number"),
    ({"score": 1.0, "metrics": {str(i): i for i in range(1001)}}, "'metrics' has 1001 entries"),
]


def test_a_poison_result_fails_its_trial_with_the_reason(tmp_path: Path) -> None:
    outputs = [(_line(result) + "\n").encode() for result, _ in POISON]
    trials = assert_finished(tmp_path, run_sweep(tmp_path, outputs), len(POISON))
    for trial, (result, reason) in zip(trials, POISON):
        assert trial.status == "failed" and reason in trial.reason, (str(result)[:80], trial.reason)


def test_a_poison_result_already_in_an_old_log_fails_its_trial_on_restart(tmp_path: Path) -> None:
    """A log written before results were checked at the boundary: the restart fails that trial, once, and ends."""
    from orchestrator.config import load_config
    from stores.sqlite import SQLiteStore

    (tmp_path / "sweep.toml").write_text(SWEEP)
    config = load_config(tmp_path / "sweep.toml", {"sweep_name": "poison"}).public_dict()
    run = "poison_trial_0001"
    db = tmp_path / "train_dir" / "poison" / "events.db"
    store = SQLiteStore(db)
    store.append(
        [
            ev.SweepCreated(sweep="poison", config=config),
            ev.TrialSuggested(trial=1, run=run, params={"toy.x": 0.1}),
            ev.JobRequested(key=f"{run}.train.1", trial=1, kind="train", argv=["t"]),
            ev.JobExited(key=f"{run}.train.1", exit_code=0, duration=1.0, result={"cost": 10**400}),
            ev.JobRequested(key=f"{run}.eval.1", trial=1, kind="eval", argv=["e"]),
            ev.JobExited(key=f"{run}.eval.1", exit_code=0, result={"score": 1.0, "metrics": "x"}),
        ]
    )
    store.close()
    for _ in range(2):  # and the restart after that one is as quiet
        (trial,) = assert_finished(tmp_path, run_sweep(tmp_path, [b""]))
        assert trial.status == "failed" and "too large for a number" in trial.reason, trial.reason


ANY_OUTPUT = st.one_of(RESULTS.map(lambda r: (_line(r) + "\n").encode()), st.binary(max_size=300))


@settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck))
@given(outputs=st.lists(ANY_OUTPUT, min_size=6, max_size=8))
def test_serve_finishes_whatever_the_jobs_print(tmp_path_factory: pytest.TempPathFactory, outputs: list[bytes]) -> None:
    tmp = tmp_path_factory.mktemp("any")
    assert_finished(tmp, run_sweep(tmp, outputs), len(outputs))


@settings(max_examples=600, deadline=None)
@given(result=RESULTS, text=st.text(max_size=40))
def test_the_parser_raises_only_value_error_and_what_it_passes_is_safe(result: Any, text: str) -> None:
    for line in (_line(result), "SWEEP_RESULT " + text):
        try:
            parsed = parse_result_line(line)
        except ValueError as exc:
            assert str(exc)
            continue
        # Whatever passed stores, reloads, and gives a score or a ValueError: never another exception.
        exited = ev.JobExited(key="k", exit_code=0, result=parsed)
        assert event_from_json(event_to_json(exited)).type == "JobExited"
        validate_result(parsed)
        try:
            extract_score(parsed, "score")
        except ValueError:
            pass


@settings(max_examples=300, deadline=None)
@given(sps=st.from_regex(r"[\d.]{1,400}", fullmatch=True), pct=st.from_regex(r"[\d.]{1,8}", fullmatch=True))
def test_a_progress_line_gives_finite_numbers_or_none(sps: str, pct: str) -> None:
    parsed = parse_progress(f"Epoch 1 / {sps} sps / {pct}% of 4.00 ksteps")
    assert parsed is None or all(math.isfinite(v) for v in parsed)
    assert parse_progress("Epoch 1 / 1.2.3 sps / 5% of 4.00 ksteps") is None


@pytest.mark.parametrize(
    "text, reason",
    [
        ("[" * 100_000, "nests deeper than 32 levels"),
        ('{"a":' * 40 + "1" + "}" * 40, "nests deeper than 32 levels"),
        ('{"score": 1, "pad": "' + "x" * 300_000 + '"}', "over the limit of 262144"),
        ('{"score": 1, "x": "\\ud800"}', "result.x is not UTF-8 text"),
        ('{"score": 1, "x": ' + "9" * 30 + "}", "result.x is an integer of 30 digits, beyond 64 bits"),
        ('{"score": 1e999}', "the reported score is inf, not a finite number"),
        ('{"score": NaN}', "the reported score is nan, not a finite number"),
    ],
)
def test_the_parser_names_the_rule_a_line_breaks(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        parse_result_line("SWEEP_RESULT " + text)


def test_the_contract_reader_takes_the_last_result_line_and_fails_a_malformed_one() -> None:
    from orchestrator.core.contract import ContractReader
    from orchestrator.core.jobs import Exited, Output, Progress

    reader = ContractReader()
    assert reader.read("Epoch 1 / 700 sps / 50.00% of 2.00 ksteps") == [
        Output("Epoch 1 / 700 sps / 50.00% of 2.00 ksteps"),
        Progress(1000.0, 2000.0, 700.0),
    ]
    reader.read('SWEEP_RESULT {"score": 1.0}')
    assert reader.exited(0, 1.0, None).result == {"score": 1.0}
    reader.read('SWEEP_RESULT {"score": "high"}')  # the last line is the result, even when an earlier one was fine
    ex = reader.exited(0, 1.0, None)
    assert ex.result is None and ex.error.startswith("malformed SWEEP_RESULT line: the reported score 'high'")
    assert reader.exited(None, 1.0, "SkyPilot job 3 FAILED").error.startswith("SkyPilot job 3 FAILED; malformed")
    reader.read('SWEEP_RESULT {"score": 2.0}')
    assert reader.exited(0, 1.0, None) == Exited(0, {"score": 2.0}, 1.0, None)
    assert ContractReader().exited(0, 1.0, None) == Exited(0, None, 1.0, None)
