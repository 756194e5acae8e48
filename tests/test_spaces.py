"""The normalized space: exact round trips, valid decoded values, the search center and box."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from optimizers.config import ParameterConfig
from optimizers.spaces import Space, decode_value, encode_value

anywhere = st.floats(-10, 10, allow_nan=False)


@st.composite
def numeric_param(draw, distribution: str) -> ParameterConfig:
    if distribution == "uniform":
        lo = draw(st.floats(-1e6, 1e6))
        hi = lo + draw(st.floats(1e-3, 1e6))
    elif distribution == "int_uniform":
        lo = float(draw(st.integers(-1000, 1000)))
        hi = lo + draw(st.integers(1, 1000))
    elif distribution == "uniform_pow2":
        lo = float(2 ** draw(st.integers(0, 10)))
        hi = lo * 2 ** draw(st.integers(1, 10))
    elif distribution == "log_normal":
        lo = 10 ** draw(st.floats(-8, 3))
        hi = lo * 10 ** draw(st.floats(0.01, 6))
    else:  # logit_normal
        lo = draw(st.floats(1e-4, 0.5))
        hi = draw(st.floats(lo + 1e-3, 0.9999))
    return ParameterConfig(distribution=distribution, min=lo, max=hi)


def _valid(p: ParameterConfig, v) -> bool:
    if p.distribution == "categorical":
        return v in p.choices
    if not (p.min <= v <= p.max):
        return False
    if p.distribution == "int_uniform":
        return isinstance(v, int)
    if p.distribution == "uniform_pow2":
        return isinstance(v, int) and v > 0 and v & (v - 1) == 0
    return isinstance(v, float)


@given(numeric_param("uniform"), st.data())
def test_uniform_round_trip(p, data):
    v = data.draw(st.floats(p.min, p.max))
    assert math.isclose(decode_value(p, encode_value(p, v)), v, rel_tol=1e-9, abs_tol=1e-9 * (p.max - p.min))


@given(numeric_param("int_uniform"), st.data())
def test_int_round_trip_is_exact(p, data):
    v = data.draw(st.integers(int(p.min), int(p.max)))
    assert decode_value(p, encode_value(p, v)) == v


@given(numeric_param("uniform_pow2"), st.data())
def test_pow2_round_trip_is_exact(p, data):
    e = data.draw(st.integers(round(math.log2(p.min)), round(math.log2(p.max))))
    assert decode_value(p, encode_value(p, 2**e)) == 2**e


@given(numeric_param("log_normal"), st.data())
def test_log_round_trip(p, data):
    v = data.draw(st.floats(p.min, p.max))
    assert math.isclose(decode_value(p, encode_value(p, v)), v, rel_tol=1e-9)


@given(numeric_param("logit_normal"), st.data())
def test_logit_round_trip(p, data):
    v = data.draw(st.floats(p.min, p.max))
    # Resolution is in 1 - v, where a discount factor lives.
    assert math.isclose(1 - decode_value(p, encode_value(p, v)), 1 - v, rel_tol=1e-9, abs_tol=1e-12)


@given(
    st.lists(st.one_of(st.integers(), st.text(max_size=5), st.booleans()), min_size=1, max_size=8, unique=True),
    st.data(),
)
def test_categorical_round_trip(choices, data):
    p = ParameterConfig(distribution="categorical", choices=choices)
    v = data.draw(st.sampled_from(choices))
    assert decode_value(p, encode_value(p, v)) == v


@settings(max_examples=200)
@given(
    st.sampled_from(["uniform", "int_uniform", "uniform_pow2", "log_normal", "logit_normal"]).flatmap(numeric_param),
    anywhere,
)
def test_decoded_values_are_always_valid_and_stable(p, x):
    v = decode_value(p, x)
    assert _valid(p, v), (p, x, v)
    assert -1 <= encode_value(p, v) <= 1
    assert decode_value(p, encode_value(p, v)) == v or math.isclose(
        decode_value(p, encode_value(p, v)), v, rel_tol=1e-9
    )


def test_integers_get_equal_shares_of_the_space():
    p = ParameterConfig(distribution="int_uniform", min=0, max=3)
    counts = np.bincount([decode_value(p, x) for x in np.linspace(-1, 1, 4001)])
    assert counts.min() >= 999 and counts.max() <= 1001


def test_center_and_box():
    space = Space(
        {
            "lr": ParameterConfig(distribution="log_normal", min=1e-5, max=1e-1, mean=1e-3, scale=0.25),
            "bs": ParameterConfig(distribution="uniform_pow2", min=16, max=1024),
            "width": ParameterConfig(distribution="categorical", choices=[32, 64, 128], mean=128),
        }
    )
    center = space.decode(space.center())
    assert math.isclose(center["lr"], 1e-3, rel_tol=1e-9)
    assert center["bs"] in (64, 128) and center["width"] == 128
    assert space.scales().tolist() == [0.25, 0.5, 0.5]
    assert space.discrete
