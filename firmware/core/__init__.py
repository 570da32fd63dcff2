"""firmware.core."""
