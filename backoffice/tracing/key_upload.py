"""The health office's private key, uploaded for one reveal and never written anywhere.

Django's default upload handlers keep a small file in memory but stream a large one to a
temporary file on disk. The reveal view replaces them, before the body is read, with
``KeyUploadHandler``: every uploaded file stays in memory, and a file over ``MAX_KEY_BYTES`` is
not kept at all (only its size, so the view can refuse it). The view also refuses a request
whose body is over ``MAX_REVEAL_REQUEST_BYTES`` before reading it. The key is parsed from memory
(``firmware.adapters.escrow_key.escrow_private_key_from_pem``), used for the one request, and
never logged, stored, put in the session or echoed back.
"""

from __future__ import annotations

import io
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from django.core.files.uploadedfile import InMemoryUploadedFile
from django.core.files.uploadhandler import FileUploadHandler
from django.utils.translation import gettext as _

from firmware.adapters.escrow_key import EscrowKeyError, escrow_private_key_from_pem

# An X25519 private key in PKCS#8 PEM is 119 bytes; room for a comment or CRLF line ends.
MAX_KEY_BYTES = 4096
# The reveal form: the key, the trace token (up to 4 KiB), the reason, the CSRF token, multipart framing.
MAX_REVEAL_REQUEST_BYTES = 16 * 1024
KEY_FIELD = "escrow_key"


class KeyRefused(ValueError):
    """The uploaded key cannot be used; the message is for the page, in its language."""


class KeyUploadHandler(FileUploadHandler):
    """Keep each uploaded file in memory; keep nothing of a file over ``max_bytes`` but its size.

    Args:
        max_bytes: the largest file kept.
        request: the request (Django's handler signature).
    """

    def __init__(self, max_bytes: int = MAX_KEY_BYTES, request: Any = None) -> None:
        super().__init__(request)
        self.max_bytes = max_bytes
        self._buffer = bytearray()
        self._too_large = False

    def new_file(self, *args: Any, **kwargs: Any) -> None:
        super().new_file(*args, **kwargs)
        self._buffer = bytearray()
        self._too_large = False

    def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
        if self._too_large or len(self._buffer) + len(raw_data) > self.max_bytes:
            self._too_large = True
            self._buffer = bytearray()
            return None  # consumed here: no later handler (no temporary file) sees it
        self._buffer.extend(raw_data)
        return None

    def file_complete(self, file_size: int) -> InMemoryUploadedFile:
        content = b"" if self._too_large else bytes(self._buffer)
        self._buffer = bytearray()
        return InMemoryUploadedFile(io.BytesIO(content), self.field_name, self.file_name, self.content_type,
                                    file_size, self.charset, self.content_type_extra)


_WORDS = {
    "too_large": lambda: _("Tệp khóa quá lớn (tối đa %(n)d byte): đây không phải là khóa bí mật của cơ quan y tế")
    % {"n": MAX_KEY_BYTES},
    "encrypted": lambda: _("Tệp khóa đã được mã hóa bằng mật khẩu; bạn vui lòng dùng tệp khóa không mật khẩu "
                           "(openssl pkey -in KHOA.pem -out KHOA-MO.pem, giữ tệp ở chế độ 0600)"),
    "public": lambda: _("Đây là khóa công khai (tệp .pub.pem của các cổng); bạn vui lòng chọn khóa bí mật "
                        "của cơ quan y tế"),
    "not_pem": lambda: _("Tệp này không phải là khóa bí mật dạng PEM"),
    "not_x25519": lambda: _("Tệp này không phải là khóa X25519 của cơ quan y tế (qrgate keys escrow-new)"),
}


def read_uploaded_key(upload: Any) -> X25519PrivateKey:
    """The X25519 private key in the uploaded file.

    Raises:
        KeyRefused: no file, too large, encrypted, a public key, not PEM or not X25519.
    """
    if upload is None:
        raise KeyRefused(_("Bạn vui lòng chọn tệp khóa bí mật của cơ quan y tế (tệp PEM)"))
    if upload.size > MAX_KEY_BYTES:
        raise KeyRefused(_WORDS["too_large"]())
    data = upload.read(MAX_KEY_BYTES + 1)
    try:
        return escrow_private_key_from_pem(data, "the uploaded key")
    except EscrowKeyError as err:
        raise KeyRefused(_WORDS.get(err.kind, _WORDS["not_pem"])()) from None  # no chain: it names no bytes
