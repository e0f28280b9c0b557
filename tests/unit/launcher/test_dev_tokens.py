"""`make run` keeps the development tokens it generates, so a restart accepts the token a user exported."""

from __future__ import annotations

import stat
from pathlib import Path

from launcher.stack import TOKENS_FILE, banner, build_environment


def test_generated_tokens_are_kept_owner_only_and_reused_by_the_next_run(tmp_path: Path) -> None:
    first, notes = build_environment({}, tmp_path)
    kept = tmp_path / TOKENS_FILE
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert any("kept" in note for note in notes)

    second, notes = build_environment({}, tmp_path)
    assert second["TRADING_ADMIN_TOKEN"] == first["TRADING_ADMIN_TOKEN"]
    assert second["TRADING_SERVICE_TOKEN"] == first["TRADING_SERVICE_TOKEN"]
    assert not any("generated" in note for note in notes)
    assert first["TRADING_ADMIN_TOKEN"] != first["TRADING_SERVICE_TOKEN"]


def test_a_token_set_in_the_environment_wins_and_is_never_written(tmp_path: Path) -> None:
    env, _ = build_environment({"TRADING_ADMIN_TOKEN": "adm_mine", "TRADING_SERVICE_TOKEN": "svc_mine"}, tmp_path)
    assert (env["TRADING_ADMIN_TOKEN"], env["TRADING_SERVICE_TOKEN"]) == ("adm_mine", "svc_mine")
    assert not (tmp_path / TOKENS_FILE).exists()
    generated, _ = build_environment({"TRADING_ADMIN_TOKEN": "adm_mine"}, tmp_path)
    assert "adm_mine" not in (tmp_path / TOKENS_FILE).read_text()
    assert generated["TRADING_SERVICE_TOKEN"] in (tmp_path / TOKENS_FILE).read_text()


def test_without_a_keep_dir_nothing_is_written_and_the_banner_prints_export_lines(tmp_path: Path) -> None:
    env, notes = build_environment({})
    assert not list(tmp_path.iterdir())
    text = banner(env, notes)
    assert f"export ADMIN='{env['TRADING_ADMIN_TOKEN']}'" in text
    assert env["TRADING_SERVICE_TOKEN"] not in text, "the service token is never printed"
