"""Polarimeter calibration and streaming power spectra of the rotation angle (docs/physics.md §4).

Calibration: at balance V_diff = G_d ℛ (P₊ − P₋) and V_sum = G_s ℛ (P₊ + P₋) with
(P₊ − P₋)/(P₊ + P₋) = sin 2θ, so θ = ½ arcsin[(V_diff/G_d)/(V_sum/G_s)]; without a sum channel
θ ≈ V_diff/(2 G_d ℛ P) from the gain, the responsivity and the power on the detector.

Spectra: `StreamingPSD` is Welch's method on a stream. Blocks of any length are added; segments
straddle block boundaries; raw integer counts or volts are scaled per segment (no full-size
copy); each segment's mean is removed (welch's detrend='constant'); the running mean and its
standard error are kept per bin. The estimate is one-sided in (input unit × scale)²/Hz with
scipy.signal.welch's normalisation, so Parseval holds: Σ_k P_k Δf is the window-weighted mean
square of the segments, whose expectation is the variance of a sample.

Segments overlap and windowed bins leak into their neighbours, so neither segments nor bins are
independent. For a locally white process the covariance of the averaged estimate is
    Cov(P̄_k, P̄_{k+j}) = P_k P_{k+j} C(j)/K,  C(j) = Σ_m (1 − |m|/K) |r(j, m)|²,
    r(j, m) = Σ_n w[n] w[n + mD] e^{−2πijn/L} / Σ_n w[n]²,
K segments of length L and hop D (Welch 1967; Percival & Walden 1993, on WOSA). `Spectrum` carries
K/C(0) (the effective number of averages) and C(j)/C(0) (the correlation of neighbouring bins),
which the fits use to weight bins and to propagate uncertainties honestly.

The expectation of a Welch estimate is not the PSD at the bin frequency: the window smears it
(leakage) and sampling folds it (aliasing). `welch_expectation` computes it exactly from the
autocovariance of the sampled process, E|X_k|² = Σ_τ c_w(τ) R(τ) e^{−2πikτ/L} with
c_w(τ) = Σ_n w[n] w[n+τ].
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from hotspin.analysis.checks import check_positive, check_range
from numpy.lib.stride_tricks import sliding_window_view
from scipy import fft, integrate, signal

# Input types whose every value float32 represents exactly: these are transformed in single
# precision (as scipy.signal.welch does), the rest in double precision.
_SINGLE_PRECISION_INPUTS = (np.int8, np.uint8, np.int16, np.uint16, np.float16, np.float32)
# Bins whose correlation with a neighbour is below this are treated as independent.
_BIN_CORRELATION_CUTOFF = 1e-3
# Mean removal changes bin k by m·W_k (W the window's DFT): below this fraction of W_0 the bias
# of the bin's power is below its square, 1e-8 relative, and the bin counts as untouched.
_WINDOW_LEAKAGE_CUTOFF = 1e-4


# --- calibration ----------------------------------------------------------------------------------
def _matching_traces(v_diff: np.ndarray, v_sum: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the two traces as float arrays after checking they are usable together."""
    d = np.asarray(v_diff, dtype=float)
    s = np.asarray(v_sum, dtype=float)
    if d.ndim != 1 or s.ndim != 1:
        raise ValueError("v_diff and v_sum must be one-dimensional traces")
    if d.size != s.size:
        raise ValueError(f"v_diff has {d.size} samples but v_sum has {s.size}: lengths must match")
    if d.size == 0:
        raise ValueError("v_diff and v_sum are empty: no samples to calibrate")
    if not (np.all(np.isfinite(d)) and np.all(np.isfinite(s))):
        raise ValueError("v_diff or v_sum holds NaN or infinite samples")
    if np.any(s <= 0):
        raise ValueError("v_sum must be > 0 V everywhere: no light on the detector")
    return d, s


def angle_from_difference_and_sum(
    v_diff: np.ndarray, v_sum: np.ndarray, gain_diff_V_per_A: float, gain_sum_V_per_A: float
) -> np.ndarray:
    """Return the rotation angle θ = ½ arcsin[(V_diff/G_d)/(V_sum/G_s)] in rad, per sample."""
    d, s = _matching_traces(v_diff, v_sum)
    ratio = check_positive("gain_sum_V_per_A", gain_sum_V_per_A, "V/A") / check_positive(
        "gain_diff_V_per_A", gain_diff_V_per_A, "V/A"
    )
    imbalance = d * ratio / s
    if np.any(np.abs(imbalance) > 1):
        raise ValueError(
            "|V_diff/G_diff| exceeds V_sum/G_sum: the gains do not match the traces "
            "(or a channel is clipped)"
        )
    return 0.5 * np.arcsin(imbalance)


def angle_scale_from_gain(
    gain_diff_V_per_A: float, responsivity_A_per_W: float, detected_power_W: float
) -> float:
    """Return rad per volt of V_diff at balance, 1/(2 G ℛ P), when no sum channel is recorded."""
    g = check_positive("gain_diff_V_per_A", gain_diff_V_per_A, "V/A")
    r = check_positive("responsivity_A_per_W", responsivity_A_per_W, "A/W")
    p = check_positive("detected_power_W", detected_power_W, "W")
    return 1.0 / (2.0 * g * r * p)


# --- the spectrum and its statistics --------------------------------------------------------------
def _lag_products(window: np.ndarray) -> np.ndarray:
    """Return c_w(τ) = Σ_n w[n] w[n+τ] for τ = 0 … L−1."""
    L = window.size
    spectrum = fft.rfft(window, 2 * L)
    return fft.irfft(spectrum.real**2 + spectrum.imag**2, 2 * L)[:L]


def welch_expectation(
    autocovariance: np.ndarray, window: np.ndarray, sample_rate_Hz: float
) -> np.ndarray:
    """Return the exact mean of a one-sided Welch PSD at its L/2+1 bins from R(τ), τ = 0…L−1."""
    w = np.asarray(window, dtype=float)
    R = np.asarray(autocovariance, dtype=float)
    if R.shape != w.shape:
        raise ValueError(f"need the autocovariance at {w.size} lags, got {R.size}")
    return _expectation_from_products(R * _lag_products(w), w, sample_rate_Hz)


def _expectation_from_products(
    products: np.ndarray, window: np.ndarray, sample_rate_Hz: float
) -> np.ndarray:
    """Return the one-sided Welch mean from a_τ = c_w(τ) R(τ)."""
    # E|X_k|² = a_0 + 2 Σ_{τ≥1} a_τ cos(2πkτ/L) for a real, even autocovariance.
    power = 2.0 * fft.rfft(products).real - products[0]
    return _one_sided(power, window, sample_rate_Hz)


def _one_sided(power: np.ndarray, window: np.ndarray, sample_rate_Hz: float) -> np.ndarray:
    """Return 2|X|²/(f_s Σw²) (|X|² alone at DC and at an even length's Nyquist bin)."""
    # einsum, not window @ window: a BLAS dot product wakes OpenBLAS's worker threads, which
    # then spin for milliseconds on a busy machine (the live monitor calls this every frame).
    energy = float(np.einsum("i,i->", window, window))
    psd = power * (2.0 / (sample_rate_Hz * energy))
    psd[0] *= 0.5
    if window.size % 2 == 0:
        psd[-1] *= 0.5
    return psd


def welch_statistics(
    window: np.ndarray, hop: int, segments: int
) -> tuple[float, np.ndarray, float]:
    """Return (C(0), C(j)/C(0) for j ≥ 0, variance bias) of a Welch average of K segments.

    C(j) is defined in the module docstring. The bias is E[s²]/Var of the sample variance of K
    correlated periodograms, 1 − 2 Σ_m (K−m) r(0,m)²/(K(K−1)), by which it is corrected.
    """
    w = np.asarray(window, dtype=float)
    L = w.size
    energy = float(w @ w)
    correlations = np.zeros(L // 2 + 1)
    bias_sum = 0.0
    m = 0
    while m < segments and m * hop < L:
        product = w[: L - m * hop] * w[m * hop :]
        r = fft.rfft(product, L) / energy
        weight = 1.0 if m == 0 else 2.0 * (1.0 - m / segments)
        correlations += weight * (r.real**2 + r.imag**2)
        if m > 0:
            bias_sum += (segments - m) * abs(r[0]) ** 2
        m += 1
    c0 = float(correlations[0])
    relative = correlations / c0
    significant = np.flatnonzero(relative > _BIN_CORRELATION_CUTOFF)
    relative = relative[: significant[-1] + 1]
    bias = 1.0 - 2.0 * bias_sum / (segments * (segments - 1)) if segments > 1 else 1.0
    return c0, relative, bias


@dataclass(frozen=True)
class Spectrum:
    """A one-sided PSD with what is known about how it was estimated.

    ``window``/``sample_rate_Hz`` given: the bins are the rfft bins of a Welch estimate with that
    window, so the exact expectation (leakage and aliasing) can be modelled. ``sample_rate_Hz``
    alone: an instantaneously sampled record. Neither: a continuous-time spectrum.
    ``standard_error`` is the per-bin standard error of the mean; ``effective_averages`` the
    number of independent periodograms it is worth; ``bin_correlation`` C(j)/C(0).
    """

    frequency_Hz: np.ndarray
    psd: np.ndarray
    standard_error: np.ndarray | None = None
    sample_rate_Hz: float | None = None
    window: np.ndarray | None = field(default=None, repr=False)
    segments: int = 0
    effective_averages: float | None = None
    bin_correlation: np.ndarray = field(default_factory=lambda: np.ones(1))
    mean_removed_bins: int = 1  # lowest bins biased by mean removal (DC is always one)
    samples: int = 0  # samples that went into the estimate
    clipped_samples: int = 0  # of those, at or beyond the recording's limits

    def __post_init__(self) -> None:
        f = np.asarray(self.frequency_Hz, dtype=float)
        p = np.asarray(self.psd, dtype=float)
        if f.ndim != 1 or p.ndim != 1:
            raise ValueError("frequency_Hz and psd must be one-dimensional")
        if f.size != p.size:
            raise ValueError(f"psd has {p.size} bins for {f.size} frequencies: lengths must match")
        if f.size == 0:
            raise ValueError("the spectrum is empty: no bins")
        if not (np.all(np.isfinite(f)) and np.all(np.isfinite(p))):
            raise ValueError("the spectrum holds NaN or infinite values")
        if np.any(np.diff(f) <= 0) or f[0] < 0:
            raise ValueError("frequency_Hz must be ≥ 0 and strictly increasing")
        if np.any(p < 0):
            raise ValueError("a power spectral density cannot be negative")
        object.__setattr__(self, "frequency_Hz", f)
        object.__setattr__(self, "psd", p)
        if self.standard_error is not None:
            se = np.asarray(self.standard_error, dtype=float)
            if se.shape != p.shape:
                raise ValueError(
                    f"standard_error has {se.size} bins for {p.size} PSD bins: lengths must match"
                )
            if not np.all(np.isfinite(se)) or np.any(se < 0):
                raise ValueError("standard_error must be finite and ≥ 0 in every bin")
            object.__setattr__(self, "standard_error", se)
        if self.sample_rate_Hz is not None:
            check_positive("sample_rate_Hz", self.sample_rate_Hz, "Hz")
        if self.window is not None:
            w = np.asarray(self.window, dtype=float)
            if self.sample_rate_Hz is None:
                raise ValueError("a Welch window needs the sample rate")
            expected = fft.rfftfreq(w.size, 1.0 / self.sample_rate_Hz)
            if expected.shape != f.shape or not np.allclose(expected, f, rtol=1e-9, atol=0):
                raise ValueError("frequency_Hz must be the rfft bins of the window's length")
            object.__setattr__(self, "window", w)
        if self.effective_averages is not None:
            check_positive("effective_averages", self.effective_averages)
        object.__setattr__(
            self, "bin_correlation", np.atleast_1d(np.asarray(self.bin_correlation, dtype=float))
        )

    @property
    def bin_width_Hz(self) -> float:
        """Return the spacing of the frequency bins in Hz."""
        return float(self.frequency_Hz[1] - self.frequency_Hz[0]) if self.psd.size > 1 else 0.0

    @cached_property
    def lag_products(self) -> np.ndarray:
        """Return c_w(τ) of the Welch window (cached)."""
        if self.window is None:
            raise ValueError("this spectrum has no Welch window")
        return _lag_products(self.window)

    def expectation(self, autocovariance: np.ndarray) -> np.ndarray:
        """Return the exact mean of this Welch estimate for a process with autocovariance R(τ)."""
        assert self.window is not None and self.sample_rate_Hz is not None
        return _expectation_from_products(
            autocovariance * self.lag_products, self.window, self.sample_rate_Hz
        )

    def variance_rad2(self) -> float:
        """Return the variance the PSD integrates to (Parseval), in (PSD unit × Hz)."""
        if self.window is not None:
            # The rectangle rule over the rfft bins is exact: DC and Nyquist bins carry half.
            return float(np.sum(self.psd) * self.bin_width_Hz)
        return float(integrate.trapezoid(self.psd, self.frequency_Hz))


# --- the streaming accumulator --------------------------------------------------------------------
class StreamingPSD:
    """Welch PSD of a stream of samples, added in blocks of any length."""

    def __init__(
        self,
        segment_length: int,
        sample_rate_Hz: float,
        *,
        window: str | tuple | np.ndarray = "hann",
        overlap: float = 0.5,
        scale: float = 1.0,
        remove_mean: bool = True,
        clip_limits: tuple[float, float] | None = None,
        batch_segments: int = 32,
    ) -> None:
        L = int(check_range("segment_length", segment_length, 2, 1 << 26, "samples"))
        self.segment_length = L
        self.sample_rate_Hz = check_positive("sample_rate_Hz", sample_rate_Hz, "Hz")
        check_range("overlap", overlap, 0.0, 1.0, high_open=True)
        self.hop = max(1, L - round(overlap * L))
        self.scale = check_positive("scale", scale, "per input unit")
        if isinstance(window, np.ndarray):
            w = np.asarray(window, dtype=float)
            if w.shape != (L,):
                raise ValueError(f"window has {w.size} points for segment_length = {L}")
        else:
            w = signal.get_window(window, L)
        if not np.all(np.isfinite(w)) or not np.any(w):
            raise ValueError("the window must be finite and not all zero")
        self.window = w
        self.remove_mean = bool(remove_mean)
        if clip_limits is not None:
            low, high = (float(v) for v in clip_limits)
            if not low < high:
                raise ValueError(f"clip_limits = {clip_limits} must be (low, high) with low < high")
            clip_limits = (low, high)
        self.clip_limits = clip_limits
        self.batch_segments = int(check_range("batch_segments", batch_segments, 1, 4096))
        leakage = np.abs(fft.rfft(w))
        self.mean_removed_bins = int(
            np.flatnonzero(leakage > _WINDOW_LEAKAGE_CUTOFF * leakage.max())[-1] + 1
            if self.remove_mean
            else 1
        )
        self.frequency_Hz = fft.rfftfreq(L, 1.0 / self.sample_rate_Hz)
        self._workspace: dict[type, tuple[np.ndarray, np.ndarray]] = {}
        self.reset()

    def reset(self) -> None:
        """Forget every sample and segment: start a new average."""
        bins = self.segment_length // 2 + 1
        self._sum = np.zeros(bins)
        self._sum_squares = np.zeros(bins)
        self.segments = 0
        self.samples = 0
        self.clipped_samples = 0
        self._carry: np.ndarray | None = None  # samples from the next segment's start on

    # --- adding data --------------------------------------------------------------------------
    def end_record(self) -> None:
        """Mark a gap in the stream: no segment spans it (the samples held back are dropped).

        Digitiser records taken one after another are not contiguous in time; a segment joining
        two of them would see a jump that no spectrum has.
        """
        self._carry = None

    def samples_for(self, segments: int) -> int:
        """Return how many more contiguous samples complete ``segments`` more segments."""
        wanted = int(check_range("segments", segments, 1, math.inf))
        held = 0 if self._carry is None else self._carry.size
        return (wanted - 1) * self.hop + self.segment_length - held

    def add(self, block: np.ndarray) -> None:
        """Add the next samples of the stream (raw counts or volts; scaled per segment).

        A block with NaN or infinite samples is refused whole (ValueError) and leaves the
        average untouched. Samples at or beyond ``clip_limits`` (by default, for integer
        input, the extreme codes of its type) are counted in ``clipped_samples``.
        """
        x = np.asarray(block)
        if x.ndim != 1:
            raise ValueError(f"a block must be one-dimensional, got shape {x.shape}")
        if x.size == 0:
            raise ValueError("the block is empty: no samples to add")
        if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
            raise ValueError(f"samples must be integers or real floats, got {x.dtype}")
        low, high = x.min(), x.max()
        if not (np.isfinite(low) and np.isfinite(high)):
            bad = int(np.count_nonzero(~np.isfinite(x)))
            raise ValueError(
                f"the block holds {bad} NaN or infinite sample(s) of {x.size}; nothing was added"
            )
        limits = self.clip_limits
        if limits is None and np.issubdtype(x.dtype, np.integer):
            # Raw digitiser codes: the extreme codes of the type are the ADC's rails.
            info = np.iinfo(x.dtype)
            limits = (info.min, info.max)
        clipped = 0
        if limits is not None and (low <= limits[0] or high >= limits[1]):
            clipped = int(np.count_nonzero((x <= limits[0]) | (x >= limits[1])))
        self._consume(x)
        self.samples += x.size
        self.clipped_samples += clipped

    def _consume(self, x: np.ndarray) -> None:
        """Process every complete segment of carry + block; keep the rest as the new carry."""
        L, D = self.segment_length, self.hop
        carry = x[:0] if self._carry is None else self._carry
        total = carry.size + x.size
        starts = (total - L) // D + 1 if total >= L else 0  # segments available, from carry start
        if starts == 0:
            self._carry = np.concatenate([carry, x])
            return
        power_sum = np.zeros_like(self._sum)
        square_sum = np.zeros_like(self._sum)
        in_carry = min(starts, -(-carry.size // D))  # segments that start inside the carry
        if in_carry:
            head = np.concatenate([carry, x[: (in_carry - 1) * D + L - carry.size]])
            self._transform(sliding_window_view(head, L)[::D], power_sum, square_sum)
        if starts > in_carry:
            offset = in_carry * D - carry.size
            part = x[offset : offset + (starts - in_carry - 1) * D + L]
            self._transform(
                sliding_window_view(part, L)[::D], power_sum, square_sum, self._segment_means(part)
            )
        next_start = starts * D - carry.size
        self._carry = (
            x[next_start:].copy() if next_start >= 0 else np.concatenate([carry[starts * D :], x])
        )
        self._sum += power_sum
        self._sum_squares += square_sum
        self.segments += starts

    def _segment_means(self, part: np.ndarray) -> np.ndarray | None:
        """Return the mean of every segment of ``part`` from sums over hops, when L = r·D.

        Each sample is read once instead of L/D times; None when the hop does not divide L.
        """
        L, D = self.segment_length, self.hop
        if not self.remove_mean or L % D:
            return None
        hop_sums = part.reshape(-1, D).sum(axis=1, dtype=np.float64)
        running = np.concatenate([[0.0], np.cumsum(hop_sums)])
        return (running[L // D :] - running[: -(L // D)]) / L

    def _transform(
        self,
        views: np.ndarray,
        power_sum: np.ndarray,
        square_sum: np.ndarray,
        means: np.ndarray | None = None,
    ) -> None:
        """Add the periodograms of the segments ``views`` (K × L strided view) to the sums."""
        single = views.dtype.type in _SINGLE_PRECISION_INPUTS
        dtype = np.float32 if single else np.float64
        if dtype not in self._workspace:
            # Allocated once: fresh pages for every batch cost as much as the arithmetic.
            self._workspace[dtype] = (
                (self.window * self.scale).astype(dtype),
                np.empty((self.batch_segments, self.segment_length), dtype),
            )
        scaled_window, buffer = self._workspace[dtype]
        for first in range(0, views.shape[0], self.batch_segments):
            raw = views[first : first + self.batch_segments]
            segments = buffer[: raw.shape[0]]
            if self.remove_mean:
                mean = (
                    raw.mean(axis=1, dtype=np.float64)
                    if means is None
                    else means[first : first + raw.shape[0]]
                ).astype(dtype)
                np.subtract(raw, mean[:, None], out=segments, dtype=dtype, casting="unsafe")
                segments *= scaled_window
            else:
                np.multiply(raw, scaled_window, out=segments, dtype=dtype, casting="unsafe")
            spectra = fft.rfft(segments, axis=-1, workers=-1)
            power = np.square(spectra.real)
            power += np.square(spectra.imag)
            power_sum += power.sum(axis=0, dtype=np.float64)
            square_sum += np.einsum("ij,ij->j", power, power, dtype=np.float64)

    # --- results ------------------------------------------------------------------------------
    def _require_segments(self) -> None:
        if self.segments == 0:
            raise ValueError(
                f"no complete segment yet: {self.samples} sample(s) added, "
                f"{self.segment_length} needed for one segment"
            )

    def mean(self) -> np.ndarray:
        """Return the averaged one-sided PSD in (scale unit)²/Hz."""
        self._require_segments()
        return _one_sided(self._sum / self.segments, self.window, self.sample_rate_Hz)

    def standard_error(self) -> np.ndarray | None:
        """Return the standard error of the mean per bin (None with fewer than two segments)."""
        self._require_segments()
        K = self.segments
        if K < 2:
            return None
        c0, _, bias = welch_statistics(self.window, self.hop, K)
        mean = self._sum / K
        sample_variance = np.clip(self._sum_squares / K - mean**2, 0.0, None) * K / (K - 1)
        raw = np.sqrt(sample_variance / bias * c0 / K)
        return _one_sided(raw, self.window, self.sample_rate_Hz)

    def spectrum(self) -> Spectrum:
        """Return the averaged spectrum with its standard errors and Welch statistics."""
        psd = self.mean()
        c0, correlation, _ = welch_statistics(self.window, self.hop, self.segments)
        return Spectrum(
            frequency_Hz=self.frequency_Hz,
            psd=psd,
            standard_error=self.standard_error(),
            sample_rate_Hz=self.sample_rate_Hz,
            window=self.window,
            segments=self.segments,
            effective_averages=self.segments / c0,
            bin_correlation=correlation,
            mean_removed_bins=self.mean_removed_bins,
            samples=self.samples,
            clipped_samples=self.clipped_samples,
        )


def segment_length_for(samples: int, sample_rate_Hz: float, resolution_Hz: float) -> int:
    """Return a power-of-two segment length near f_s/resolution that leaves ≥ 8 segments."""
    n = int(check_range("samples", samples, 16, math.inf, "samples"))
    fs = check_positive("sample_rate_Hz", sample_rate_Hz, "Hz")
    wanted = fs / check_positive("resolution_Hz", resolution_Hz, "Hz")
    length = 1 << max(4, round(math.log2(wanted)))
    while length > 16 and length * 4.5 > n:
        length //= 2
    return length
