"""Instrument drivers (pymeasure) and the virtual instruments built on them."""
