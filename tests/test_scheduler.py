"""The scheduler's job command lines."""

from __future__ import annotations

from optimizers import ParameterConfig, ProteinConfig
from orchestrator.config import SweepConfig
from orchestrator.scheduler import OptimizingScheduler
from orchestrator.state import TrialState, freeze


def test_overrides_follow_the_sweeps_parameter_order() -> None:
    names = [f"trainer.p{i:02d}" for i in range(12)]  # enough keys that a hash order would differ
    config = SweepConfig(
        sweep_name="s",
        protein_config=ProteinConfig(
            parameters={n: ParameterConfig(distribution="uniform", min=0, max=1) for n in names}
        ),
        train_overrides={"trainer.total_timesteps": 1000},
    )
    trial = TrialState(1, "s_trial_0001", freeze({n: 0.5 for n in reversed(names)}))
    argv = OptimizingScheduler(config).train_argv(trial)
    overrides = argv[argv.index("--overrides") + 1 :]
    assert overrides == ["trainer.total_timesteps=1000", *(f"{n}=0.5" for n in names)]
    assert argv[argv.index("--args") + 1] == "run=s_trial_0001"
