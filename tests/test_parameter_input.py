"""Typed parameter values: numbers as people write them, vectors checked component by
component, and the limit that actually applies named when a value is refused."""

import pytest
from hotspin.analysis.checks import ParameterError
from hotspin.instruments.station_config import StationConfig
from hotspin.procedures.parameters import assign
from hotspin.procedures.registry import PROCEDURES

from hotspin.cli import main
from hotspin.simulate import SIMULATE_PARAMETERS


def test_an_integer_in_exponent_notation_is_that_integer():
    parameters = PROCEDURES["spin_noise"].parameter_map()
    assert assign(parameters, ["averages=1e3"])["averages"] == 1000
    assert isinstance(assign(parameters, ["averages=1e3"])["averages"], int)
    with pytest.raises(ParameterError, match=r"averages = 2.5 must be an integer in \[1, "):
        assign(parameters, ["averages=2.5"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("100,0", "field_nT = 100,0 has 2 component(s); it needs 3, comma-separated"),
        ("1,2,3,4", "has 4 component(s); it needs 3"),
        ("100,abc,0", "field_nT = 100,abc,0: component 2 ('abc') is not a number"),
    ],
)
def test_a_vector_of_the_wrong_length_or_with_a_non_number_says_so(text, message):
    with pytest.raises(ParameterError) as refused:
        assign(SIMULATE_PARAMETERS, [f"field_nT={text}"])
    assert message in str(refused.value)
    assert "outside the allowed range" not in str(refused.value)
    assert assign(SIMULATE_PARAMETERS, ["field_nT=100, 0, 5"])["field_nT"] == [100.0, 0.0, 5.0]


@pytest.mark.parametrize("value", ["800", "600"])
def test_a_refused_temperature_names_the_station_limit_when_it_is_the_tighter(
    tmp_path, capsys, value
):
    # The parameter allows [290, 700] K; the embedded station's heater limit is 470 K.
    assert StationConfig.load().heater.max_temperature_K == 470.0
    out = tmp_path / "never.h5"
    args = ["run", "warmup", "--set", f"target_temperature_K={value}", "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert (
        f"target_temperature_K = {value} is outside the allowed range [290, 470] K "
        "(heater.max_temperature_K of the station)"
    ) in err
    assert not out.exists()
    # Without a station file's limit, the parameter's own range is the one named.
    parameters = PROCEDURES["temperature_sweep"].parameter_map()
    with pytest.raises(
        ParameterError, match=r"stop_K = 800 is outside the allowed range \[290, 700\]"
    ):
        assign(parameters, ["stop_K=800"])
    maxima = PROCEDURES["temperature_sweep"].station_maxima(StationConfig.load())
    with pytest.raises(ParameterError, match=r"\[290, 470\] K \(heater.max_temperature_K"):
        assign(parameters, ["stop_K=800"], maxima)
