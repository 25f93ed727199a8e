"""The client's PDF of a reviewed record: title, client, computers, who reviewed it, the story
(what was done, in order: sessions_app/selectors/story.py, the same as the share page), then the
full event log as an appendix.

Plain and readable: reportlab's standard fonts (Windows-1252; other characters print as '?'),
the same redactions as the client's page, figures formatted by sessions_app/formatting.py, a
footer with the page number.
"""

from __future__ import annotations

import io
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import Flowable, KeepTogether, PageBreak, Paragraph, SimpleDocTemplate, Spacer

from sessions_app import formatting as fmt
from sessions_app.selectors.review import REDACTED, ReviewedEntry
from sessions_app.selectors.sharing import SharedRecord
from sessions_app.selectors.story import record_story, sentence


def _cp1252(value: str) -> str:
    """The standard PDF fonts cover Windows-1252; anything else prints as '?' rather than vanishing."""
    return value.encode("cp1252", "replace").decode("cp1252")


def _pdf_text(value: str) -> str:
    return escape(_cp1252(value))


def _pdf_block(value: str) -> str:
    return _pdf_text(value).replace("\n", "<br/>").replace("  ", "&nbsp; ")


def record_pdf(record: SharedRecord) -> bytes:
    """The reviewed record as a plain, readable PDF: the facts, the story, then the event log."""
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

    story_ = record_story(record)
    story: list[Flowable] = [Paragraph(_pdf_text(story_.title), styles["Title"])]
    facts = [
        ("Client", story_.client or "–"),
        ("Computers", ", ".join(story_.endpoints)),
        ("Technicians", ", ".join(story_.technicians)),
        ("Reviewed by", "; ".join(story_.reviews) or "Not reviewed"),
    ]
    if story_.status:
        facts.insert(1, ("Status", story_.status))
    if record.tickets:
        # The link itself, written out: a printed page cannot be clicked.
        facts.insert(
            1, ("Ticket", "; ".join(f"{t['ticket']} ({t['url']})" if t["url"] else t["ticket"] for t in record.tickets))
        )
    if story_.valid_until:
        facts.append(("Link valid until", story_.valid_until))
    facts.append(("Generated", story_.generated))
    for name, value in facts:
        story.append(Paragraph(f"<b>{_pdf_text(name)}:</b> {_pdf_text(value)}", body))
    if story_.summary:
        story += [
            Spacer(1, 4 * mm),
            Paragraph("Summary", styles["Heading2"]),
            Paragraph(_pdf_block(story_.summary), body),
        ]
    if story_.redacted:
        story.append(
            Paragraph(
                f"Some content was removed after review, for example passwords; removed text is shown as {REDACTED}.",
                meta,
            )
        )

    # The story: what was done, in order.
    story += [Spacer(1, 4 * mm), Paragraph("What was done, in order", styles["Heading2"])]
    for n, step in enumerate(story_.steps, start=1):
        where = f" · on {step.endpoint}" if len(story_.endpoints) > 1 else ""
        flow: list[Flowable] = [
            Paragraph(f"<b>{n}. {_pdf_text(step.what)}</b>", head),
            Paragraph(_pdf_text(fmt.when(step.at) + where), meta),
        ]
        if step.kind == "check":
            flow.append(Paragraph(f"Requested by {_pdf_text(step.who)}", body))
        if step.withheld:
            flow.append(Paragraph(f"<i>{REDACTED}</i> (this entry was withheld after review)", body))
        for name, value in step.details:
            flow.append(Paragraph(f"<font color='#5b6475'>{_pdf_text(name)}:</font> {_pdf_text(value)}", body))
        if step.outcome:
            flow.append(Paragraph(f"<b>Outcome:</b> {_pdf_text(step.outcome)}", body))
        if step.found:
            if step.kind == "check":
                flow += [Paragraph("What was found:", meta), Paragraph(_pdf_block(step.found), mono)]
            else:
                flow.append(Paragraph(_pdf_block(step.found), note if step.kind == "note" else body))
        if step.output:
            flow += [Paragraph("Output from the computer:", meta), Paragraph(_pdf_block(step.output), mono)]
        for nt in step.notes:
            flow.append(Paragraph(f"<b>Note from {_pdf_text(nt.by)}:</b> {_pdf_block(nt.text)}", note))
        size = len(step.found) + len(step.output)
        story.extend([KeepTogether(flow)] if size < 1500 else flow)
    if not story_.steps:
        story.append(Paragraph("Nothing was recorded.", body))

    # Appendix: the full event log, every entry as recorded, figures formatted for people.
    story += [PageBreak(), Paragraph("Appendix: full event log", styles["Heading2"])]

    def entry_flowables(item: ReviewedEntry, *, is_note: bool = False) -> list[Flowable]:
        e = item.entry
        line = (
            f"<b>{_pdf_text(fmt.when(e.at))}</b> &nbsp; {_pdf_text(sentence(e.kind, fmt.who(e.actor, story_.names)))} &nbsp; "
            f"<font color='#5b6475'>{_pdf_text(item.endpoint)} (#{e.index})</font>"
        )
        out = [Paragraph(line, head)]
        if item.whole_redacted:
            out.append(
                Paragraph(f"<i>{REDACTED}</i> (this entry was withheld after review)", note if is_note else body)
            )
        for f in item.fields:
            text = f.text
            shown = text if (f.redacted or f.block) else fmt.value(f.path, text)
            name = fmt.label(f.path)
            if f.prose:
                out.append(Paragraph(_pdf_block(text), note if is_note else body))
            elif f.block:
                out.append(Paragraph(f"<font color='#5b6475'>{_pdf_text(name)}</font>", meta))
                out.append(Paragraph(_pdf_block(shown), note if is_note else mono))
            else:
                out.append(
                    Paragraph(
                        f"<font color='#5b6475'>{_pdf_text(name)}:</font> {_pdf_text(shown)}",
                        note if is_note else body,
                    )
                )
        return out

    for item in record.items:
        flowables = entry_flowables(item)
        for n_ in item.notes:
            flowables += [Paragraph("Reviewer's note:", meta)] + entry_flowables(n_, is_note=True)
        if sum(len(f.text) for f in item.fields) < 1500:
            story.append(KeepTogether(flowables))
        else:
            story.extend(flowables)
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
