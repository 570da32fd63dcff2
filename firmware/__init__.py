"""qrgate firmware: the gate application (core, ports, adapters for storage and MQTT, CLI)."""

__version__ = "0.1.0"
