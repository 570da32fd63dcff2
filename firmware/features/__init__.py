"""firmware.features."""
