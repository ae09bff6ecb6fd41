"""The simulated world (one `SimulatedLab`) and the simulated instruments that share it."""
