"""The Great Expectations 1.x side of the validation gate.

One ephemeral context per validate run: a suite per kind of data (``events``, ``items``,
``users``), run as ``ExpectationSuite`` -> ``ValidationDefinition`` -> ``Checkpoint``, whose results
are rendered as Data Docs on local disk (``Layout.data_docs``). Great Expectations is imported when
the first runner is made (it is slow to import, and its analytics are switched off first).

GX's page templates pull Bootstrap, jQuery, bootstrap-table and Font Awesome from CDNs, and its index
page is an empty ``<table>`` that bootstrap-table fills from a script: offline, the pages are unstyled
and the index lists nothing. After every checkpoint run, ``make_offline`` rewrites the site so it
needs no network: CDN ``<link>``/``<script>`` tags and inline scripts are dropped, a local stylesheet
(``static/styles/offline.css``, a small subset of Bootstrap's classes over GX's own fonts) is linked,
the logo comes from GX's own ``static/images``, and the index tables are written out as static HTML
rows from the data GX embedded for bootstrap-table.
"""
from __future__ import annotations

import ast
import logging
import os
import re
import tempfile
from datetime import UTC, datetime
from html import escape
from pathlib import Path

import pandas as pd

from pipelines import constants as C
from pipelines.config import Config, load_config
from pipelines.infra import storage

log = logging.getLogger(__name__)


class ExpectationRunner:
    """One ephemeral GX context per validate run, its suites, and Data Docs on local disk."""

    def __init__(self, docs_dir: Path, run_name: str, ds: str, cfg: Config) -> None:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
        for name in ("great_expectations",):
            logging.getLogger(name).setLevel(logging.WARNING)
        import great_expectations as gx
        from great_expectations.core.run_identifier import RunIdentifier
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.gx, self.cfg, self.docs_dir = gx, cfg, docs_dir
        for name in [n for n in logging.root.manager.loggerDict if n.startswith("great_expectations")]:
            logging.getLogger(name).setLevel(logging.WARNING)
        self.ctx = gx.get_context(mode="ephemeral")
        self.ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        self.ctx.add_data_docs_site(site_name="recsys", site_config={
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder", "show_how_to_buttons": False}})
        self.source = self.ctx.data_sources.add_pandas("recsys")
        # The run is named after the pipeline run and dated by ds, so pages do not depend on the clock.
        self.run_id = RunIdentifier(run_name=run_name, run_time=datetime.fromisoformat(ds).replace(tzinfo=UTC))

    def suite(self, kind: str, name: str, columns: list[str]):
        """The suite for one kind of data: ``events``, ``items`` (catalog) or ``users``."""
        gx, E, cfg = self.gx, self.gx.expectations, self.cfg
        s = gx.ExpectationSuite(name=f"{name}_suite")
        if kind == "events":
            for col in C.REQUIRED_EVENT_COLUMNS:
                s.add_expectation(E.ExpectColumnToExist(column=col))
            for col in (C.USER_ID, C.ITEM_ID, C.EVENT_TIME):
                s.add_expectation(E.ExpectColumnValuesToNotBeNull(column=col))
            s.add_expectation(E.ExpectColumnValuesToBeInSet(column=C.EVENT_TYPE, value_set=list(C.EVENT_TYPES)))
            s.add_expectation(E.ExpectColumnValuesToBeBetween(column=C.QUANTITY, min_value=1, max_value=cfg.validation.max_quantity))
            s.add_expectation(E.ExpectColumnValuesToBeBetween(column=C.PRICE, min_value=0))
            for col in (C.USER_ID, C.ITEM_ID):
                s.add_expectation(E.ExpectColumnValueLengthsToBeBetween(column=col, max_value=cfg.validation.max_id_length))
            # Explicit feedback and engagement (null where absent: GX skips nulls).
            s.add_expectation(E.ExpectColumnValuesToBeBetween(column=C.RATING, min_value=C.RATING_MIN, max_value=C.RATING_MAX))
            s.add_expectation(E.ExpectColumnValuesToBeBetween(column=C.DWELL_SECONDS, min_value=0,
                                                              max_value=cfg.validation.max_dwell_seconds))
        else:
            key = "item_id" if kind == "items" else "user_id"
            s.add_expectation(E.ExpectColumnToExist(column=key))
            s.add_expectation(E.ExpectColumnValuesToNotBeNull(column=key))
            s.add_expectation(E.ExpectColumnValuesToBeUnique(column=key))
            if "price" in columns:
                s.add_expectation(E.ExpectColumnValuesToBeBetween(column="price", min_value=0))
        return self.ctx.suites.add(s)

    def run(self, kind: str, df: pd.DataFrame, name: str | None = None) -> list[dict]:
        from great_expectations.checkpoint import UpdateDataDocsAction

        gx, name = self.gx, name or kind
        batch = self.source.add_dataframe_asset(name).add_batch_definition_whole_dataframe(f"{name}_batch")
        vd = self.ctx.validation_definitions.add(
            gx.ValidationDefinition(data=batch, suite=self.suite(kind, name, list(df.columns)), name=f"{name}_gate"))
        cp = self.ctx.checkpoints.add(gx.Checkpoint(
            name=f"{name}_checkpoint", validation_definitions=[vd],
            actions=[UpdateDataDocsAction(name="data_docs", site_names=["recsys"])],
            result_format={"result_format": "SUMMARY"}))
        result = cp.run(batch_parameters={"dataframe": df}, run_id=self.run_id)
        make_offline(self.docs_dir)
        rows = []
        for vr in result.run_results.values():
            for er in vr.results:
                ec = er.expectation_config
                rows.append({"expectation": ec.type, "column": ec.kwargs.get("column"), "success": bool(er.success),
                             "unexpected_count": er.result.get("unexpected_count"),
                             "element_count": er.result.get("element_count")})
        return rows

    @property
    def index(self) -> Path:
        return self.docs_dir / "index.html"


OFFLINE_MARK = '<meta name="generator" content="recsys offline data docs">'
OFFLINE_CSS = """\
@font-face{font-family:HKGrotesk;src:url(../fonts/HKGrotesk/HKGrotesk-Regular.otf)}
@font-face{font-family:HKGrotesk;font-weight:bold;src:url(../fonts/HKGrotesk/HKGrotesk-Bold.otf)}
body{font-family:HKGrotesk,"DejaVu Sans",sans-serif;margin:0 0 40px;color:#212529;background:#fff;font-size:15px;line-height:1.5}
a{color:#0062cc;text-decoration:none}a:hover{text-decoration:underline}
h1,h2,h3,h4,h5,h6,.h6{margin:.4rem 0 .6rem;font-weight:600;line-height:1.2}
.navbar{display:flex;align-items:center;padding:.5rem 1rem;background:#fff;border-bottom:1px solid #dee2e6}
.row{display:flex;flex-wrap:wrap}
.container-fluid{box-sizing:border-box;width:100%;padding:0 15px}
[class*="col-"]{box-sizing:border-box;flex:0 0 100%;max-width:100%;padding:0 15px}
.col-6{flex:0 0 50%;max-width:50%}
@media (min-width:768px){.col-md-2{flex:0 0 16.67%;max-width:16.67%}.col-md-10{flex:0 0 83.33%;max-width:83.33%}}
.pt-4{padding-top:1.5rem}.pb-4{padding-bottom:1.5rem}.pl-5{padding-left:3rem}.pr-5{padding-right:3rem}
.px-0{padding-left:0;padding-right:0}.p-0{padding:0}.m-0{margin:0}.mb-0{margin-bottom:0}.mt-0{margin-top:0}
.mb-4{margin-bottom:1.5rem}.mt-3{margin-top:1rem}.ml-2{margin-left:.5rem}.mr-2{margin-right:.5rem}
table{border-collapse:collapse}.table{width:100%;margin-bottom:1rem}
td,th{padding:.3rem .6rem;border-top:1px solid #dee2e6;vertical-align:top;text-align:left}
th{background:#eef1f4}.table-bordered td,.table-bordered th{border:1px solid #dee2e6}
.table-responsive{overflow-x:auto}
.alert{padding:.6rem 1rem;border-radius:4px;margin-bottom:1rem;border:1px solid transparent}
.alert-secondary{background:#e2e3e5;color:#383d41}.alert-info{background:#d1ecf1;color:#0c5460}
.card{border:1px solid #dee2e6;border-radius:4px;margin-bottom:1rem;background:#fff}
.card-header{padding:.6rem 1rem;background:#f7f7f9;border-bottom:1px solid #dee2e6}.card-body{padding:1rem}
.badge{display:inline-block;padding:.15em .5em;font-size:85%;border-radius:4px;background:#6c757d;color:#fff}
.text-success{color:#1e7e34}.text-danger{color:#c82333}
.nav{display:flex;flex-wrap:wrap;list-style:none;padding:0;margin:0 0 1rem}
.nav-link{display:block;padding:.4rem 1rem}
.nav-tabs{border-bottom:1px solid #dee2e6}
.nav-tabs .nav-link{border:1px solid transparent;border-radius:4px 4px 0 0;margin-bottom:-1px}
.nav-tabs .nav-link.active{border-color:#dee2e6 #dee2e6 #fff;background:#fff;color:#495057}
.nav-pills{flex-direction:column}.nav-pills .nav-link{padding:.2rem .5rem}
.breadcrumb{display:flex;flex-wrap:wrap;list-style:none;padding:.5rem 1rem;margin:0 0 1rem;background:#e9ecef;border-radius:4px}
.breadcrumb-item+.breadcrumb-item::before{content:"/";padding:0 .5rem;color:#6c757d}
.btn{display:inline-block;padding:.3rem .7rem;border-radius:4px;border:1px solid transparent}
.btn-primary{background:#007bff;color:#fff}
.d-none,.modal,#ge-cta-footer,.card:has(.btn-group-toggle){display:none}.invisible{visibility:hidden}
@media (min-width:768px){.d-md-block{display:block}.d-md-inline-flex{display:inline-flex}}
.sticky{position:sticky;top:1rem}
.tab-pane{margin-bottom:2rem}.lead{font-size:1.15rem}
.fas{font-style:normal;font-weight:bold}
.fa-check-circle::before{content:"\\2714"}.fa-times::before{content:"\\2718"}.fa-question-circle::before{content:"?"}
.recsys-static-index td{border:1px solid #dee2e6}.recsys-static-index tr:nth-child(even) td{background:#f8f9fa}
"""
_TABLE_SCRIPT = re.compile(r"\$\('#(?P<id>[\w-]+)'\)\.bootstrapTable\(\s*Object\.assign\(\s*\{\s*columns: (?P<columns>\[.*?\]),"
                           r"\s*data: (?P<data>\[.*?\]),\s*toolbar:", re.DOTALL)


def _static_table(table_id: str, columns: list[dict], data: list[dict]) -> str:
    """The rows GX hands bootstrap-table, as plain HTML (cells are GX's own HTML snippets), newest first
    as in GX's default sort; a row's run time (else its first cell) links to the row's page."""
    head = "".join(f"<th>{escape(c['title'])}</th>" for c in columns)
    fields = [c["field"] for c in columns]
    link = fields.index("run_time") if "run_time" in fields else 0
    rows = []
    for row in sorted(data, key=lambda r: r.get("_run_time_sort") or 0, reverse=True):
        cells = [str(row.get(f, "")) for f in fields]
        if row.get("_table_row_link_path"):
            cells[link] = f"<a href=\"{escape(row['_table_row_link_path'])}\">{cells[link]}</a>"
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return (f'<table id="{table_id}" class="table table-sm recsys-static-index"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


def _offline_page(html: str, static: str) -> str:
    for m in _TABLE_SCRIPT.finditer(html):
        try:
            table = _static_table(m["id"], ast.literal_eval(m["columns"]), ast.literal_eval(m["data"]))
        except (ValueError, SyntaxError, KeyError, TypeError) as exc:  # a GX template this code does not know
            log.warning("Data Docs: index table %s left empty offline: %s", m["id"], exc)
            continue
        html = re.sub(rf'<table\s+id="{m["id"]}"[^>]*>\s*</table>', lambda _, t=table: t, html, count=1)
        html = re.sub(rf'<div id="{m["id"]}-toolbar"[^>]*>.*?</div>', "", html, count=1, flags=re.DOTALL)
    html = re.sub(r"<script\b[^>]*>.*?</script>", "", html, flags=re.DOTALL)
    html = re.sub(r"<link\b[^>]*href=\"https?:[^\"]*\"[^>]*>", "", html)
    html = re.sub(r'src="https?://[^"]*/(logo-long\.png)[^"]*"', rf'src="{static}/images/\1"', html)
    # GX links the favicon one level short from result pages (four folders deep)
    html = re.sub(r'href="(?:\.\.?/)*static/', f'href="{static}/', html)
    head = f'{OFFLINE_MARK}<link rel="stylesheet" href="{static}/styles/offline.css">'
    return html.replace("<head>", "<head>" + head, 1)


def make_offline(docs_dir: Path) -> None:
    """Rewrite the Data Docs site under ``docs_dir`` to work without network (see the module doc).
    Idempotent: pages already rewritten are skipped, pages GX rebuilt are rewritten again."""
    css = docs_dir / "static" / "styles" / "offline.css"
    if not css.exists() or css.read_text() != OFFLINE_CSS:
        storage.atomic_write_text(OFFLINE_CSS, css)
    for page in docs_dir.rglob("*.html"):
        html = page.read_text(encoding="utf-8")
        if OFFLINE_MARK in html or page.is_relative_to(docs_dir / "static"):
            continue
        static = os.path.relpath(docs_dir / "static", page.parent).replace(os.sep, "/")
        storage.atomic_write_text(_offline_page(html, static), page)


def run_expectations(df: pd.DataFrame, cfg: Config | None = None, docs_dir: Path | None = None) -> dict:
    """Run the events suite over a frame (used by tests and the benchmark)."""
    cfg = cfg or load_config(environ={})
    runner = ExpectationRunner(docs_dir or Path(tempfile.mkdtemp(prefix="gx-docs-")), "adhoc", "2000-01-01", cfg)
    rows = runner.run("events", df)
    return {"success": all(r["success"] for r in rows), "expectations": rows}
