"""Export step: the night's post-purchase email file dropped where marketing's tools pick it up.

With ``export_dir`` set (``RECSYS_EXPORT_DIR``), writes the day's file in ``export_format`` and then
its manifest into the drop folder (pipelines/services/email_export.py: ``drop``, which names the
paths); unset, it does nothing and says so. Runs after publish: it reads the published
``post_purchase_email`` table."""
from __future__ import annotations

import logging

from pipelines.config import Config
from pipelines.services.email_export import drop

log = logging.getLogger(__name__)


def run(cfg: Config, ds: str, run_id: str) -> dict:
    if not cfg.serving.export_dir:
        log.info("export ds=%s: export_dir is not set (RECSYS_EXPORT_DIR): no email file dropped", ds)
        return {"ds": ds, "export": "off", "summary": "export_dir not set: nothing written"}
    m = drop(cfg, ds, run_id)
    return {"ds": ds, "export": "written", "format": m["format"], "rows": m["rows"],
            "skipped_no_address": m["skipped_no_address"], "skipped_opted_out": m["skipped_opted_out"],
            "sha256": m["sha256"], "summary": f"{m['rows']} recipients -> {cfg.serving.export_dir}"}
