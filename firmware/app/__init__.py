"""firmware.app.builder."""
