"""The three-axis coils inside the shield: B = B_residual + K·I (docs/physics.md §5)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from hotspin.analysis.checks import ParameterError, check_range, check_vector


def _default_coil_matrix() -> tuple[tuple[float, ...], ...]:
    # About 100 nT/mA per axis, with the percent-level cross-talk of a real coil set.
    return ((1.00e-4, 1.2e-6, -0.8e-6), (-0.9e-6, 0.98e-4, 1.1e-6), (0.7e-6, -1.3e-6, 1.02e-4))


@dataclass(frozen=True)
class CoilConfig:
    """Coil matrix, residual field in the shield and the current sources' noise."""

    coil_matrix_T_per_A: tuple[tuple[float, ...], ...] = field(default_factory=_default_coil_matrix)
    residual_field_T: tuple[float, float, float] = (3.0e-9, -2.0e-9, 1.5e-9)
    current_noise_A: float = 2e-9  # rms, per source; the lab draws it every 10 s of signal

    def __post_init__(self) -> None:
        matrix = np.asarray(self.coil_matrix_T_per_A, dtype=float)
        if matrix.shape != (3, 3) or not np.all(np.isfinite(matrix)):
            raise ParameterError(
                f"coil_matrix_T_per_A must be a finite 3×3 matrix, got {self.coil_matrix_T_per_A!r}"
            )
        if abs(np.linalg.det(matrix)) < 1e-30:
            raise ParameterError(
                "coil_matrix_T_per_A is singular: the coils cannot set every field"
            )
        check_vector("residual_field_T", self.residual_field_T, 3, "T")
        check_range("current_noise_A", self.current_noise_A, 0.0, 1e-3, "A")

    @property
    def matrix(self) -> np.ndarray:
        """Return K as an array, T/A."""
        return np.asarray(self.coil_matrix_T_per_A, dtype=float)


class Coils:
    """Field at the cell from the three coil currents."""

    def __init__(self, config: CoilConfig) -> None:
        self.config = config
        self.currents_A = np.zeros(3)

    def current_noise_A(self, rng: np.random.Generator) -> np.ndarray:
        """Draw the three sources' current noise (rms ``current_noise_A`` each), in A."""
        return self.config.current_noise_A * rng.standard_normal(3)

    def field_T(self, current_noise_A: np.ndarray | None = None) -> np.ndarray:
        """Return B = B_res + K (I + δI), δI the sources' current noise when given."""
        currents = self.currents_A if current_noise_A is None else self.currents_A + current_noise_A
        return np.asarray(self.config.residual_field_T) + self.config.matrix @ currents
