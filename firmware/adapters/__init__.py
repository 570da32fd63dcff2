"""firmware.adapters."""
