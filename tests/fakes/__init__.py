"""Test doubles and helpers shared by the tests."""

import pytest

# Plain asserts in the shared W&B checks should explain themselves like asserts in test modules do.
pytest.register_assert_rewrite("fakes.wandb_helpers", "tests.fakes.wandb_helpers")
