"""Test-wide settings: pyvisa-py as the VISA library, Qt without a screen."""

import os

# The drivers' tests connect to simulated instruments on loopback through pyvisa-py; without
# this pyvisa first searches the system for a vendor VISA library on every connection.
os.environ.setdefault("PYVISA_LIBRARY", "@py")
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
