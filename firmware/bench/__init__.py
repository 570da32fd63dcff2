"""firmware.bench."""
