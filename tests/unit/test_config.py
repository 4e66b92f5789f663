"""Config errors name the key; defaults match the reference behaviour."""

from pathlib import Path

import pytest

from bodycam.daemon.config import ConfigError, load_config


def test_defaults_match_reference_camera() -> None:
    config = load_config(None)
    assert config.recording.pre_event_s == 30
    assert config.recording.max_clip_s == 4 * 3600
    assert config.indicators.reminder_interval_s == 120
    assert config.video.format().width == 1280


def test_unknown_key_is_named(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[recording]\npre_event = 10\n")
    with pytest.raises(ConfigError, match=r"recording\.pre_event: unknown key"):
        load_config(path)


def test_out_of_range_value_is_named(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[recording]\npre_event_s = 300\n")
    with pytest.raises(ConfigError, match=r"recording\.pre_event_s: .*120"):
        load_config(path)


def test_broken_toml_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[recording\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


def test_board_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BODYCAM_BOARD", "pi")
    assert load_config(None).device.board == "pi"
