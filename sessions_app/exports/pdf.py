"""The client's PDF of a reviewed record: title, client, endpoints, then every entry as shown.

Plain and readable: reportlab's standard fonts (Windows-1252; other characters print as '?'),
the same redactions as the client's page, a footer with the page number.
"""

from __future__ import annotations

import io
from datetime import datetime
from xml.sax.saxutils import escape

from django.utils import timezone
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import Flowable, KeepTogether, Paragraph, SimpleDocTemplate, Spacer

from sessions_app.selectors.review import REDACTED, ReviewedEntry
from sessions_app.selectors.sharing import SharedRecord


def _cp1252(value: str) -> str:
    """The standard PDF fonts cover Windows-1252; anything else prints as '?' rather than vanishing."""
    return value.encode("cp1252", "replace").decode("cp1252")


def _pdf_text(value: str) -> str:
    return escape(_cp1252(value))


def _pdf_block(value: str) -> str:
    return _pdf_text(value).replace("\n", "<br/>").replace("  ", "&nbsp; ")


def record_pdf(record: SharedRecord) -> bytes:
    """The reviewed record as a plain, readable PDF: title, client, endpoints, then every entry."""
    styles = getSampleStyleSheet()
    body = styles["BodyText"]
    meta = ParagraphStyle("meta", parent=body, fontSize=8.5, textColor=colors.HexColor("#5b6475"), spaceAfter=1)
    head = ParagraphStyle("entry", parent=body, fontSize=9.5, spaceBefore=5, spaceAfter=1)
    mono = ParagraphStyle(
        "mono",
        parent=body,
        fontName="Courier",
        fontSize=8,
        leading=9.6,
        leftIndent=8,
        backColor=colors.HexColor("#f1f3f6"),
        borderPadding=3,
        spaceAfter=3,
    )
    note = ParagraphStyle(
        "note",
        parent=body,
        fontSize=9,
        leftIndent=14,
        textColor=colors.HexColor("#1d2330"),
        backColor=colors.HexColor("#fff7e0"),
        borderPadding=3,
    )

    def stamp(value: datetime) -> str:
        return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S %Z")

    story: list[Flowable] = [Paragraph(_pdf_text(record.title), styles["Title"])]
    facts = [
        ("Client", record.client or "–"),
        ("Endpoints", ", ".join(record.endpoints)),
        ("Technicians", ", ".join(record.technicians)),
    ]
    if record.incident is not None:
        facts.insert(1, ("Status", record.incident.get_status_display()))
    if record.link is not None:
        facts.append(("Link expires", stamp(record.link.expires_at)))
    facts.append(("Generated", stamp(record.generated_at)))
    for name, value in facts:
        story.append(Paragraph(f"<b>{_pdf_text(name)}:</b> {_pdf_text(value)}", body))
    if record.incident is not None and record.incident.summary:
        story += [
            Spacer(1, 4 * mm),
            Paragraph("Summary", styles["Heading2"]),
            Paragraph(_pdf_block(record.incident.summary), body),
        ]
    if record.redaction_count:
        story.append(
            Paragraph(
                f"{record.redaction_count} entr{'y has' if record.redaction_count == 1 else 'ies have'} been reviewed and "
                f"redacted; removed text is shown as {REDACTED}.",
                meta,
            )
        )
    story += [Spacer(1, 4 * mm), Paragraph("Record", styles["Heading2"])]

    def entry_flowables(item: ReviewedEntry, *, is_note: bool = False) -> list[Flowable]:
        e = item.entry
        what = f"{e.kind}{' · ' + item.action_kind if item.action_kind else ''}"
        line = (
            f"<b>{_pdf_text(stamp(e.at))}</b> &nbsp; {_pdf_text(what)} &nbsp; "
            f"<font color='#5b6475'>by {_pdf_text(e.actor)} · {_pdf_text(item.endpoint)} "
            f"(#{e.index})</font>"
        )
        out = [Paragraph(line, head)]
        if item.whole_redacted:
            out.append(
                Paragraph(f"<i>{REDACTED}</i> (this entry was withheld after review)", note if is_note else body)
            )
        for f in item.fields:
            text = "".join(s.text for s in f.segments)
            if f.prose:
                out.append(Paragraph(_pdf_block(text), note if is_note else body))
            elif f.block:
                out.append(Paragraph(f"<font color='#5b6475'>{_pdf_text(f.label)}</font>", meta))
                out.append(Paragraph(_pdf_block(text), note if is_note else mono))
            else:
                out.append(
                    Paragraph(
                        f"<font color='#5b6475'>{_pdf_text(f.label)}:</font> {_pdf_text(text)}",
                        note if is_note else body,
                    )
                )
        return out

    for item in record.items:
        flowables = entry_flowables(item)
        for n in item.notes:
            flowables += [Paragraph("Reviewer's note:", meta)] + entry_flowables(n, is_note=True)
        story.append(KeepTogether(flowables) if sum(len(f.text) for f in item.fields) < 1500 else flowables[0])
        if sum(len(f.text) for f in item.fields) >= 1500:
            story.extend(flowables[1:])
    if not record.items:
        story.append(Paragraph("No entries.", body))

    buffer = io.BytesIO()
    doc = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        title=_pdf_text(record.title),
        author="Caisey",
        leftMargin=16 * mm,
        rightMargin=16 * mm,
        topMargin=16 * mm,
        bottomMargin=16 * mm,
    )

    def footer(canvas: Canvas, doc_: SimpleDocTemplate) -> None:
        canvas.saveState()
        canvas.setFont("Helvetica", 7.5)
        canvas.setFillColor(colors.HexColor("#5b6475"))
        canvas.drawString(16 * mm, 9 * mm, _cp1252(f"{record.title} · reviewed record")[:120])
        canvas.drawRightString(A4[0] - 16 * mm, 9 * mm, f"page {doc_.page}")
        canvas.restoreState()

    doc.build(story, onFirstPage=footer, onLaterPages=footer)
    return buffer.getvalue()
