"""The cached procedure catalogue behind `hotspin list` and `hotspin run --help`."""

import os

import pytest

from hotspin import catalogue as cat
from hotspin.cli import main


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HOTSPIN_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_list_prints_every_procedure_with_readable_ranges(cache, capsys):
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    from hotspin.procedures.registry import PROCEDURES

    for name, cls in PROCEDURES.items():
        assert f"{name}: {cls.SUMMARY}" in text
    assert "e+18" not in text and "9.22337" not in text  # the seed reads "≥ 0"
    assert "seed" in text and "≥ 0" in text


def test_a_warm_cache_is_used_and_a_changed_source_rebuilds_it(cache, tmp_path, monkeypatch):
    first = cat.catalogue()
    assert list(cache.glob("catalogue-*.json"))

    def no_build():
        raise AssertionError("rebuilt although the cache was current")

    monkeypatch.setattr(cat, "build_catalogue", no_build)
    assert cat.catalogue() == first
    # A source tree of its own: touching a module changes the key.
    for folder in cat._SOURCES:
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "m.py").write_text("x = 1\n")
    monkeypatch.setattr(cat, "_ROOT", tmp_path)
    key = cat._source_key()
    os.utime(tmp_path / "procedures" / "m.py", ns=(1, 1))
    assert cat._source_key() != key


def test_run_help_lists_the_procedures(cache, capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    assert "spin_noise" in out and "entanglement" in out
