"""The shared vocabulary of the sweep: events, jobs, the job contract, state, the pure reducer and scheduler,
the sweep config and the job-side recipe runner.

dispatchers/, stores/ and recipes/ import this package and nothing else of orchestrator/ (pyproject.toml's
import-linter contracts check it). Nothing here imports the service or an interface (CLI, HTTP, attach, render).
"""
