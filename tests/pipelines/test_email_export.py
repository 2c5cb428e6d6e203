"""The post-purchase email export (issue 15, item 7): contact fields kept in one private store, the
list in four formats checked against the published table and the catalog file, empty days refused,
the nightly drop folder with its manifest, and `forget` reaching the contact store and the drop."""
from __future__ import annotations

import csv
import hashlib
import json
import re

import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipelines.artifacts import layout
from pipelines.cli import main
from pipelines.dev.demo_data import generate
from pipelines.infra.contacts import contacts_dir, read_contacts
from pipelines.run import run_step
from pipelines.services.importers import ImportError_, import_catalog, import_users
from tests.conftest import BASE_DS

MINE = {"ada@mail.test": "Ada", "grace.h+news@mail.test": "Grace", "tim@bl.example.org": "Tim"}


def published(cfg) -> pd.DataFrame:
    con = duckdb.connect(str(layout(cfg).duckdb_path), read_only=True)
    try:
        return con.execute("SELECT * FROM post_purchase_email WHERE ds = ?::DATE ORDER BY user_id", [BASE_DS]).df()
    finally:
        con.close()


def give_contacts(cfg, tmp_path, users: list[str]) -> dict[str, tuple[str, str]]:
    """Import a users file with contact fields for ``users``; returns user -> (email, first name)."""
    given = dict(zip(users, MINE.items()))
    path = tmp_path / "users.csv"
    path.write_text("user_id,email,first_name,locale,country\n"
                    + "".join(f"{u},{e},{n},fr_FR,FR\n" for u, (e, n) in given.items()))
    assert main(["--home", str(cfg.home), "-q", "import-users", str(path)]) == 0
    return given


def catalog_file(cfg) -> pd.DataFrame:
    """The catalog as landed (the demo's one items batch), independent of the features step."""
    (f,) = (layout(cfg).landing / "items").glob("batch-*.parquet")
    return pd.read_parquet(f).set_index("item_id")


def expected_reason(internal: str, titles: pd.Series) -> str:
    """The customer-facing sentence, written out by hand per internal reason (docs/privacy.md)."""
    if internal.startswith("others bought this after "):
        return f"Customers who bought {titles[internal.rsplit(' ', 1)[1]]} also bought"
    if internal.startswith("bought together with "):
        return f"Often bought together with {titles[internal.rsplit(' ', 1)[1]]}"
    if internal.startswith("popular in "):
        return "Popular in " + internal[len("popular in "):]
    return {"best seller": "Popular right now"}[internal]


def normalise(fmt: str, path) -> dict[str, dict]:
    """user_id -> {email, first_name, purchased_item_title, items: [(id, title, price, url, image_url,
    reason, recommendation_id)]}, read from each format's own shape."""
    out = {}
    if fmt == "csv":
        for r in csv.DictReader(open(path, encoding="utf-8")):
            items = [tuple(r[f"item_{k}_{f}"] for f in ("id", "title", "price", "url", "image_url", "reason",
                                                        "recommendation_id"))
                     for k in range(1, 11) if r.get(f"item_{k}_id")]
            items = [(i, t, float(p), u, im, re_, rid) for i, t, p, u, im, re_, rid in items]
            out[r["user_id"]] = {"email": r["email"], "first_name": r["first_name"],
                                 "purchased": r["purchased_item_title"], "items": items}
        return out
    if fmt == "braze":
        records = [(a["external_id"], a["email"], a["first_name"], a["recsys_post_purchase"]["purchased_item_title"],
                    a["recsys_post_purchase"]["items"]) for a in json.loads(path.read_text())["attributes"]]
    else:
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        if fmt == "klaviyo":
            records = [(x["attributes"]["external_id"], x["attributes"]["email"], x["attributes"]["first_name"],
                        x["attributes"]["properties"]["recsys_purchased_item_title"],
                        x["attributes"]["properties"]["recsys_recommendations"]) for x in lines]
        else:
            records = [(x["user_id"], x["email"], x["first_name"], x["purchased_item_title"], x["items"]) for x in lines]
    for uid, email, name, purchased, items in records:
        out[uid] = {"email": email, "first_name": name, "purchased": purchased,
                    "items": [(i["id"], i["title"], float(i["price"]), i["url"], i["image_url"], i["reason"],
                               i["recommendation_id"]) for i in items]}
    return out


def test_every_format_carries_contacts_titles_links_and_reasons(home, tmp_path):
    pub = published(home)
    demo = generate(seed=2, users=150, items=60, days=20, end_date=BASE_DS).contacts.set_index("user_id")
    # New addresses for customers who had one; those without (every fifth demo user) stay without.
    mine = give_contacts(home, tmp_path, [u for u in sorted(pub["user_id"]) if not pd.isna(demo.at[u, "email"])][:3])
    cat = catalog_file(home)
    # Recipients: the published customers with an address (the demo leaves every fifth user without one).
    address = {u: (mine[u][0] if u in mine else demo.at[u, "email"]) for u in pub["user_id"]}
    recipients = sorted(u for u, a in address.items() if not pd.isna(a))
    assert 0 < len(recipients) < len(pub)
    expected = {}
    for row in pub.itertuples():
        if row.user_id not in recipients:
            continue
        first = row.reasons[0].rsplit(" ", 1)[1] if row.reasons[0].startswith(("others", "bought")) else None
        anchor = first if first in set(row.purchased_items) else sorted(row.purchased_items)[0]
        expected[row.user_id] = {
            "email": address[row.user_id],
            "first_name": mine[row.user_id][1] if row.user_id in mine else demo.at[row.user_id, "first_name"],
            "purchased": cat.at[anchor, "title"],
            "items": [(i, cat.at[i, "title"], pytest.approx(cat.at[i, "price"]), cat.at[i, "url"],
                       cat.at[i, "image_url"], expected_reason(r, cat["title"]), rid)
                      for i, r, rid in zip(row.recommended_items, row.reasons, row.recommendation_ids)]}
    for fmt in ("csv", "json", "klaviyo", "braze"):
        out = tmp_path / f"email.{fmt}"
        assert main(["--home", str(home.home), "-q", "export", "email", "--ds", BASE_DS, "--out", str(out),
                     "--format", fmt]) == 0
        got = normalise(fmt, out)
        assert got == expected, fmt
        assert not re.search(r"\bi\d{6}\b", " ".join(i[5] for r in got.values() for i in r["items"]))
    # The contact fields live in the contact store only: not in landing, validated, features (after a
    # validate and features run over the new users batch), the warehouse or any other file.
    run_step("validate", home, BASE_DS, "after-import")
    run_step("features", home, BASE_DS, "after-import")
    assert (layout(home).features_dir(BASE_DS) / "items.parquet").exists()
    emails = [e for e, _ in mine.values()]
    assert hits(home.home, emails, skip=contacts_dir(home)) == []
    assert len(hits(contacts_dir(home), emails)) == len(emails)  # the store itself does hold them
    assert set(read_contacts(home).set_index("user_id").loc[list(mine), "email"]) == {e for e, _ in mine.values()}


def hits(root, needles: list[str], skip=None) -> list[str]:
    """Files under root with any needle: decoded Parquet values (pages are compressed), raw bytes else."""
    found = []
    for f in sorted(p for p in root.rglob("*") if p.is_file() and (skip is None or skip not in p.parents)):
        if f.suffix == ".parquet":
            t = pq.read_table(f)
            text = " ".join(str(v) for c in t.column_names if str(t.column(c).type) in ("string", "large_string")
                            for v in t.column(c).to_pylist())
        else:
            text = f.read_bytes().decode("utf-8", "replace")
        found += [f"{f}: {n}" for n in needles if n in text]
    return found


def test_a_day_without_run_or_recipients_is_refused_unless_allowed(home, tmp_path, capsys):
    out = tmp_path / "x.csv"
    args = ["--home", str(home.home), "-q", "export", "email", "--out", str(out)]
    assert main(args + ["--ds", "2024-06-10"]) == 2
    assert "no published run for ds=2024-06-10" in capsys.readouterr().err and not out.exists()
    assert main(args + ["--ds", "2024-06-10", "--allow-empty"]) == 0
    assert out.read_text().splitlines() == [",".join(["email", "first_name", "locale", "user_id", "ds", "run_id",
                                                      "purchased_item_id", "purchased_item_title", "purchased_items",
                                                      "consent_email", "built_at"])]
    out.unlink()
    users = sorted(published(home)["user_id"])
    for u in users:  # every customer of the day opts out of email after the run
        assert main(["--home", str(home.home), "-q", "consent", u, "--email", "off"]) == 0
    assert main(args + ["--ds", BASE_DS]) == 2
    err = capsys.readouterr().err
    assert f"ds={BASE_DS} has 0 recipients ({len(users)} customers in post_purchase_email, {len(users)} opted out" in err
    assert not out.exists()


def test_nightly_drop_with_manifest_and_forget_scrubs_it(home, tmp_path, monkeypatch):
    assert run_step("export", home, BASE_DS, "baseline")["export"] == "off"
    drop = tmp_path / "drop"
    victim, other = sorted(published(home)["user_id"])[:2]
    mine = give_contacts(home, tmp_path, [victim, other])
    cfg = home.replace(export_dir=str(drop), export_format="json")
    res = run_step("export", cfg, BASE_DS, "baseline")
    day = drop / "email" / f"ds={BASE_DS}"
    file = day / "post_purchase_email.jsonl"
    manifest = json.loads((day / "manifest.json").read_text())
    lines = file.read_text().splitlines()
    assert manifest["rows"] == res["rows"] == len(lines) > 2 and manifest["run_id"] == "baseline"
    assert manifest["sha256"] == hashlib.sha256(file.read_bytes()).hexdigest() and manifest["format"] == "json"
    assert manifest["published"] == manifest["rows"] + manifest["skipped_no_address"] + manifest["skipped_opted_out"]
    assert mine[victim][0] in file.read_text()
    monkeypatch.setenv("RECSYS_EXPORT_DIR", str(drop))
    assert main(["--home", str(home.home), "-q", "forget", victim]) == 0
    after = json.loads((day / "manifest.json").read_text())
    assert after["rows"] == manifest["rows"] - 1 == len(file.read_text().splitlines())
    assert after["sha256"] == hashlib.sha256(file.read_bytes()).hexdigest()
    assert victim not in set(read_contacts(home)["user_id"]) and other in set(read_contacts(home)["user_id"])
    assert hits(home.home, [mine[victim][0]]) == [] and hits(drop, [mine[victim][0], victim]) == []
    assert mine[other][0] in file.read_text()


def test_contact_and_link_columns_are_checked_at_import(cfg, tmp_path, baseline):
    bad = tmp_path / "users.csv"
    bad.write_text("user_id,email\nu1,ok@shop.test\nu2,not-an-address\nu3,\n")
    with pytest.raises(ImportError_, match=r"column 'email': rule invalid_email .*'not-an-address'.* line\(s\) \[3\]"):
        import_users(cfg, bad)
    assert not contacts_dir(cfg).exists() and not (layout(cfg).landing / "users").exists()
    links = tmp_path / "stock.csv"
    links.write_text("item_id,url,image_url\ni1,https://shop.test/p/i1,\ni2,shop.test/p/i2,https://shop.test/i2.jpg\n")
    with pytest.raises(ImportError_, match=r"column 'url': rule invalid_url .* line\(s\) \[3\]"):
        import_catalog(cfg, links)
    # Existing catalogs without links still import, and the features' item table always has the columns
    # (the baseline's demo catalog has them: equal to the catalog file's).
    items = pd.read_parquet(layout(baseline).features_dir(BASE_DS) / "items.parquet").set_index("item_id")
    cat = catalog_file(baseline)
    assert items.loc[cat.index, "url"].tolist() == cat["url"].tolist()
    assert items.loc[cat.index, "image_url"].tolist() == cat["image_url"].tolist()
