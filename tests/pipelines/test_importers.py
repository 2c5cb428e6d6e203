"""Importers: column mapping, time zones, immutability and idempotence, the Online Retail adapter."""
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipelines.artifacts import layout
from pipelines.cli import main
from pipelines.services.importers import (
    ImportError_,
    import_events,
    import_online_retail,
)


def read_landed(cfg, dataset="events") -> pd.DataFrame:
    files = sorted((layout(cfg).landing / dataset).rglob("batch-*.parquet"))
    return pd.concat([pq.read_table(f).to_pandas().assign(_part=f.parent.name) for f in files], ignore_index=True)


@pytest.fixture
def csv_file(tmp_path):
    p = tmp_path / "clicks.csv"
    p.write_text(
        "customer,sku,ts,qty,amount,name,order\n"
        "c1,A,2024-03-01T23:30:00+02:00,2,9.5,Red mug,o1\n"   # 21:30 UTC on 03-01
        "c2,B,2024-03-01T23:30:00-02:00,1,3.0,Blue mug,o2\n"  # 01:30 UTC on 03-02
        "c1,B,not a time,1,3.0,Blue mug,o3\n"
    )
    return p


def test_import_events_maps_columns_and_converts_times_to_utc(cfg, csv_file):
    res = import_events(cfg, csv_file, user_col="customer", item_col="sku", time_col="ts", event_type="purchase",
                        quantity_col="qty", price_col="amount", title_col="name", order_col="order")
    assert res.events == 3 and res.partitions == 3 and res.items == 2
    ev = read_landed(cfg).sort_values("order_id")
    assert ev["_part"].tolist() == ["event_date=2024-03-01", "event_date=2024-03-02", "event_date=unknown"]
    assert ev["event_time"].iloc[0] == pd.Timestamp("2024-03-01 21:30", tz="UTC")
    assert ev["event_time"].iloc[1] == pd.Timestamp("2024-03-02 01:30", tz="UTC")
    assert pd.isna(ev["event_time"].iloc[2])  # kept, for validation to quarantine; nothing dropped
    assert ev["event_type"].unique().tolist() == ["purchase"]
    assert ev["quantity"].tolist() == [2, 1, 1] and ev["price"].tolist() == [9.5, 3.0, 3.0]
    items = read_landed(cfg, "items").sort_values("item_id")
    assert items["title"].tolist() == ["Red mug", "Blue mug"]


def test_reimporting_the_same_file_writes_nothing(cfg, csv_file):
    kw = dict(user_col="customer", item_col="sku", time_col="ts", event_type="view")
    import_events(cfg, csv_file, **kw)
    before = sorted(p.stat().st_mtime_ns for p in layout(cfg).landing.rglob("*.parquet"))
    assert import_events(cfg, csv_file, **kw).skipped
    assert sorted(p.stat().st_mtime_ns for p in layout(cfg).landing.rglob("*.parquet")) == before


def test_wrong_column_fails_naming_it_and_writes_nothing(cfg, csv_file):
    with pytest.raises(ImportError_, match=r"'userid' \(for user_id\) not found.*'customer'"):
        import_events(cfg, csv_file, user_col="userid", item_col="sku", time_col="ts", event_type="view")
    assert not layout(cfg).landing.exists()


def test_cli_reports_wrong_column_with_exit_code_2(cfg, csv_file, capsys):
    rc = main(["--home", str(cfg.home), "import-events", str(csv_file), "--user-col", "customer",
               "--item-col", "product", "--time-col", "ts", "--event-type", "view"])
    assert rc == 2
    assert "'product' (for item_id) not found" in capsys.readouterr().err
    assert not layout(cfg).landing.exists()


def test_online_retail_adapter(cfg, tmp_path):
    p = tmp_path / "retail.csv"
    p.write_text(
        "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
        "536365,85123A,WHITE HANGING HEART,6,2011-06-01 10:00:00,2.55,17850.0,United Kingdom\n"  # BST
        "C536379,85123A,WHITE HANGING HEART,-2,2011-12-01 09:41:00,2.55,17850.0,United Kingdom\n"  # GMT
        "536380,POST,POSTAGE,1,2011-12-01 09:45:00,18.0,12583.0,France\n"
        "536381,22423,REGENCY CAKESTAND,3,2011-12-01 10:00:00,12.75,,United Kingdom\n"
    )
    import_online_retail(cfg, p)
    ev = read_landed(cfg).sort_values("order_id").reset_index(drop=True)
    assert ev["event_type"].tolist() == ["purchase", "purchase", "purchase", "return"]
    assert ev["order_id"].tolist() == ["536365", "536380", "536381", "C536379"]
    assert ev.loc[3, "quantity"] == 2  # returns carry a positive quantity
    assert ev.loc[0, "event_time"] == pd.Timestamp("2011-06-01 09:00", tz="UTC")  # BST -> UTC
    assert ev.loc[3, "event_time"] == pd.Timestamp("2011-12-01 09:41", tz="UTC")  # GMT = UTC
    assert ev.loc[0, "user_id"] == "17850" and pd.isna(ev.loc[2, "user_id"])
    items = read_landed(cfg, "items").set_index("item_id")
    assert bool(items.loc["85123A", "active"]) and not bool(items.loc["POST", "active"])
    users = read_landed(cfg, "users").set_index("user_id")
    assert users.loc["12583", "country"] == "France"


def test_catalog_update_errors_name_file_column_rule_and_lines_and_write_nothing(tmp_path):
    from pipelines.config import load_config
    from pipelines.services.importers import ImportError_, import_catalog, import_users

    cfg = load_config(environ={}, home=tmp_path / "var")
    bad = tmp_path / "stock.csv"
    bad.write_text("item_id,in_stock,margin\nA,true,0.2\nB,maybe,0.3\nC,false,1.7\n")
    with pytest.raises(ImportError_) as e:
        import_catalog(cfg, bad)
    msg = str(e.value)
    assert str(bad) in msg and "'in_stock'" in msg and "invalid_bool" in msg and "'maybe'" in msg and "[3]" in msg
    bad.write_text("item_id,in_stock,margin\nA,true,0.2\nC,false,1.7\n")
    with pytest.raises(ImportError_, match=r"'margin': rule invalid_float \(0\.\.1\).*1\.7.*\[3\]"):
        import_catalog(cfg, bad)
    bad.write_text("item_id,stock_level\nA,3\n")
    with pytest.raises(ImportError_, match="unknown column.*stock_level"):
        import_catalog(cfg, bad)
    users = tmp_path / "users.csv"
    users.write_text("user_id,consent_email\nu1,sometimes\n")
    with pytest.raises(ImportError_, match="'consent_email': rule invalid_bool"):
        import_users(cfg, users)
    assert not (layout(cfg).landing / "items").exists() and not (layout(cfg).landing / "users").exists()


def test_a_partial_catalog_update_keeps_the_other_columns(tmp_path):
    import duckdb

    from features.interactions import load_catalog
    from pipelines.config import load_config
    from pipelines.services.importers import import_catalog

    cfg = load_config(environ={}, home=tmp_path / "var")
    first = tmp_path / "cat.csv"
    first.write_text("item_id,title,in_stock,margin\nA,Red mug,true,0.2\nB,Blue mug,true,0.3\n")
    second = tmp_path / "stock.csv"
    second.write_text("item_id,in_stock\nB,false\n")
    import_catalog(cfg, first)
    import_catalog(cfg, second)
    from pipelines.validation.gate import ExpectationRunner, validate_reference

    runner = ExpectationRunner(tmp_path / "docs", "r1", "2024-01-01", cfg)
    validate_reference(cfg, "items", runner)
    cat = load_catalog(duckdb.connect(), layout(cfg)).set_index("item_id")
    assert cat.loc["B", "title"] == "Blue mug" and bool(cat.loc["B", "in_stock"]) is False
    assert bool(cat.loc["A", "in_stock"]) is True and cat.loc["A", "margin"] == 0.2


def test_services_never_import_the_dev_tools():
    """The demo generators land through the importers (pipelines/dev imports services), never the reverse."""
    import ast
    from pathlib import Path

    import pipelines.services

    offenders = []
    for f in sorted(Path(pipelines.services.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{f.name}: {n}" for n in names if n.startswith("pipelines.dev")]
    assert offenders == []


def test_the_help_lists_every_command_and_steps_lists_the_registry(tmp_path, capsys):
    from pipelines.steps import OTHER_STEPS, STEPS

    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for command in ("demo-data", "import-events", "import-online-retail", "import-catalog", "import-users",
                    "cart-recs", "rerank", "export", "consent", "forget", "import-outcomes", "ab", "steps", "run",
                    "show", "airflow", "airflow-test", "mlflow-ui"):
        assert f"\n    {command} " in out or f"\n    {command}\n" in out, command
    assert main(["--home", str(tmp_path / "var"), "-q", "steps"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    for i, step in enumerate(STEPS.values(), 1):
        assert any(line.startswith(f"{i:>2}. {step.name} ") for line in lines), step.name
        assert f"writes: {step.writes}" in out
    assert all(f"writes: {s.writes}" in out for s in OTHER_STEPS.values())


def test_the_cli_records_consent(tmp_path, capsys):
    home = str(tmp_path / "var")
    assert main(["--home", home, "-q", "consent", "u1", "--email", "off"]) == 0
    assert "user u1: personalization on, email off" in capsys.readouterr().out
    assert main(["--home", home, "-q", "consent", "u1"]) == 2
    assert "give --personalization and/or --email" in capsys.readouterr().err
