"""The command line explains itself: every option of every subcommand has help text, a bad --ds is
refused when the command line is read, and the serving commands name the items and users they do
not know on stderr (the answer for the rest still prints on stdout)."""
from __future__ import annotations

import argparse

import duckdb
import pytest

from pipelines.artifacts import layout
from pipelines.cli import main
from pipelines.cli.parser import build_parser, ds_arg


def _actions(parser: argparse.ArgumentParser, path: str):
    """(command path, action) for every action of the parser and of its subparsers, nested ones too."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _actions(sub, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction):
            yield path, action


def test_every_option_of_every_subcommand_has_help():
    actions = list(_actions(build_parser(), "recsys"))
    assert len(actions) > 60
    missing = [f"{path} {'/'.join(a.option_strings) or a.dest}" for path, a in actions if not (a.help or "").strip()]
    assert not missing, f"arguments without help text: {missing}"


def test_every_ds_option_is_checked_when_the_command_line_is_read():
    ds_options = [(path, a) for path, a in _actions(build_parser(), "recsys") if "--ds" in a.option_strings]
    assert {path for path, _ in ds_options} >= {"recsys run", "recsys export", "recsys ab report", "recsys airflow-test"}
    assert all(a.type is ds_arg for _, a in ds_options), [p for p, a in ds_options if a.type is not ds_arg]


def _q(home, sql: str, *params) -> list:
    con = duckdb.connect(str(layout(home).duckdb_path), read_only=True)
    try:
        return [r[0] for r in con.execute(sql, list(params)).fetchall()]
    finally:
        con.close()


@pytest.fixture
def known_item(home) -> str:
    return _q(home, "SELECT item_id FROM latest_cart_cross_sell ORDER BY confidence DESC, item_id LIMIT 1")[0]


def test_cart_recs_names_unknown_items_and_answers_for_the_known_ones(home, known_item, capsys):
    assert main(["--home", str(home.home), "-q", "cart-recs", known_item, "no-such-item"]) == 0
    out, err = capsys.readouterr()
    assert "recsys: note: unknown items (not in the latest published catalog): no-such-item" in err
    assert known_item not in err
    rows = [line.split() for line in out.splitlines()[1:]]
    assert rows and all(r[1] != known_item for r in rows)  # additions to the cart, not the cart itself
    assert any("often added with" in line and known_item in line for line in out.splitlines())


def test_cart_recs_with_no_known_item_fails_with_one_line(home, capsys):
    assert main(["--home", str(home.home), "-q", "cart-recs", "nope-1", "nope-2"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.strip().splitlines() == [
        "recsys: error: unknown items (not in the latest published catalog): nope-1, nope-2"]


def test_rerank_says_an_unknown_user_gets_the_best_seller_order(home, known_item, capsys):
    ds = _q(home, "SELECT CAST(max(ds) AS VARCHAR) FROM latest_user_recommendations")[0]
    assert main(["--home", str(home.home), "-q", "rerank", "no-such-user", known_item, "no-such-item"]) == 0
    out, err = capsys.readouterr()
    assert f"user no-such-user has no published list on ds {ds}: ordered by best-seller standing" in err
    assert "unknown items (not in the latest published catalog): no-such-item" in err
    assert known_item in out and "no-such-item" in out


def test_rerank_for_a_known_user_and_items_says_nothing(home, known_item, capsys):
    user = _q(home, "SELECT min(user_id) FROM latest_user_recommendations")[0]
    assert main(["--home", str(home.home), "-q", "rerank", user, known_item]) == 0
    out, err = capsys.readouterr()
    assert err == "" and known_item in out
