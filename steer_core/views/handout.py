"""The level ladder as a handout: one printable page of the question, the student's answer and the reply at
every level, with the level the judge read."""

from __future__ import annotations

import html

from ..bloom import DESCRIPTIONS
from ..errors import UserError


def handout_html(record: dict, link: str = "") -> str:
    """The level ladder as one printable page: the question, the student's answer, the unsteered reply for
    reference, then one row a level with the reply and the level the judge read, with its probability."""
    if record.get("view") != "ladder":
        raise UserError("a handout is made from a level ladder's report")
    esc = html.escape
    rows = record["rows"]
    plain = next((r for r in rows if r["method"] == "none"), None)
    steered = [r for r in rows if r["method"] == "sae"]
    body = []
    for r in steered:
        judged = r.get("judged") or "-"
        prob = r.get("level_prob")
        verdict = f"read as <b>{esc(judged)}</b>" + ("" if prob in ("", None) else f"; P({esc(r['level'])}) {prob:.2f}")
        hit = " hit" if judged == r["level"] else ""
        body.append(
            f'<tr class="level{hit}"><th><span>{esc(r["level"].capitalize())}</span>'
            f"<small>{esc(DESCRIPTIONS.get(r['level'], ''))}</small></th>"
            f'<td class="reply">{esc(r["text"])}</td><td class="judge">{verdict}</td></tr>'
        )
    s = record.get("settings", {})
    hits = sum(r.get("judged") == r["level"] for r in steered)
    ref = (
        ""
        if plain is None
        else f'<tr class="ref"><th><span>Unsteered</span><small>for reference</small></th>'
        f'<td class="reply">{esc(plain["text"])}</td><td class="judge">read as <b>{esc(plain.get("judged") or "-")}'
        "</b></td></tr>"
    )
    link_line = f' To run it again: <a href="{esc(link)}">{esc(link)}</a>.' if link else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Feedback at every Bloom level</title>
<style>
@page {{ size: A4; margin: 14mm; }}
body {{ font: 10.5pt/1.4 Georgia, 'Times New Roman', serif; color: #111; max-width: 190mm; margin: 0 auto; }}
h1 {{ font-size: 16pt; margin: 0 0 4mm; }}
.task {{ border: 1px solid #999; padding: 3mm 4mm; margin-bottom: 4mm; }}
.task p {{ margin: 1mm 0; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ border-top: 1px solid #bbb; padding: 2.2mm 2mm; vertical-align: top; text-align: left; }}
th {{ width: 30mm; }} th span {{ display: block; font-size: 11pt; }}
th small {{ display: block; font-weight: normal; color: #555; font-size: 8pt; }}
td.judge {{ width: 34mm; font-size: 9pt; color: #333; }}
tr {{ page-break-inside: avoid; }} tr.ref td, tr.ref th {{ background: #f2f2f2; }}
tr.hit td.judge b {{ color: #1a6b1a; }}
footer {{ margin-top: 4mm; font-size: 8pt; color: #555; }}
@media print {{ a {{ color: #111; text-decoration: none; }} }}
</style></head><body>
<h1>The same feedback at every Bloom level</h1>
<div class="task"><p><b>Question.</b> {esc(record["inputs"]["question"])}</p>
<p><b>Student's answer.</b> {esc(record["inputs"]["student_answer"])}</p></div>
<table>{ref}{"".join(body)}</table>
<footer>Written by {esc(str(record.get("model", "")))}, steered in its sparse query features toward each level
(strength {esc(str(s.get("strength", "")))}, layers {esc(str(s.get("layers", "")))}); the judge, a classifier,
reads {hits} of {len(steered)} replies at the level asked for. {esc(record.get("created", ""))}.{link_line}</footer>
</body></html>
"""
