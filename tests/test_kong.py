"""Kong et al.'s conditions in the model with transit: what the README states, computed twice.

450 K, B ∥ [1,1,1] at 100 nT, the embedded station's probe (1.28 mW at 60 GHz) and cell (3 cm,
100 Torr N₂). The library's Newton–Kleinman Riccati solution and its lifetime search are checked
against scipy's CARE solver and a dense τ grid of Σ(τ) = Σ + e^{Aτ}(Σ_c − Σ)e^{Aᵀτ}.
"""

import numpy as np
import pytest
from helpers import station_apparatus
from hotspin.analysis.experiment import derive
from hotspin.analysis.qnd import (
    THERMAL_BOUND,
    ContinuousReadout,
    entanglement_lifetime,
    spin_projection,
    squeezing_parameter,
)
from scipy import linalg

KONG_ATOMS = 5.32e13


def independent_witness(readout):
    """ξ² and τ_ent from scipy's CARE on the unit-variance model and a dense τ grid."""
    A, Q, S, C = readout.unit_matrices()
    scale = np.sqrt(np.diag(S))  # unit thermal variance per component
    T = np.diag(1 / scale)
    As, Qs, Cs = T @ A @ np.linalg.inv(T), T @ Q @ T, C * scale
    X = linalg.solve_continuous_are(As.T, Cs[:, None], Qs, np.array([[readout.intensity]]))
    conditional = np.diag(scale) @ X @ np.diag(scale)
    P = spin_projection(A.shape[0])
    xi2 = np.trace(P @ conditional @ P.T) / THERMAL_BOUND
    taus = np.linspace(0, 3e-3, 3001)
    values = []
    for tau in taus:
        E = linalg.expm(A * tau)
        relaxed = S + E @ (conditional - S) @ E.T
        values.append(np.trace(P @ relaxed @ P.T) / THERMAL_BOUND)
    crossing = np.flatnonzero(np.asarray(values) >= 1.0)
    tau_ent = 0.0 if xi2 >= 1 else float(taus[crossing[0]])
    return xi2, tau_ent


@pytest.mark.parametrize(
    "changes, xi2, tau_ms",
    [
        ({}, 1.624, 0.0),  # the station's 1 mm waist: N = 3.3e13, transit time 0.8 ms
        ({"beam_waist_m": 1.27e-3}, 1.518, 0.0),  # Kong's 5.3e13 atoms in this cell
        ({"beam_transit": False}, 0.626, 0.943),  # the same without transit: Kong's ~1 ms
        ({"beam_waist_m": 3e-3, "probe_power_W": 10e-3}, 0.868, 0.201),  # what entangles
    ],
    ids=["station", "kong-atoms", "no-transit", "3mm-10mW"],
)  # fmt: skip
def test_the_readme_figures_at_kongs_conditions(changes, xi2, tau_ms):
    readout = ContinuousReadout.from_apparatus(derive(station_apparatus(**changes)))
    assert squeezing_parameter(readout) == pytest.approx(xi2, abs=2e-3)
    assert entanglement_lifetime(readout) * 1e3 == pytest.approx(tau_ms, abs=2e-3)
    direct_xi2, direct_tau = independent_witness(readout)
    # scipy's Schur solution leaves a residual up to ~1e-4 here; the library's Newton
    # iteration leaves 1e-15 (test_witness.py), so they agree to scipy's accuracy.
    assert squeezing_parameter(readout) == pytest.approx(direct_xi2, rel=2e-4)
    assert entanglement_lifetime(readout) == pytest.approx(direct_tau, abs=1.5e-6)


def test_kongs_atom_number_is_that_waist_in_this_cell():
    d = derive(station_apparatus(beam_waist_m=1.27e-3))
    assert d.model.atom_number == pytest.approx(KONG_ATOMS, rel=0.01)
