"""Build small TNEF (winmail.dat) streams for the corpus, per MS-OXTNEF."""

import struct

SIGNATURE = 0x223E9F78
MESSAGE, ATTACHMENT = 1, 2
# TNEF attribute ids: (attribute type << 16) | attribute name.
ATT_TNEF_VERSION = 0x00089006
ATT_OEM_CODEPAGE = 0x00069007
ATT_MESSAGE_CLASS = 0x00078008
ATT_SUBJECT = 0x00018004
ATT_BODY = 0x0002800C
ATT_MAPI_PROPS = 0x00069003
ATT_ATTACH_REND_DATA = 0x00069002
ATT_ATTACH_TITLE = 0x00018010
ATT_ATTACH_DATA = 0x0006800F
ATT_ATTACHMENT = 0x00069005
# MAPI property types and ids.
PT_LONG, PT_STRING8, PT_UNICODE, PT_BINARY = 0x0003, 0x001E, 0x001F, 0x0102
PR_BODY_HTML = 0x1013
PR_RTF_COMPRESSED = 0x1009
PR_INTERNET_CPID = 0x3FDE
PR_ATTACH_LONG_FILENAME = 0x3707
PR_ATTACH_MIME_TAG = 0x370E
PR_ATTACH_CONTENT_ID = 0x3712


def attribute(level: int, attribute_id: int, data: bytes) -> bytes:
    """Return one TNEF attribute: level, id, length, data and checksum."""
    checksum = sum(data) & 0xFFFF
    return (
        struct.pack("<BII", level, attribute_id, len(data))
        + data
        + (struct.pack("<H", checksum))
    )


def mapi_props(props: list[tuple[int, int, object]]) -> bytes:
    """Encode (type, id, value) MAPI properties as an attMAPIProps payload."""
    out = struct.pack("<I", len(props))
    for prop_type, prop_id, value in props:
        out += struct.pack("<HH", prop_type, prop_id)
        if prop_type == PT_LONG:
            out += struct.pack("<I", value)
            continue
        if prop_type == PT_UNICODE:
            value = (value + "\0").encode("utf-16-le")
        elif prop_type == PT_STRING8:
            value = value.encode("cp1252") + b"\0"
        out += struct.pack("<II", 1, len(value)) + value + b"\0" * (-len(value) % 4)
    return out


def mela_rtf(rtf: bytes) -> bytes:
    """Wrap RTF as an uncompressed ("MELA") PR_RTF_COMPRESSED stream."""
    return struct.pack("<IIII", len(rtf) + 12, len(rtf), 0x414C454D, 0) + rtf


def tnef(
    subject: str,
    body: str | None = None,
    props: list[tuple[int, int, object]] | None = None,
    files: list[tuple[str, str, bytes, str | None]] = (),
) -> bytes:
    """Return a TNEF stream with a body and (name, type, data, content id) files."""
    out = struct.pack("<IH", SIGNATURE, 0x0001)
    out += attribute(MESSAGE, ATT_TNEF_VERSION, struct.pack("<I", 0x00010000))
    out += attribute(MESSAGE, ATT_OEM_CODEPAGE, struct.pack("<II", 1252, 0))
    out += attribute(MESSAGE, ATT_MESSAGE_CLASS, b"IPM.Microsoft Mail.Note\0")
    out += attribute(MESSAGE, ATT_SUBJECT, subject.encode("cp1252") + b"\0")
    if body is not None:
        out += attribute(MESSAGE, ATT_BODY, body.encode("cp1252"))
    if props:
        out += attribute(MESSAGE, ATT_MAPI_PROPS, mapi_props(props))
    for name, content_type, data, content_id in files:
        attach = [
            (PT_UNICODE, PR_ATTACH_LONG_FILENAME, name),
            (PT_STRING8, PR_ATTACH_MIME_TAG, content_type),
        ]
        if content_id:
            attach.append((PT_STRING8, PR_ATTACH_CONTENT_ID, content_id))
        out += attribute(ATTACHMENT, ATT_ATTACH_REND_DATA, b"\0" * 14)
        out += attribute(ATTACHMENT, ATT_ATTACH_TITLE, b"ATTACH~1.DAT\0")
        out += attribute(ATTACHMENT, ATT_ATTACH_DATA, data)
        out += attribute(ATTACHMENT, ATT_ATTACHMENT, mapi_props(attach))
    return out
