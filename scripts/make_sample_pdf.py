"""Regenerate sample_data/policies/support-sla.pdf (a two-page text PDF, no dependencies)."""

from __future__ import annotations

from pathlib import Path

PAGES = [
    [
        "Fernhill Software - Kestrel Enterprise Support SLA",
        "",
        "Version 4, effective 1 January 2026.",
        "",
        "1. Availability",
        "The Kestrel web console and licence service are available 99.9% of each",
        "calendar month. Planned maintenance is announced 7 days ahead and is",
        "excluded. Backups themselves never depend on the licence service.",
        "",
        "2. Response times",
        "P1 (production backups failing for all hosts): first response within 1 hour, 24/7.",
        "P2 (backups failing for some hosts): first response within 4 hours, 24/7.",
        "P3 (degraded performance, questions): first response within 1 business day.",
        "P4 (feature requests): first response within 5 business days.",
    ],
    [
        "3. Service credits",
        "If monthly availability falls below 99.9%, the customer receives a credit",
        "of 10% of the monthly fee; below 99.0%, a credit of 25%. Credits must be",
        "claimed within 30 days of the end of the affected month.",
        "",
        "4. Escalation",
        "Unresolved P1 tickets are escalated to the duty engineering manager after",
        "4 hours and to the CTO after 12 hours.",
        "",
        "5. Contact",
        "Open tickets at support.fernhill.example or call +47 77 00 12 34.",
    ],
]


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def build_pdf(pages: list[list[str]]) -> bytes:
    objects: list[bytes] = []
    page_ids = [4 + 2 * i for i in range(len(pages))]
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    kids = " ".join(f"{pid} 0 R" for pid in page_ids)
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for i, lines in enumerate(pages):
        content_id = page_ids[i] + 1
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {content_id} 0 R >>".encode()
        )
        ops = ["BT", "/F1 11 Tf", "14 TL", "56 740 Td"]
        ops += [f"({_escape(line)}) Tj T*" for line in lines]
        ops.append("ET")
        stream = "\n".join(ops).encode("latin-1")
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


if __name__ == "__main__":
    target = Path(__file__).resolve().parent.parent / "sample_data" / "policies" / "support-sla.pdf"
    target.write_bytes(build_pdf(PAGES))
    print(f"wrote {target}")
