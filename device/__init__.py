"""Adapters for hardware and decoder libraries: cameras, QR decoders, GPIO outputs.

Each library is imported inside its adapter module only, so the core and the tests
import without hardware.
"""
