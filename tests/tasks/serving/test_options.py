"""The server's own settings from the environment: defaults and one-line errors."""

import pytest

from tasks.serving.options import DEFAULT_MAX_BODY_BYTES, OptionError, ServeOptions


def test_body_limit_defaults_to_32_mib_and_reads_the_variable(monkeypatch):
    monkeypatch.delenv("MLP_SERVE_MAX_BODY_BYTES", raising=False)
    assert ServeOptions.from_env().max_body_bytes == DEFAULT_MAX_BODY_BYTES == 32 * 2**20
    monkeypatch.setenv("MLP_SERVE_MAX_BODY_BYTES", "1048576")
    assert ServeOptions.from_env().max_body_bytes == 1048576


@pytest.mark.parametrize("value", ["0", "-5", "32MB", "1.5"])
def test_a_bad_body_limit_is_named(monkeypatch, value):
    monkeypatch.setenv("MLP_SERVE_MAX_BODY_BYTES", value)
    with pytest.raises(OptionError, match=f"MLP_SERVE_MAX_BODY_BYTES='{value}' must be a "
                                          "positive integer"):
        ServeOptions.from_env()


def test_the_key_length_rule_is_where_users_read_about_the_token(capsys):
    """Issue 19: `--token secret` was refused, and neither --help nor the README said why."""
    from pathlib import Path

    from tasks.cli import main
    from tasks.serving.options import MIN_KEY_LENGTH

    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    assert f"at least {MIN_KEY_LENGTH} characters" in " ".join(capsys.readouterr().out.split())
    readme = " ".join((Path(__file__).parents[3] / "README.md").read_text().split())
    assert f"A key must be at least {MIN_KEY_LENGTH} characters" in readme
