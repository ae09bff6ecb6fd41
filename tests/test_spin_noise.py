"""Generated spin noise against the analytic model (docs/physics.md §3), in every regime.

Statistical errors are computed, not assumed: a record is cut into independent pieces, each gets
its own Welch spectrum, and the spread of the pieces gives the standard error of their mean. A
band of bins is compared with the model within 4 standard errors. The seeds are fixed, so the
tests are deterministic; a generator wrong by more than a few percent fails them.
"""

import math

import numpy as np
import pytest
from hotspin.analysis.spin_model import SpinModel
from hotspin.simulators.spin_noise import ExactSpinNoise, FastAngleNoise
from scipy import integrate, signal
from scipy.linalg import expm

COUPLING = 1e-12  # rad per unit spin, both manifolds (far-detuned probe)
ATOMS = 1e12


def regime_model(name):
    """Return (model, white PSD, sample rate, nperseg) for a regime of docs/physics.md §3."""
    if name == "slow":  # R_SE ≪ ω: F=2 and F=1 lines at 6.996 and 7.024 Hz/nT, resolved
        field, r_se, r_sd, fs, nperseg = 2000.0, 200.0, 10.0, 50e3, 1 << 15
    elif name == "crossover":  # R_SE ~ ω
        field, r_se, r_sd, fs, nperseg = 500.0, 2e4, 50.0, 100e3, 1 << 13
    else:  # SERF: R_SE ≫ ω, one narrow line at 4.659 Hz/nT plus a broad component
        field, r_se, r_sd, fs, nperseg = 100.0, 1e6, 100.0, 200e3, 1 << 13
    model = SpinModel(
        field_T=np.array([field * 1e-9, 0.0, 0.0]),
        spin_exchange_rate=r_se,
        spin_destruction_rate=r_sd,
        diffusion_rate=2.0,
        atom_number=ATOMS,
    )
    peak = model.psd(np.array([model_peak_Hz(model)]), COUPLING, COUPLING)[0]
    return model, peak / 10.0, fs, nperseg


def model_peak_Hz(model):
    """Return the frequency of the narrowest precessing mode."""
    return next(m for m in model.eigenmodes(COUPLING, COUPLING) if m.frequency_Hz > 0).frequency_Hz


def expected_psd(model, white, fs, f):
    """Return the one-sided PSD of the sampled angle: atoms (aliased) plus white noise."""
    return model.sampled_psd(f, fs, COUPLING, COUPLING) + white


def expected_welch(model, white, fs, nperseg):
    """Return the expectation of scipy's Welch estimate (Hann, 'density'), resolution included.

    E[P̂(f)] = 2/(f_s Σw²) · Re[R₀a₀ + 2 Σ_τ R_τ a_τ e^{−2πifτ/f_s}], with R_τ = C Φ^τ Σ Cᵀ the
    sampled autocovariance and a_τ the window's autocorrelation. Lines narrower than a bin are
    then compared fairly.
    """
    C = model.observation_vector(COUPLING, COUPLING)
    Phi = expm(model.drift_matrix() / fs)
    column = model.stationary_covariance() @ C
    autocovariance = np.empty(nperseg)
    for lag in range(nperseg):
        autocovariance[lag] = C @ column
        column = Phi @ column
    autocovariance[0] += white * fs / 2
    window = signal.windows.hann(nperseg, sym=False)
    overlap = np.correlate(window, window, mode="full")[nperseg - 1 :]
    weighted = autocovariance * overlap
    weighted[1:] *= 2
    spectrum = np.real(np.fft.rfft(weighted, n=nperseg))
    return 2 * spectrum / (fs * np.sum(window**2))


def piecewise_welch(record, fs, nperseg, pieces):
    """Return f and the Welch spectra of independent pieces of a record (one row per piece)."""
    spectra = []
    for piece in np.array_split(record, pieces):
        f, p = signal.welch(piece, fs, nperseg=nperseg)
        spectra.append(p)
    return f, np.array(spectra)


def assert_band_matches(f, spectra, expected, low, high, label):
    """The band's power, averaged over the pieces, equals the model's within 4 standard errors."""
    band = (f >= low) & (f <= high)
    assert band.sum() >= 3, label
    sums = spectra[:, band].sum(axis=1)
    measured = sums.mean()
    error = sums.std(ddof=1) / math.sqrt(len(sums))
    model = expected[band].sum()
    assert abs(measured - model) < 4 * error, (
        f"{label}: {measured:.4g} vs {model:.4g} ± {error:.2g}"
    )
    assert error < 0.05 * model, f"{label}: the test is too weak ({error / model:.1%})"


def generate(kind, model, white, fs, total, seed, block=1 << 16):
    if kind == "fast":
        source = FastAngleNoise(model, COUPLING, COUPLING, white, fs, seed=seed)
        return np.concatenate([source.block(min(block, total - i)) for i in range(0, total, block)])
    source = ExactSpinNoise(model, COUPLING, COUPLING, white, fs, seed=seed)
    parts = []
    for i in range(0, total, block):
        b = source.block(min(block, total - i))
        parts.append(b.atomic_angle_rad + b.white_noise_rad)
    return np.concatenate(parts)


@pytest.mark.parametrize("regime", ["slow", "crossover", "serf"])
@pytest.mark.parametrize("kind", ["fast", "exact"])
def test_welch_psd_matches_the_analytic_spectrum(regime, kind):
    model, white, fs, nperseg = regime_model(regime)
    pieces = 16
    total = pieces * 32 * nperseg if kind == "fast" else pieces * 8 * nperseg
    record = generate(kind, model, white, fs, total, seed=11)
    f, spectra = piecewise_welch(record, fs, nperseg, pieces)
    expected = expected_welch(model, white, fs, nperseg)
    modes = [m for m in model.eigenmodes(COUPLING, COUPLING) if m.frequency_Hz > 0]
    for mode in modes[:2] if regime == "slow" else modes[:1]:
        centre, width = mode.frequency_Hz, max(mode.hwhm_Hz, 3 * fs / nperseg)
        # The peak, and each flank: a shift of the line or a wrong width moves power between them.
        assert_band_matches(f, spectra, expected, centre - width, centre + width, "peak")
        assert_band_matches(f, spectra, expected, centre - 4 * width, centre - width, "low flank")
        assert_band_matches(f, spectra, expected, centre + width, centre + 4 * width, "high flank")
    # The shot-noise floor, far above every line.
    assert_band_matches(f, spectra, expected, 0.4 * fs, 0.49 * fs, "floor")
    # The area: the record's variance equals the model's, within its own statistical error
    # Var(σ̂²) ≈ (1/T) ∫ S(f)² df for a Gaussian process.
    variance = model.variance(COUPLING, COUPLING) + white * fs / 2
    grid = np.linspace(0, fs / 2, 200_001)
    duration = total / fs
    error = math.sqrt(
        integrate.trapezoid(expected_psd(model, white, fs, grid) ** 2, grid) / duration
    )
    assert abs(np.var(record) - variance) < 4 * error


def test_fast_generator_blocks_join_to_the_same_record_as_one_block():
    model, white, fs, _ = regime_model("serf")
    one = FastAngleNoise(model, COUPLING, COUPLING, white, fs, seed=3).block(100_000)
    source = FastAngleNoise(model, COUPLING, COUPLING, white, fs, seed=3)
    sizes = [1, 999, 4096, 33_333, 61_571]
    joined = np.concatenate([source.block(n) for n in sizes])
    np.testing.assert_allclose(joined, one, rtol=1e-12, atol=1e-12 * np.abs(one).max())


def test_same_seed_same_record_and_other_seed_other_record():
    model, white, fs, _ = regime_model("crossover")
    fast = [
        FastAngleNoise(model, COUPLING, COUPLING, white, fs, seed=s).block(5000) for s in (9, 9, 10)
    ]
    exact = [
        ExactSpinNoise(model, COUPLING, COUPLING, white, fs, seed=s).block(5000).state
        for s in (9, 9, 10)
    ]
    for first, second, third in (fast, exact):
        np.testing.assert_array_equal(first, second)
        assert not np.allclose(first, third)


@pytest.mark.parametrize("kind", ["fast", "exact"])
def test_short_blocks_carry_the_state_across_seams(kind):
    # With 64-sample blocks every 64th lag-1 pair crosses a seam; a state not carried over would
    # decorrelate those pairs and pull the autocovariance down.
    model, white, fs, _ = regime_model("serf")
    total = 1 << 20
    record = generate(kind, model, white, fs, total, seed=21, block=64)
    A = model.drift_matrix()
    C = model.observation_vector(COUPLING, COUPLING)
    S = model.stationary_covariance()
    for lag in (1, 8, 40):
        expected = C @ expm(A * lag / fs) @ S @ C
        pairs = record[lag:] * record[:-lag]
        seams = np.zeros(total - lag, dtype=bool)
        for start in range(64 - lag % 64, total - lag, 64):
            seams[start : start + lag] = True
        across = pairs[seams]
        # Correlation time ≪ record: the error of a mean of products is estimated from blocks.
        chunks = np.array_split(across, 32)
        means = np.array([c.mean() for c in chunks])
        error = means.std(ddof=1) / math.sqrt(len(means))
        assert abs(means.mean() - expected) < 4 * error


def test_exact_generator_keeps_thermal_state_through_field_and_atom_number_changes():
    model, _, fs, _ = regime_model("crossover")
    source = ExactSpinNoise(model, COUPLING, COUPLING, 0.0, fs, seed=4)
    states = []
    rotated = SpinModel(
        field_T=np.array([0.0, 300e-9, 400e-9]),
        spin_exchange_rate=2e4,
        spin_destruction_rate=50.0,
        diffusion_rate=2.0,
        atom_number=ATOMS,
    )
    fewer = SpinModel(
        field_T=rotated.field_T,
        spin_exchange_rate=2e4,
        spin_destruction_rate=50.0,
        diffusion_rate=2.0,
        atom_number=ATOMS / 4,
    )
    for step in range(3000):
        new = (rotated, fewer)[step % 2]
        source.set_model(new, COUPLING, COUPLING, 0.0)
        source.advance(0.01)  # longer than the correlation time: independent samples
        states.append(source.state / math.sqrt(new.atom_number))
    states = np.array(states)
    variances = states.var(axis=0)
    # Thermal per-atom variances 5/4 and 1/4 on every axis, whatever the change: 3000 samples.
    np.testing.assert_allclose(variances[:3], 1.25, rtol=4 * math.sqrt(2 / 3000))
    np.testing.assert_allclose(variances[3:], 0.25, rtol=4 * math.sqrt(2 / 3000))


def test_advance_correlates_as_the_exact_propagator_says():
    model, _, fs, _ = regime_model("serf")
    dt = 2e-3
    Phi = expm(model.drift_matrix() * dt)
    pairs = []
    source = ExactSpinNoise(model, COUPLING, COUPLING, 0.0, fs, seed=8)
    for _ in range(4000):
        source.advance(0.05)
        before = source.state.copy()
        source.advance(dt)
        pairs.append((before, source.state.copy()))
    before = np.array([p[0] for p in pairs]) / math.sqrt(ATOMS)
    after = np.array([p[1] for p in pairs]) / math.sqrt(ATOMS)
    measured = after.T @ before / len(pairs)
    expected = Phi @ (model.stationary_covariance() / ATOMS)
    np.testing.assert_allclose(measured, expected, atol=4 * 1.25 / math.sqrt(len(pairs)))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"sample_rate_Hz": 0.0}, "sample_rate_Hz"), ({"sample_rate_Hz": -5.0}, "sample_rate_Hz")],
)
def test_bad_sample_rate_is_refused_with_its_name(kwargs, name):
    model, white, _, _ = regime_model("serf")
    for cls in (FastAngleNoise, ExactSpinNoise):
        with pytest.raises(ValueError, match=name):
            cls(model, COUPLING, COUPLING, white, **kwargs)
