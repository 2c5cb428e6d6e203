"""The Great Expectations 1.x side of the validation gate.

One ephemeral context per validate run: a suite per kind of data (``events``, ``items``,
``users``), run as ``ExpectationSuite`` -> ``ValidationDefinition`` -> ``Checkpoint``, whose results
are rendered as Data Docs on local disk (``Layout.data_docs``). Great Expectations is imported when
the first runner is made (it is slow to import, and its analytics are switched off first).
"""
from __future__ import annotations

import logging
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from pipelines import constants as C
from pipelines.config import Config, load_config


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
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"}})
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


def run_expectations(df: pd.DataFrame, cfg: Config | None = None, docs_dir: Path | None = None) -> dict:
    """Run the events suite over a frame (used by tests and the benchmark)."""
    cfg = cfg or load_config(environ={})
    runner = ExpectationRunner(docs_dir or Path(tempfile.mkdtemp(prefix="gx-docs-")), "adhoc", "2000-01-01", cfg)
    rows = runner.run("events", df)
    return {"success": all(r["success"] for r in rows), "expectations": rows}
