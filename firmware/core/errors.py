"""The one small error tree of qrgate.

Adapters translate library errors into these at the edge; the composition root
logs them once. A rejected credential is a Decision, never an exception.
"""


class QrGateError(Exception):
    """Base of every error qrgate raises on purpose."""


class ConfigError(QrGateError, ValueError):
    """The configuration is invalid. Carries every problem found, not just the first.

    Args:
        problems: one human line per problem: the key, the bad value and the fix.
    """

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class HardwareError(QrGateError):
    """A hardware part could not be used."""


class CameraUnavailable(HardwareError):
    """The camera (or replay source) could not be opened or stopped delivering."""


class GpioUnavailable(HardwareError):
    """A GPIO pin could not be claimed or driven."""


class DecodeError(QrGateError):
    """The decoder library failed on one frame. The loop logs it and skips the frame."""


class StoreError(QrGateError):
    """A durable store (outbox, state, lists) could not be read or written."""


class PublishError(QrGateError):
    """An MQTT publish could not be handed over or was refused."""
