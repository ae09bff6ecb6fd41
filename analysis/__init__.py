"""Pure numerics for the hot-vapour ⁸⁷Rb magnetometer: constants, vapour, spin model, fits.

No I/O and no Qt here; every quantity is in SI units (docs/physics.md).
"""
