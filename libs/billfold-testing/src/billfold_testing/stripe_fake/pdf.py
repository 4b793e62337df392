"""A tiny but valid PDF (one page of Helvetica text), enough for "download invoice" flows.

Written by hand rather than with a PDF library so the fake has no extra dependency; the
cross-reference table carries exact byte offsets, so strict readers accept it.
"""

from __future__ import annotations


def _escape(text: str) -> bytes:
    # WinAnsiEncoding covers the euro, yen and pound signs and the multiplication sign;
    # anything else degrades to "?".
    raw = text.encode("cp1252", errors="replace")
    return raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")


def render_pdf(lines: list[str], title: str = "Invoice") -> bytes:
    """A one-page PDF showing ``lines`` top to bottom."""
    stream = b"BT /F1 11 Tf 56 780 Td 15 TL\n"
    for line in lines:
        stream += b"(" + _escape(line) + b") '\n"
    stream += b"ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
        b"/Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Title (" + _escape(title) + b") /Producer (billfold stripe_fake) >>",
    ]
    out = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref_at = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += (
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R /Info {len(objects)} 0 R >>\n"
        f"startxref\n{xref_at}\n%%EOF\n"
    ).encode()
    return out
