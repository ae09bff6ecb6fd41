"""Issue 12 item 2's data check on the model with transit through the beam: the Kalman filter's
τ-ahead prediction errors on a simulated record have the variance that the covariance
propagation Σ + Φᵐ(P⁺ − Σ)Φᵐᵀ predicts, on a grid of τ from τ_ent to 32 τ_ent.

(test_witness.py checks the same on the six-dimensional wall-mode model through and beyond
τ_ent.) The configuration is the one in test_kong.py that entangles with transit: the station's
cell at 450 K, 100 nT along [1,1,1], a 3 mm waist and 10 mW of probe (ξ² = 0.868,
τ_ent = 0.20 ms); the record is the exact simulator's, with its own transit modes.
"""

import pytest
from helpers import station_apparatus
from hotspin.analysis.experiment import derive
from hotspin.analysis.qnd import (
    ContinuousReadout,
    KalmanFilter,
    entanglement_lifetime,
    prediction_check,
    squeezing_parameter,
)
from hotspin.simulators.spin_noise import ExactSpinNoise

RATE = 100e3


@pytest.fixture(scope="module")
def filtered():
    apparatus = station_apparatus(beam_waist_m=3e-3, probe_power_W=10e-3)
    derived = derive(apparatus)
    readout = ContinuousReadout.from_apparatus(derived)
    block = ExactSpinNoise.from_derived(derived, RATE, seed=21).block(round(2.0 * RATE))
    record = block.atomic_angle_rad + block.white_noise_rad
    kalman = KalmanFilter(readout, RATE)
    return apparatus, readout, kalman, record, kalman.run(record)


def test_the_configuration_has_transit_modes_and_entangles(filtered):
    _, readout, _, _, _ = filtered
    assert readout.unit_matrices()[0].shape == (42, 42)  # 7 spatial modes of the 6-dim model
    assert squeezing_parameter(readout) == pytest.approx(0.868, abs=2e-3)
    assert entanglement_lifetime(readout) == pytest.approx(0.20e-3, abs=0.01e-3)


@pytest.mark.parametrize("multiple", [1.0, 2.0, 4.0, 8.0, 16.0, 32.0])
def test_tau_ahead_prediction_errors_have_the_propagated_variance_beyond_tau_ent(
    filtered, multiple
):
    _, readout, kalman, record, output = filtered
    m = round(multiple * entanglement_lifetime(readout) * RATE)
    errors, predicted = kalman.prediction_errors(record, output, m)
    check = prediction_check([errors], predicted, m / RATE)
    assert abs(check.pull) < 4.0, check  # 4 standard errors (batch means)
    assert check.uncertainty < 0.01  # the record resolves the variance to better than 1 %
    # The forecast that ignores the record (thermal variance of the angle) is rejected while
    # the record tells it apart by far (up to 8 τ_ent; at 16 τ_ent P is 2 % below thermal and
    # the pull scatters about −5).
    _, _, sigma, C = readout.unit_matrices()
    thermal = float(C @ sigma @ C) + kalman.measurement_variance
    if multiple <= 8.0:
        assert prediction_check([errors], thermal, m / RATE).pull < -5.0
