"""The text envelope around a COSE message: ``PREFIX`` + base45(optional zlib(bytes)).

Pure. Shared by ``QG1:`` passes and provisioning codes (``QGP1:``). Base45 follows
RFC 9285 strictly (no whitespace, no lower case, no value overflow); zlib is
detected by its two-byte header and inflated with a hard cap on the output size.
"""

from __future__ import annotations

import zlib

BASE45_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
_BASE45_VALUE = {ord(c): i for i, c in enumerate(BASE45_ALPHABET)}

# A QR code holds at most 4,296 alphanumeric characters.
MAX_TEXT_CHARS = 8192
MAX_INFLATED_BYTES = 16 * 1024


class EnvelopeError(ValueError):
    """The text envelope could not be opened.

    Attributes:
        stage: ``"prefix"``, ``"base45"`` or ``"zlib"``: where it failed.
        detail: a short explanation without personal data.
    """

    def __init__(self, stage: str, detail: str) -> None:
        self.stage = stage
        self.detail = detail
        super().__init__(f"{stage}: {detail}")


def b45encode(data: bytes) -> str:
    """Encode bytes as base45 text (RFC 9285)."""
    out: list[str] = []
    for i in range(0, len(data) - 1, 2):
        n = data[i] * 256 + data[i + 1]
        hi, rest = divmod(n, 45 * 45)
        mid, lo = divmod(rest, 45)
        out.append(BASE45_ALPHABET[lo] + BASE45_ALPHABET[mid] + BASE45_ALPHABET[hi])
    if len(data) % 2:
        mid, lo = divmod(data[-1], 45)
        out.append(BASE45_ALPHABET[lo] + BASE45_ALPHABET[mid])
    return "".join(out)


def b45decode(text: str | bytes) -> bytes:
    """Decode base45 text strictly (RFC 9285).

    Raises:
        EnvelopeError: (stage ``base45``) a character outside the alphabet, a length of
            3n+1, or a group whose value does not fit (over 65535, or 255 for a pair).
    """
    raw = text.encode("latin-1", "replace") if isinstance(text, str) else bytes(text)
    if len(raw) % 3 == 1:
        raise EnvelopeError("base45", f"length {len(raw)} is not valid base45 (3n+1)")
    values = []
    for position, byte in enumerate(raw):
        value = _BASE45_VALUE.get(byte)
        if value is None:
            raise EnvelopeError("base45", f"character at {position} is outside the base45 alphabet")
        values.append(value)
    out = bytearray()
    full = len(values) - len(values) % 3
    for i in range(0, full, 3):
        n = values[i] + values[i + 1] * 45 + values[i + 2] * 2025
        if n > 0xFFFF:
            raise EnvelopeError("base45", f"group at {i} has value {n}, over 65535")
        out += n.to_bytes(2, "big")
    if full < len(values):
        n = values[full] + values[full + 1] * 45
        if n > 0xFF:
            raise EnvelopeError("base45", f"final pair has value {n}, over 255")
        out.append(n)
    return bytes(out)


def looks_like_zlib(data: bytes) -> bool:
    """True if data starts with a zlib header: deflate method, window <= 32K, valid check bits."""
    if len(data) < 2:
        return False
    cmf, flg = data[0], data[1]
    return (cmf & 0x0F) == 8 and (cmf >> 4) <= 7 and (cmf * 256 + flg) % 31 == 0


def inflate(data: bytes, max_bytes: int = MAX_INFLATED_BYTES) -> bytes:
    """Inflate a complete zlib stream, refusing output over max_bytes or bytes after the stream.

    Raises:
        EnvelopeError: (stage ``zlib``) corrupt, truncated, over the cap, or trailing data.
    """
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, max_bytes + 1)
    except zlib.error as err:
        raise EnvelopeError("zlib", f"corrupt zlib stream ({err})") from err
    if len(out) > max_bytes or inflater.unconsumed_tail:
        raise EnvelopeError("zlib", f"inflates to more than {max_bytes} bytes")
    if not inflater.eof:
        raise EnvelopeError("zlib", "zlib stream is truncated")
    if inflater.unused_data:
        raise EnvelopeError("zlib", f"{len(inflater.unused_data)} bytes after the zlib stream")
    return out


def wrap(prefix: str, message: bytes, compress: bool | str = True) -> str:
    """Return ``prefix`` + base45 of the message, zlib-compressed (level 9) if asked.

    Args:
        prefix: e.g. ``"QG1:"`` or ``"QGP1:"``.
        message: the bytes to carry (a COSE message).
        compress: True always compresses, False never, ``"auto"`` only when that makes
            the text shorter (a signed pass of random-looking bytes often does not shrink).
            A message that itself starts like a zlib header is always compressed, since
            the reader would otherwise try to inflate it (COSE messages never do).
    """
    body = message
    if compress or looks_like_zlib(message):
        packed = zlib.compress(message, 9)
        if compress is True or len(packed) < len(message) or looks_like_zlib(message):
            body = packed
    return prefix + b45encode(body)


def has_prefix(prefix: str, payload: bytes | str) -> bool:
    """True if the payload starts with the prefix (bytes or text, exact case)."""
    head = prefix.encode("ascii")
    raw = payload.encode("utf-8", "surrogatepass") if isinstance(payload, str) else payload
    return raw.startswith(head)


def unwrap(prefix: str, payload: bytes | str, max_bytes: int = MAX_INFLATED_BYTES) -> bytes:
    """Open the envelope: check the prefix, decode base45, inflate if zlib. Returns the message.

    Raises:
        EnvelopeError: with the stage that failed (``prefix``, ``base45`` or ``zlib``).
    """
    return open_envelope(prefix, payload, max_bytes).message


class Opened:
    """What ``open_envelope`` found: the base45-decoded bytes and the message inside."""

    __slots__ = ("decoded", "compressed", "message")

    def __init__(self, decoded: bytes, compressed: bool, message: bytes) -> None:
        self.decoded = decoded
        self.compressed = compressed
        self.message = message


def open_envelope(prefix: str, payload: bytes | str, max_bytes: int = MAX_INFLATED_BYTES) -> Opened:
    """Like ``unwrap`` but also report the intermediate bytes (for stage-by-stage checks).

    Raises:
        EnvelopeError: with the stage that failed.
    """
    raw = payload.encode("utf-8", "surrogatepass") if isinstance(payload, str) else bytes(payload)
    head = prefix.encode("ascii")
    if not raw.startswith(head):
        raise EnvelopeError("prefix", f"does not start with {prefix!r}")
    body = raw[len(head):]
    if len(body) > MAX_TEXT_CHARS:
        raise EnvelopeError("base45", f"{len(body)} characters, more than {MAX_TEXT_CHARS}")
    decoded = b45decode(body)
    if looks_like_zlib(decoded):
        return Opened(decoded, True, inflate(decoded, max_bytes))
    if len(decoded) > max_bytes:
        raise EnvelopeError("base45", f"{len(decoded)} bytes, more than {max_bytes}")
    return Opened(decoded, False, decoded)
