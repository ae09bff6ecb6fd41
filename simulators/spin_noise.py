"""Exact discrete-time generation of the collective spin and the Faraday angle (docs/physics.md §3).

The generators share one model and one convention, θ = C x + white noise:

* `ExactSpinNoise` carries the full state: x ∈ ℝ⁶ per transit mode (`SpinModel.block_model`,
  M modes for the diffusion through the beam): x_{k+1} = Φ x_k + w_k with Φ = exp(AΔt) and
  w_k ~ N(0, Σ − ΦΣΦᵀ). No Euler steps, so any sample rate is exact; the model may change between
  blocks (field, temperature, probe) and time may be skipped without samples. It draws 6M + 1
  Gaussians per sample and is what any record of the true state uses. The
  transit modes share the wall mode's eigenvectors (their extra decay is a multiple of 1), so
  one eigen-decomposition of a 6×6 Φ serves them all, and their beam-weighted sum is formed in
  the modal coordinates before the one real product back to the spin.
* `FastAngleNoise` draws the observed angle only, from its exact innovations (ARMA) form
  y = H(q) e with H(z) = 1 + C (z − Φ)⁻¹ K, K the steady Kalman gain: one Gaussian per sample,
  filtered by a cascade of second-order sections. Its filter state starts from the exact
  stationary distribution and is carried across blocks, so blocks join without seams. The model
  is fixed for the life of the generator: the innovations form has no true state to carry.

* `AngleNoise` is the simulated lab's: the recorded angle alone (behind the detection chain when
  given), one Gaussian per sample in innovations form while the model holds, handing over
  exactly to the full recursion where a change of model needs it, and back.

All work in units of √N (x̃ = x/√N), where every matrix is of order one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import NamedTuple, Self

import numpy as np
from hotspin.analysis.checks import ParameterError, check_positive, check_range
from hotspin.analysis.detection import (
    DetectionChain,
    DiscreteOutput,
    detected_atoms,
    detected_white_noise,
)
from hotspin.analysis.experiment import DerivedQuantities
from hotspin.analysis.spin_model import SpinModel
from scipy import fft, linalg, signal

# Conditioning of the eigenvectors beyond which the modal recursion would lose accuracy. Even at
# the exceptional point the computed eigenvectors stay about √ε apart, so this never trips for
# the physical model; it guards against a drift matrix built some other way.
_MAX_EIGENVECTOR_CONDITION = 1e12


def _angle_parameters(
    model: SpinModel, coupling_upper: float, coupling_lower: float
) -> tuple[np.ndarray, np.ndarray]:
    """Return the wall mode's drift matrix A (6×6) and observation C̃ = C √N."""
    C = model.observation_vector(coupling_upper, coupling_lower) * math.sqrt(model.atom_number)
    return model.drift_matrix(), C


def _unit_covariance(model: SpinModel) -> np.ndarray:
    """Return Σ/N of the wall mode (6×6); transit mode m holds w_m of it."""
    return model.stationary_covariance() / model.atom_number


def _thermal_modes(model: SpinModel, rng: np.random.Generator) -> np.ndarray:
    """Draw the (M, 6) unit state of every transit mode from its thermal law N(0, w_m Σ/N)."""
    _, weights = model.transit_modes()
    draw = (_matrix_sqrt(_unit_covariance(model)) @ rng.standard_normal((6, weights.size))).T
    return draw * np.sqrt(weights)[:, None]


def _matrix_sqrt(covariance: np.ndarray) -> np.ndarray:
    """Return L with L Lᵀ = covariance for a positive semi-definite matrix (rounding clipped)."""
    values, vectors = np.linalg.eigh(0.5 * (covariance + covariance.T))
    return vectors * np.sqrt(np.clip(values, 0.0, None))


@dataclass
class StateBlock:
    """A block of the exact generator: time series of the state and of the angle."""

    state: np.ndarray  # (n, 6) beam-weighted collective spin Σ_m x_m, in units of ħ
    atomic_angle_rad: np.ndarray  # (n,) θ = C x, no light noise
    white_noise_rad: np.ndarray  # (n,) the white angle noise (photon shot + detector), rad


class _ApparatusGenerator:
    """What both generators share: being built from an apparatus's derived quantities.

    Both take (model, c_a, c_b, white PSD, sample rate, seed) in their constructors.
    """

    @classmethod
    def from_derived(
        cls,
        derived: DerivedQuantities,
        sample_rate_Hz: float,
        seed: int | np.random.Generator | None = None,
    ) -> Self:
        """Return the generator of an apparatus: its model, couplings and white-noise floor."""
        return cls(
            derived.model,
            derived.coupling_upper_rad,
            derived.coupling_lower_rad,
            derived.white_noise_psd_rad2_per_Hz,
            sample_rate_Hz,
            seed=seed,
        )


class ExactSpinNoise(_ApparatusGenerator):
    """The collective spin state and its Faraday angle, exact at any sample rate, in blocks."""

    def __init__(
        self,
        model: SpinModel,
        coupling_upper: float,
        coupling_lower: float,
        white_psd_rad2_per_Hz: float,
        sample_rate_Hz: float,
        seed: int | np.random.Generator | None = None,
    ) -> None:
        self.rng = np.random.default_rng(seed)
        self._model: SpinModel | None = None
        self._key: _ModelKey | None = None
        # Start in the thermal state: x_m ~ N(0, w_m Σ) for every transit mode m.
        self._x = _thermal_modes(model, self.rng)
        self.set_model(model, coupling_upper, coupling_lower, white_psd_rad2_per_Hz, sample_rate_Hz)

    @property
    def model(self) -> SpinModel:
        """Return the model now in force."""
        assert self._model is not None
        return self._model

    @property
    def state(self) -> np.ndarray:
        """Return the present beam-weighted spin x (F⁽ᵃ⁾, F⁽ᵇ⁾) = Σ_m x_m, in units of ħ."""
        return self._x.sum(axis=0) * math.sqrt(self.model.atom_number)

    @property
    def mode_states(self) -> np.ndarray:
        """Return the (M, 6) states of the transit modes, in units of ħ (see `block_model`)."""
        return self._x * math.sqrt(self.model.atom_number)

    def set_model(
        self,
        model: SpinModel,
        coupling_upper: float,
        coupling_lower: float,
        white_psd_rad2_per_Hz: float,
        sample_rate_Hz: float | None = None,
    ) -> None:
        """Change field, rates, couplings, noise or sample rate between blocks; the state carries.

        When the atom number changes (temperature), atoms join or leave the beam. Joining atoms
        bring their own thermal spin; leaving atoms take a random share of the collective spin.
        Both cases give x̃ ← √f x̃ + √(1−f) ξ with f = N_small/N_large and ξ ~ N(0, Σ/N), which
        keeps the ensemble thermal.
        """
        check_range(
            "white_psd_rad2_per_Hz", white_psd_rad2_per_Hz, 0.0, math.inf, "rad²/Hz", high_open=True
        )
        if sample_rate_Hz is not None:
            self.sample_rate_Hz = check_positive("sample_rate_Hz", sample_rate_Hz, "Hz")
        if self._model is not None and model.atom_number != self._model.atom_number:
            old, new = self._model.atom_number, model.atom_number
            f = min(old, new) / max(old, new)
            self._x = math.sqrt(f) * self._x + math.sqrt(1.0 - f) * _thermal_modes(model, self.rng)
        if self._model is not None and model.transit_modes()[1].size != self._x.shape[0]:
            raise ValueError("the number of transit modes cannot change while the spins carry")
        self._model = model
        self._white_sigma = math.sqrt(white_psd_rad2_per_Hz * self.sample_rate_Hz / 2.0)
        key = _model_key(model, coupling_upper, coupling_lower, self.sample_rate_Hz)
        if key == self._key:
            return  # nothing the propagator depends on changed: keep Φ and its modes
        self._key = key
        A, self._C = _angle_parameters(model, coupling_upper, coupling_lower)
        dt = 1.0 / self.sample_rate_Hz
        Phi = linalg.expm(A * dt)
        unit_sigma = _unit_covariance(model)
        rates, weights = model.transit_modes()
        eigenvalues, V = np.linalg.eig(Phi)
        if np.linalg.cond(V) > _MAX_EIGENVECTOR_CONDITION:
            raise np.linalg.LinAlgError("drift matrix is defective: no modal recursion possible")
        # One of each conjugate pair is filtered; real modes have real eigenvectors.
        keep = eigenvalues.imag >= 0
        weighted_modes = V[:, keep] * np.where(eigenvalues[keep].imag > 0, 2.0, 1.0)
        self._from_modes = np.hstack([weighted_modes.real, -weighted_modes.imag])
        self._to_modes = np.linalg.inv(V)[keep]
        # Transit mode m: Φ_m = e^{−r_m Δt} Φ and W_m = w_m (Σ − Φ_m Σ Φ_mᵀ)/N.
        decays = np.exp(-rates * dt)
        self._eigenvalues = decays[:, None] * eigenvalues[keep][None, :]  # (M, modes)
        drift = Phi @ unit_sigma @ Phi.T
        self._driving_to_modes = np.stack(
            [
                self._to_modes @ _matrix_sqrt(w * (unit_sigma - decay**2 * drift))
                for decay, w in zip(decays, weights, strict=True)
            ]
        )

    def advance(self, duration_s: float) -> None:
        """Let the spins evolve for ``duration_s`` without recording: x ← Φ(t) x + w."""
        t = check_range("duration_s", duration_s, 0.0, math.inf, "s", high_open=True)
        if t == 0.0:
            return
        Phi = linalg.expm(self.model.drift_matrix() * t)
        unit_sigma = _unit_covariance(self.model)
        drift = Phi @ unit_sigma @ Phi.T
        rates, weights = self.model.transit_modes()
        for m, (rate, w) in enumerate(zip(rates, weights, strict=True)):
            decay = math.exp(-rate * t)
            noise_sqrt = _matrix_sqrt(w * (unit_sigma - decay**2 * drift))
            self._x[m] = decay * (Phi @ self._x[m]) + noise_sqrt @ self.rng.standard_normal(6)

    def block(self, n: int) -> StateBlock:
        """Return the next ``n`` samples of state and angle; the state after them is kept."""
        n = int(check_range("n", n, 1, math.inf, "samples"))
        count, modes = self._eigenvalues.shape
        # Σ_m z_m: the beam-weighted spin in modal coordinates (all transit modes share V).
        beam = np.zeros((modes, n), dtype=complex)
        last = np.empty((count, modes), dtype=complex)
        for m in range(count):
            driving = self._driving_to_modes[m] @ self.rng.standard_normal((6, n))
            z0 = self._to_modes @ self._x[m]
            for j, lam in enumerate(self._eigenvalues[m]):
                # z_{k+1} = λ z_k + u_k; lfilter's output i is z_{i+1}, started from z_0.
                following, _ = signal.lfilter([1.0], [1.0, -lam], driving[j], zi=[lam * z0[j]])
                beam[j, 0] += z0[j]
                beam[j, 1:] += following[:-1]
                last[m, j] = following[-1]
        # x = Σ_j f_j Re(v_j z_j): a real product of stacked real and imaginary parts.
        unit_states = self._from_modes @ np.concatenate([beam.real, beam.imag])
        self._x = (self._from_modes @ np.concatenate([last.real, last.imag], axis=1).T).T
        white = (
            self._white_sigma * self.rng.standard_normal(n) if self._white_sigma else np.zeros(n)
        )
        return StateBlock(
            state=unit_states.T * math.sqrt(self.model.atom_number),
            atomic_angle_rad=self._C @ unit_states,
            white_noise_rad=white,
        )


class FastAngleNoise(_ApparatusGenerator):
    """The observed angle θ + white noise from its innovations form, one Gaussian per sample."""

    def __init__(
        self,
        model: SpinModel,
        coupling_upper: float,
        coupling_lower: float,
        white_psd_rad2_per_Hz: float,
        sample_rate_Hz: float,
        seed: int | np.random.Generator | None = None,
    ) -> None:
        fs = check_positive("sample_rate_Hz", sample_rate_Hz, "Hz")
        white = check_positive("white_psd_rad2_per_Hz", white_psd_rad2_per_Hz, "rad²/Hz")
        self.sample_rate_Hz = fs
        self.rng = np.random.default_rng(seed)
        # The full model with its transit modes, in units of √N.
        A, _, unit_sigma, C = model.block_model(coupling_upper, coupling_lower)
        unit_sigma = unit_sigma / model.atom_number
        C = C * math.sqrt(model.atom_number)
        Phi = linalg.expm(A / fs)
        W = unit_sigma - Phi @ unit_sigma @ Phi.T
        W = 0.5 * (W + W.T)
        measurement_variance = white * fs / 2.0
        # Steady one-step prediction error P of the Kalman predictor, then the innovations form.
        P = linalg.solve_discrete_are(Phi.T, C[:, None], W, np.array([[measurement_variance]]))
        innovation_variance = float(C @ P @ C) + measurement_variance
        K = Phi @ P @ C / innovation_variance
        # H(z) = 1 + C(z − Φ)⁻¹K: poles are eig(Φ); with D = 1 its zeros are eig(Φ − K C).
        zeros = np.linalg.eigvals(Phi - np.outer(K, C))
        poles = np.linalg.eigvals(Phi)
        # The innovations' standard deviation is the gain, so the filter takes N(0, 1) directly.
        self.sos = signal.zpk2sos(zeros, poles, math.sqrt(innovation_variance))
        self._zi = self._stationary_filter_state()

    def _stationary_filter_state(self) -> np.ndarray:
        """Draw the cascade's internal state from its stationary law under N(0, 1) input."""
        sections = self.sos.shape[0]
        size = 2 * sections
        F = np.zeros((size, size))
        G = np.zeros(size)
        # Input to section i as a linear function of (state, e): starts as e itself.
        input_state = np.zeros(size)
        input_noise = 1.0
        for i, (b0, b1, b2, _, a1, a2) in enumerate(self.sos):
            s1, s2 = 2 * i, 2 * i + 1
            # DF-II transposed: y = b0 u + s1; s1' = b1 u − a1 y + s2; s2' = b2 u − a2 y.
            output_state = b0 * input_state
            output_state[s1] += 1.0
            output_noise = b0 * input_noise
            F[s1] = b1 * input_state - a1 * output_state
            F[s1, s2] += 1.0
            G[s1] = b1 * input_noise - a1 * output_noise
            F[s2] = b2 * input_state - a2 * output_state
            G[s2] = b2 * input_noise - a2 * output_noise
            input_state, input_noise = output_state, output_noise
        covariance = linalg.solve_discrete_lyapunov(F, np.outer(G, G))
        draw = _matrix_sqrt(covariance) @ self.rng.standard_normal(size)
        return draw.reshape(sections, 2)

    def block(self, n: int) -> np.ndarray:
        """Return the next ``n`` samples of the observed angle in rad (float64)."""
        n = int(check_range("n", n, 1, math.inf, "samples"))
        y, self._zi = signal.sosfilt(self.sos, self.rng.standard_normal(n), zi=self._zi)
        return y


class _ModelKey(NamedTuple):
    """What the sampled propagator of a spin model depends on, to tell when it must be rebuilt."""

    field_T: tuple[float, ...]
    spin_exchange_rate: float
    spin_destruction_rate: float
    diffusion_rate: float
    transit_time_s: float
    gamma_upper: float
    gamma_lower: float
    coupling_upper: float
    coupling_lower: float
    sample_rate_Hz: float


def _model_key(
    model: SpinModel, coupling_upper: float, coupling_lower: float, fs: float
) -> _ModelKey:
    """Return the key of a spin model's sampled propagator (its field, rates, transit,
    gyromagnetic ratios, couplings and sample rate)."""
    return _ModelKey(
        tuple(model.field_T),
        model.spin_exchange_rate,
        model.spin_destruction_rate,
        model.diffusion_rate,
        model.transit_time_s,
        model.gamma_upper,
        model.gamma_lower,
        coupling_upper,
        coupling_lower,
        fs,
    )


# Samples per piece of the exact recursion (its draws and driving, ≈ 3 MB each, stay in cache).
_RECURSION_SAMPLES = 1 << 13


class _OutputRecursion:
    """Samples y_k = scale·(H s_k + u_k) of s_{k+1} = Φ s_k + w_k, exact, by modal recursion."""

    def __init__(
        self, output: DiscreteOutput, rng: np.random.Generator, state: np.ndarray | None = None
    ) -> None:
        self.rng = rng
        self.scale = output.scale
        eigenvalues, V = np.linalg.eig(output.transition)
        if np.linalg.cond(V) > _MAX_EIGENVECTOR_CONDITION:
            raise np.linalg.LinAlgError("transition matrix is defective: no modal recursion")
        keep = eigenvalues.imag >= 0
        self._eigenvalues = eigenvalues[keep]
        weighted = V[:, keep] * np.where(self._eigenvalues.imag > 0, 2.0, 1.0)
        self._from_modes = np.hstack([weighted.real, -weighted.imag])
        self._to_modes = np.linalg.inv(V)[keep]
        n = output.transition.shape[0]
        root = _matrix_sqrt(output.noise)  # of the joint (w_k, u_k)
        driving = self._to_modes @ root[:n]
        # The draws' map to the modes as real rows, real and imaginary part of each mode side by
        # side: draws (c × d) times its transpose is then the modes' complex driving (c × m)
        # read in place, with no complex copy of the draws (the largest cost of a block).
        interleaved = np.empty((2 * driving.shape[0], driving.shape[1]))
        interleaved[0::2], interleaved[1::2] = driving.real, driving.imag
        self._driving = np.ascontiguousarray(interleaved.T)
        self._output_noise = root[n]
        # The output straight from the modes, y = Re(H V z): the whole state is formed only
        # after the block's last sample.
        self._output_modes = output.output @ weighted
        if state is None:  # from the stationary law
            state = _matrix_sqrt(output.stationary) @ rng.standard_normal(n)
        self._state = np.asarray(state, dtype=float)

    @property
    def state(self) -> np.ndarray:
        """Return the state s before the next output."""
        return self._state

    def block(self, n: int) -> np.ndarray:
        """Return the next ``n`` outputs; the state after them is kept."""
        return self.scale * self.unscaled_block(n)

    def unscaled_block(self, n: int) -> np.ndarray:
        """Return the next ``n`` outputs H s + u, without the scale; the state after is kept."""
        z = (self._to_modes @ self._state).astype(complex)
        outputs = np.empty(n)
        # In pieces of _RECURSION_SAMPLES: the draws and the driving of one piece stay in the
        # cache (a whole 2 s record's 50 × 244 140 draws and their complex driving do not, and
        # streaming them through memory took 2.3 × the time).
        for first in range(0, n, _RECURSION_SAMPLES):
            count = min(_RECURSION_SAMPLES, n - first)
            draws = self.rng.standard_normal((count, self._output_noise.size))
            driving = (draws @ self._driving).view(complex)  # row k: the modes' kick at k
            trajectories = np.empty_like(driving)  # row k: the modes before output k
            for j, lam in enumerate(self._eigenvalues):
                following, _ = signal.lfilter([1.0], [1.0, -lam], driving[:, j], zi=[lam * z[j]])
                trajectories[0, j] = z[j]
                trajectories[1:, j] = following[:-1]
                z[j] = following[-1]
            outputs[first : first + count] = (trajectories @ self._output_modes).real + (
                draws @ self._output_noise
            )
        self._state = self._from_modes @ np.concatenate([z.real, z.imag])
        return outputs


class DetectedAngleNoise(_ApparatusGenerator):
    """The recorded angle behind the detector's pole and the digitiser's decimation, exact.

    Atoms and white noise (shot plus detector) pass the chain as `analysis.detection` derives
    it, independently: the atoms as the lab's board generates them (`AngleNoise`, one Gaussian
    per sample: 15 ms for a 2 s record at decimation 1024 where the exact recursion of the 6M + 1
    atomic and pole states took 0.31 s), the white noise by the exact recursion of its pole.
    The model is fixed for the life of the generator.
    """

    def __init__(
        self,
        model: SpinModel,
        coupling_upper: float,
        coupling_lower: float,
        white_psd_rad2_per_Hz: float,
        chain: DetectionChain,
        seed: int | np.random.Generator | None = None,
    ) -> None:
        white = check_range(
            "white_psd_rad2_per_Hz", white_psd_rad2_per_Hz, 0.0, math.inf, "rad²/Hz"
        )
        self.chain = chain
        self.sample_rate_Hz = chain.sample_rate_Hz
        self.rng = np.random.default_rng(seed)
        self._atoms = AngleNoise(self.rng)
        self._atoms.set_model(model, coupling_upper, coupling_lower, chain.sample_rate_Hz, chain)
        noise = detected_white_noise(chain)
        self._white = _OutputRecursion(replace(noise, scale=math.sqrt(white)), self.rng)

    @classmethod
    def from_derived(  # type: ignore[override]
        cls,
        derived: DerivedQuantities,
        chain: DetectionChain,
        seed: int | np.random.Generator | None = None,
    ) -> Self:
        """Return the generator of an apparatus behind ``chain``."""
        return cls(
            derived.model,
            derived.coupling_upper_rad,
            derived.coupling_lower_rad,
            derived.white_noise_psd_rad2_per_Hz,
            chain,
            seed=seed,
        )

    def block(self, n: int) -> np.ndarray:
        """Return the next ``n`` recorded samples of the angle in rad."""
        n = int(check_range("n", n, 1, math.inf, "samples"))
        return self._atoms.block(n) + self._white.block(n)


# Largest relative error of the conditional covariance that a hand-over between the fast form
# and the exact recursion may leave (see `AngleNoise`): far below any statistic of a record.
HANDOVER_TOLERANCE = 1e-6
# A model change smaller than this, relative, in every rate, coupling and the atom number (and
# in the field, relative to its magnitude) leaves the model in force: a cell held at 450 K
# drifts by about 10⁻⁵ of its rates per record as the oven settles, and each new model costs a
# Riccati solution and its tables (12 ms at 49 states), while 10⁻⁴ of a rate (2 mK of cell
# temperature) is two orders below what any spectrum resolves. Never across a change of the
# sample rate or of the detection chain.
MODEL_TOLERANCE = 1e-4


# The parts of a model key that are kept exactly, and those a drift below MODEL_TOLERANCE
# leaves in force (an infinite transit time, no transit, only ever equals itself).
_EXACT = ("gamma_upper", "gamma_lower", "sample_rate_Hz")
_TOLERATED = (
    "spin_exchange_rate",
    "spin_destruction_rate",
    "diffusion_rate",
    "transit_time_s",
    "coupling_upper",
    "coupling_lower",
)


def _negligible_change(old: tuple, new: tuple) -> bool:
    """Return True when two keys of `AngleNoise` ((model key, atom number, chain)) differ by
    less than MODEL_TOLERANCE: no change of the chain, the sample rate or the gyromagnetic
    ratios, and every other quantity (the field by its magnitude) within it."""
    (model_old, atoms_old, chain_old), (model_new, atoms_new, chain_new) = old, new
    exact = [(getattr(model_old, n), getattr(model_new, n)) for n in _EXACT]
    if chain_old != chain_new or any(a != b for a, b in exact):
        return False
    field_old, field_new = np.asarray(model_old.field_T), np.asarray(model_new.field_T)
    if np.linalg.norm(field_new - field_old) > MODEL_TOLERANCE * np.linalg.norm(field_old):
        return False
    pairs = [(getattr(model_old, n), getattr(model_new, n)) for n in _TOLERATED]
    return all(
        a == b or (math.isfinite(a) and abs(b - a) <= MODEL_TOLERANCE * abs(a))
        for a, b in [*pairs, (atoms_old, atoms_new)]
    )


# Samples per step of the fast form: its tables hold this many powers of Φ (2 × 6M × 2¹³ floats,
# small enough to stay in cache; longer steps were slower on this machine).
_TABLE_SAMPLES = 1 << 13
_CACHED_MODELS = 8


@dataclass(frozen=True)
class _AngleModel:
    """The recorded atomic angle as a linear Gaussian model, in the units of `detected_atoms`.

    The state s holds the unit spins x̃ = x/√N of every transit mode and, behind a detection
    chain, the detector's pole v̌ = v/σ_θ of each: (x̃₁, v̌₁, x̃₂, v̌₂, …); without one, (x̃₁, x̃₂, …).
    """

    output: DiscreteOutput  # the sampled model, y = σ_θ (H s + u)
    drift: np.ndarray  # ds/dt = drift·s + noise: the continuous model, for gaps
    atom_number: float
    spins: np.ndarray  # positions of x̃ in s
    poles: np.ndarray  # positions of v̌ in s (none without a detection chain)
    thermal: np.ndarray  # Σ/N of x̃: the law of joining atoms

    def stationary_transition(self, duration_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Return Φ(t) and W(t) = P − Φ(t) P Φ(t)ᵀ of the state over ``duration_s``."""
        Phi = linalg.expm(self.drift * duration_s)
        P = self.output.stationary
        W = P - Phi @ P @ Phi.T
        return Phi, 0.5 * (W + W.T)


def _angle_model(
    model: SpinModel,
    coupling_upper: float,
    coupling_lower: float,
    sample_rate_Hz: float,
    chain: DetectionChain | None,
) -> _AngleModel:
    """Return the model of the atomic angle sampled at ``sample_rate_Hz`` behind ``chain``."""
    A, _, S, C = model.block_model(coupling_upper, coupling_lower)
    atoms = model.atom_number
    sigma = math.sqrt(float(C @ S @ C))
    thermal = S / atoms
    H = C * math.sqrt(atoms) / sigma
    size = A.shape[0]
    if chain is None:
        dt = 1.0 / sample_rate_Hz
        rates, _ = model.transit_modes()
        wall = linalg.expm(model.drift_matrix() * dt)  # the modes share it (see block_model)
        Phi = linalg.block_diag(*(math.exp(-rate * dt) * wall for rate in rates))
        W = thermal - Phi @ thermal @ Phi.T
        noise = np.zeros((size + 1, size + 1))
        noise[:size, :size] = 0.5 * (W + W.T)
        output = DiscreteOutput(Phi, H, noise, thermal, sigma)
        return _AngleModel(output, A, atoms, np.arange(size), np.arange(0), thermal)
    if not math.isclose(chain.sample_rate_Hz, sample_rate_Hz, rel_tol=1e-9):
        raise ParameterError(
            f"sample_rate_Hz = {sample_rate_Hz:g} is not the detection chain's "
            f"{chain.sample_rate_Hz:g} Hz"
        )
    output = detected_atoms(model, coupling_upper, coupling_lower, chain)
    modes = size // 6
    drift = np.zeros((7 * modes, 7 * modes))
    for m in range(modes):
        spins, pole = slice(7 * m, 7 * m + 6), 7 * m + 6
        drift[spins, spins] = A[6 * m : 6 * m + 6, 6 * m : 6 * m + 6]
        drift[pole, spins] = chain.pole_rate * H[6 * m : 6 * m + 6]  # v̌' = ω_c(H x̃ − v̌)
        drift[pole, pole] = -chain.pole_rate
    spins = (7 * np.arange(modes)[:, None] + np.arange(6)).ravel()
    return _AngleModel(output, drift, atoms, spins, 7 * np.arange(modes) + 6, thermal)


def _carry_map(old: _AngleModel, new: _AngleModel) -> tuple[np.ndarray, np.ndarray]:
    """Return (T, N): the state under ``new`` is T s + n, n ~ N(0, N), s the state under ``old``.

    Atoms joining or leaving the beam as in `ExactSpinNoise.set_model`; the pole's v = σ_θ v̌
    is continuous. A chain connected anew starts from its law given the spins (as if it had been
    connected all along); a chain taken away leaves the spins.
    """
    if old.spins.size != new.spins.size:
        raise ValueError("the number of transit modes cannot change while the spins carry")
    f = min(old.atom_number, new.atom_number) / max(old.atom_number, new.atom_number)
    size = new.output.transition.shape[0]
    T = np.zeros((size, old.output.transition.shape[0]))
    noise = np.zeros((size, size))
    T[np.ix_(new.spins, old.spins)] = math.sqrt(f) * np.eye(new.spins.size)
    noise[np.ix_(new.spins, new.spins)] = (1.0 - f) * new.thermal
    if new.poles.size and old.poles.size:
        ratio = old.output.scale / new.output.scale
        T[np.ix_(new.poles, old.poles)] = ratio * np.eye(new.poles.size)
    elif new.poles.size:
        P = new.output.stationary
        gain = np.linalg.solve(P[np.ix_(new.spins, new.spins)], P[np.ix_(new.spins, new.poles)]).T
        T[new.poles] = gain @ T[new.spins]
        spin_noise = noise[np.ix_(new.spins, new.spins)]
        conditional = P[np.ix_(new.poles, new.poles)] - gain @ P[np.ix_(new.spins, new.poles)]
        noise[np.ix_(new.poles, new.spins)] = gain @ spin_noise
        noise[np.ix_(new.spins, new.poles)] = spin_noise @ gain.T
        noise[np.ix_(new.poles, new.poles)] = gain @ spin_noise @ gain.T + conditional
    return T, noise


def _powers_applied(first: np.ndarray, step: np.ndarray, count: int, from_left: bool) -> np.ndarray:
    """Return [g Φ⁰ … g Φⁿ⁻¹] (rows, ``from_left``) or [Φ⁰g … Φⁿ⁻¹g] (columns), by doubling."""
    block = first[None, :] if from_left else first[:, None]
    while block.shape[int(not from_left)] < count:
        block = np.vstack([block, block @ step]) if from_left else np.hstack([block, step @ block])
        step = step @ step
    return block[:count] if from_left else block[:, :count]


class _InnovationsForm:
    """The steady Kalman predictor of a `DiscreteOutput`: y = H ŝ + e, ŝ_{k+1} = Φ ŝ_k + K e_k.

    ŝ_k = E[s_k | y_<k] and s_k − ŝ_k ~ N(0, P), P the steady one-step prediction error: the
    outputs' law needs one Gaussian e_k per sample. Over a step of n ≤ 2¹³ samples the output
    is the free response H Φⁱ ŝ₀ plus the innovations convolved with the impulse response
    (1, H K, H Φ K, …) — an FFT — and ŝ_n = Φⁿ ŝ₀ + Σ Φⁿ⁻¹⁻ⁱ K e_i, one product; the tables
    of powers are built once per model by doubling (no eigenvectors, so no conditioning limit).
    """

    def __init__(self, output: DiscreteOutput) -> None:
        Phi, H = output.transition, output.output
        n = Phi.shape[0]
        W, cross, R = output.noise[:n, :n], output.noise[:n, n], output.noise[n, n]
        P = linalg.solve_discrete_are(Phi.T, H[:, None], W, np.array([[R]]), s=cross[:, None])
        self.P = 0.5 * (P + P.T)
        self.root = np.linalg.cholesky(self.P)
        self.root_inverse = linalg.solve_triangular(self.root, np.eye(n), lower=True)
        variance = float(H @ self.P @ H) + R
        self.gain = (Phi @ self.P @ H + cross) / variance
        self.closed_loop = Phi - np.outer(self.gain, H)
        sigma = math.sqrt(variance)
        L = _TABLE_SAMPLES
        free = _powers_applied(H, Phi, L, from_left=True)  # row i: H Φⁱ
        kicks = _powers_applied(self.gain * sigma, Phi, L, from_left=False)  # column j: Φʲ K σ
        impulse = np.concatenate([[sigma], free[:-1] @ (self.gain * sigma)])
        # float32 tables halve the memory the two products stream through per sample; their
        # rounding (≈ 10⁻⁷ relative, ≈ 10⁻⁵ of a step's increment of ŝ summed over 2¹³ terms)
        # is far below the law's statistics and the ADC's resolution.
        self._free = free.astype(np.float32)
        self._kicks = np.ascontiguousarray(kicks[:, ::-1], dtype=np.float32)  # col L−1−j: Φʲ K σ
        self._impulse = fft.rfft(impulse, 2 * L)
        self._transition = Phi
        self._powers: dict[tuple[int, bool], np.ndarray] = {}
        self._closed_kicks: np.ndarray | None = None

    def power(self, n: int, closed: bool = False) -> np.ndarray:
        """Return Φⁿ (or (Φ − K H)ⁿ), kept for the step lengths in use."""
        key = (n, closed)
        if key not in self._powers:
            if len(self._powers) > 16:
                self._powers.clear()
            base = self.closed_loop if closed else self._transition
            self._powers[key] = np.linalg.matrix_power(base, n)
        return self._powers[key]

    def step(self, estimate: np.ndarray, n: int, rng: np.random.Generator) -> tuple:
        """Return (the next n ≤ 2¹³ outputs H s + u, ŝ after them)."""
        L = _TABLE_SAMPLES
        # float32 draws: their 2⁻²⁴ resolution is far below the angle's resolution in the ADC.
        draws = rng.standard_normal(n, dtype=np.float32)
        convolved = fft.irfft(fft.rfft(draws, 2 * L) * self._impulse, 2 * L)[:n]
        outputs = convolved + self._free[:n] @ estimate.astype(np.float32)
        following = self.power(n) @ estimate + self._kicks[:, L - n :] @ draws
        return outputs, following

    def predict(self, estimate: np.ndarray, outputs: np.ndarray) -> np.ndarray:
        """Return the predictor ŝ after ``outputs`` (H s + u) from ``estimate``: Φ_c ŝ + K y."""
        L, n = _TABLE_SAMPLES, outputs.size
        if self._closed_kicks is None:
            kicks = _powers_applied(self.gain, self.closed_loop, L, from_left=False)
            self._closed_kicks = np.ascontiguousarray(kicks[:, ::-1])
        return self.power(n, closed=True) @ estimate + self._closed_kicks[:, L - n :] @ outputs


# The models in use and their fast forms, shared by every generator (they are not modified; a
# served board and a test's many generators reuse them). Oldest dropped first.
_MODELS: dict[tuple, tuple[_AngleModel, _InnovationsForm]] = {}


class AngleNoise:
    """The atomic angle a digitiser records, exact, with one Gaussian per sample while it can.

    The lab's generator: only the angle θ = C x (behind the detection chain when one is given),
    never the 6M-dimensional state. Two forms produce the same law:

    * fast: the innovations form of the present model (`_InnovationsForm`), carrying
      ŝ = E[s | every output so far], with s − ŝ ~ N(0, P) independent of the past;
    * exact: `_OutputRecursion` from a drawn true state s (6M + 1 Gaussians per sample).

    A change of model (field, temperature, probe, sample rate, chain) or a gap without samples
    turns the law of s given the past into N(m, Q) under the new model, computed exactly. When
    Q ≥ P_new, drawing ŝ = m + (Q − P_new)^{1/2} η gives exactly that law with the new fast form
    (∫ N(ŝ; m, Q − P) N(s; ŝ, P) dŝ = N(s; m, Q)): a gap always allows it (less is known than
    from a full past), and so does a change too small to matter, up to HANDOVER_TOLERANCE of P
    on the negative side. Otherwise s = m + Q^{1/2} ξ is drawn and the exact recursion takes
    over, while the new model's steady predictor runs over its outputs from m; its error
    covariance is P_new + (Φ − KH)ᵏ(Q − P_new)(Φ − KH)ᵀᵏ, and the fast form resumes from the
    predictor once that excess is below HANDOVER_TOLERANCE of P_new (for a large change at
    decimation 64, ≈ 0.1 s of signal). The models and their forms are cached by key, so an
    unchanged apparatus never rebuilds them.
    """

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self._key: tuple[_ModelKey, float, DetectionChain | None] | None = None
        self._model: _AngleModel | None = None
        self._form: _InnovationsForm | None = None
        self._estimate = np.zeros(0)  # ŝ (fast form) or the steady predictor's (exact)
        self._exact: _OutputRecursion | None = None
        self._excess = np.zeros((0, 0))  # exact: the predictor's error covariance − P

    @property
    def fast(self) -> bool:
        """Return True while the innovations form generates (False: the exact recursion)."""
        return self._exact is None

    def set_model(
        self,
        model: SpinModel,
        coupling_upper: float,
        coupling_lower: float,
        sample_rate_Hz: float,
        chain: DetectionChain | None = None,
    ) -> None:
        """Put a model in force from the next sample on; the spins carry over exactly."""
        fs = check_positive("sample_rate_Hz", sample_rate_Hz, "Hz")
        key = (_model_key(model, coupling_upper, coupling_lower, fs), model.atom_number, chain)
        if self._key is not None and _negligible_change(self._key, key):
            return
        if key not in _MODELS:
            if len(_MODELS) >= _CACHED_MODELS:
                _MODELS.pop(next(iter(_MODELS)))
            angle = _angle_model(model, coupling_upper, coupling_lower, fs, chain)
            _MODELS[key] = (angle, _InnovationsForm(angle.output))
        old, old_form = self._model, self._form
        self._key = key
        self._model, self._form = _MODELS[key]
        if old is None or old_form is None:  # the stationary law: ŝ ~ N(0, Σ − P)
            spread = self._model.output.stationary - self._form.P
            self._estimate = _matrix_sqrt(spread) @ self.rng.standard_normal(spread.shape[0])
            return
        T, noise = _carry_map(old, self._model)
        if self._exact is None:
            self._hand_over(T @ self._estimate, T @ old_form.P @ T.T + noise)
            return
        state = T @ self._exact.state + _matrix_sqrt(noise) @ self.rng.standard_normal(T.shape[0])
        error = T @ (old_form.P + self._excess) @ T.T + noise
        self._estimate = T @ self._estimate
        self._excess = error - self._form.P
        self._exact = _OutputRecursion(self._model.output, self.rng, state)

    def advance(self, duration_s: float) -> None:
        """Let the spins and the detector evolve for ``duration_s`` without samples, exactly."""
        t = check_range("duration_s", duration_s, 0.0, math.inf, "s", high_open=True)
        if t == 0.0 or self._model is None or self._form is None:
            return
        Phi, W = self._model.stationary_transition(t)
        if self._exact is None:
            self._hand_over(Phi @ self._estimate, Phi @ self._form.P @ Phi.T + W)
            return
        # Given the true state, the law after the gap is N(Φ s, W): hand over if it allows.
        self._hand_over(Phi @ self._exact.state, W)

    def _hand_over(self, mean: np.ndarray, covariance: np.ndarray) -> None:
        """Continue from the law N(mean, covariance) of the state given everything generated."""
        assert self._model is not None and self._form is not None
        root, inverse = self._form.root, self._form.root_inverse
        excess = inverse @ (covariance - self._form.P) @ inverse.T  # in units of P
        values, vectors = np.linalg.eigh(0.5 * (excess + excess.T))
        draws = self.rng.standard_normal(mean.size)
        if values[0] >= -HANDOVER_TOLERANCE:
            spread = root @ (vectors * np.sqrt(np.clip(values, 0.0, None)))
            self._estimate = mean + spread @ draws
            self._exact = None
            return
        state = mean + _matrix_sqrt(covariance) @ draws
        self._exact = _OutputRecursion(self._model.output, self.rng, state)
        self._estimate = mean
        self._excess = covariance - self._form.P

    def _settled(self) -> bool:
        """Return True once the predictor's excess error is below the tolerance of P."""
        assert self._form is not None
        inverse = self._form.root_inverse
        excess = inverse @ self._excess @ inverse.T
        return float(np.abs(np.linalg.eigvalsh(0.5 * (excess + excess.T))).max()) < (
            HANDOVER_TOLERANCE
        )

    def block(self, n: int) -> np.ndarray:
        """Return the next ``n`` samples of the recorded atomic angle in rad."""
        n = int(check_range("n", n, 1, math.inf, "samples"))
        if self._model is None or self._form is None:
            raise RuntimeError("AngleNoise.set_model must come before the first block")
        form, angle = self._form, np.empty(n)
        for first in range(0, n, _TABLE_SAMPLES):
            count = min(_TABLE_SAMPLES, n - first)
            if self._exact is None:
                outputs, self._estimate = form.step(self._estimate, count, self.rng)
            else:
                outputs = self._exact.unscaled_block(count)
                self._estimate = form.predict(self._estimate, outputs)
                decay = form.power(count, closed=True)
                self._excess = decay @ self._excess @ decay.T
                if self._settled():
                    self._exact = None
            angle[first : first + count] = outputs
        angle *= self._model.output.scale
        return angle
