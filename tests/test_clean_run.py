"""A run of the suite leaves nothing in the directory it was started from unless asked:
hypothesis' files go to the user's cache (``$XDG_CACHE_HOME/gpt2-conformance/hypothesis``), and
pytest's own ``.pytest_cache/`` is left out with ``-p no:cacheprovider``, as the docs' commands
say (docs/running-the-suite.md, "Files a run writes")."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from gpt2_conformance import options


def test_a_run_writes_nothing_in_its_directory(tmp_path: Path, installed_suite: Any) -> None:
    here, cache = tmp_path / "here", tmp_path / "cache"
    here.mkdir()
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    env.pop(options.ENV_HYPOTHESIS_STORAGE, None)
    done = installed_suite(
        "--impl=numpy",
        "--conformance-profile=dev",
        "--max-examples=2",
        "-p",
        "no:cacheprovider",
        "-q",
        cwd=here,
        env=env,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    assert sorted(p.name for p in here.iterdir()) == []
    # the dev profile keeps an example database: it is in the user's cache
    assert (cache / "gpt2-conformance" / "hypothesis" / "examples").is_dir()


def test_hypothesis_storage_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(options.ENV_HYPOTHESIS_STORAGE, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", "/somewhere")
    assert options.hypothesis_storage() == str(Path("/somewhere/gpt2-conformance/hypothesis"))
    monkeypatch.delenv("XDG_CACHE_HOME")
    expected = Path.home() / ".cache" / "gpt2-conformance" / "hypothesis"
    assert options.hypothesis_storage() == str(expected)
    monkeypatch.setenv(options.ENV_HYPOTHESIS_STORAGE, ".hypothesis")
    assert options.hypothesis_storage() is None  # asked for: left where the user says


def test_our_profiles_keep_their_database_where_hypothesis_loads_its_ci_profile() -> None:
    from hypothesis import settings

    before = settings.get_current_profile_name()
    settings.load_profile("ci")  # what hypothesis does itself when $CI (or the like) is set
    try:
        options.register_profiles()

        def chosen(profile: str) -> settings:
            return options.hypothesis_settings(
                profile=profile,
                hypothesis_profile=None,
                max_examples=None,
                shape="tiny",
                seed=None,
                seeds=None,
            )

        assert chosen("dev").database is not None
        assert chosen("dev").derandomize is False
        assert chosen("thorough").database is not None
        assert chosen("ci").database is None  # derandomized: nothing to keep
    finally:
        settings.load_profile(before)
        options.register_profiles()
