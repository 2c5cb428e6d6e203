"""The validation report: one self-contained HTML page per validate run (``Layout.validation_report``)."""
from __future__ import annotations

from html import escape
from pathlib import Path

from pipelines.infra import storage

REPORT_CSS = ("body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}"
              "td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}th{background:#f3f3f3}"
              ".ok{color:#17702f;font-weight:bold}.bad{color:#b00020;font-weight:bold}pre{white-space:pre-wrap;"
              "background:#fff4f4;padding:1em;border:1px solid #f0c0c0}.warn{background:#fffbe6}")


def render_report(summary: dict, docs_dir: Path, out: Path) -> Path:
    """A self-contained HTML page for one validation run (no external assets, every value escaped),
    linking to the Great Expectations Data Docs pages of the run."""
    ok = summary["success"]
    rows = "".join(
        f"<tr><td>{escape(name)}</td><td>{d['rows_in']:,}</td><td>{d['rows_valid']:,}</td><td>{d['rows_quarantined']:,}</td>"
        f"<td>{escape(', '.join(f'{k}: {v:,}' for k, v in d['rule_counts'].items() if v)) or '-'}</td></tr>"
        for name, d in summary["datasets"].items())
    gx_rows = ""
    for name, results in summary["great_expectations"].items():
        for r in results:
            unexpected = "" if r["unexpected_count"] is None else f"{r['unexpected_count']:,}"
            verdict = "<td class='ok'>passed</td>" if r["success"] else "<td class='bad'>failed</td>"
            gx_rows += (f"<tr><td>{escape(name)}</td><td>{escape(r['expectation'])}</td>"
                        f"<td>{escape(str(r['column']))}</td>{verdict}<td>{unexpected}</td></tr>")
    pages = sorted(docs_dir.rglob("validations/**/*.html")) if docs_dir.exists() else []
    links = "".join(f"<li><a href='{escape(str(p.relative_to(out.parent)))}'>{escape(p.parts[-4])}</a></li>" for p in pages)
    warn = "".join(f"<li>{escape(w)}</li>" for w in summary.get("warnings") or [])
    err = f"<h2>Failure</h2><pre>{escape(summary.get('error') or '')}</pre>" if not ok else ""
    html = (f"<!doctype html><html><head><meta charset='utf-8'><title>Validation {escape(summary['ds'])}</title>"
            f"<style>{REPORT_CSS}</style></head><body><h1>Validation of ds={escape(summary['ds'])}</h1>"
            f"<p>Run <code>{escape(summary['run_id'])}</code>: <span class='{'ok' if ok else 'bad'}'>"
            f"{'passed' if ok else 'FAILED'}</span>; {summary['partitions_validated']} event partition(s) validated.</p>"
            f"{err}{f'<h2>Warnings</h2><ul class=warn>{warn}</ul>' if warn else ''}"
            f"<h2>Rows</h2><table><tr><th>dataset</th><th>rows in</th><th>valid</th><th>quarantined</th>"
            f"<th>quarantined by rule</th></tr>{rows}</table>"
            f"<h2>Great Expectations</h2><table><tr><th>suite</th><th>expectation</th><th>column</th><th>result</th>"
            f"<th>unexpected</th></tr>{gx_rows}</table>"
            f"<h2>Data Docs pages</h2><ul>{links}</ul><p><a href='data_docs/index.html'>Data Docs home</a></p>"
            f"</body></html>")
    return storage.atomic_write_text(html, out)
