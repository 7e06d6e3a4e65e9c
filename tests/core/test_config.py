import pytest

from convergence.config import (ConfigError, Option, Section, listen_address, load,
                                optional_listen_address, positive_number)
from convergence.core import Core
from convergence.store import Database


def create(config):
    return Core.create(config, db=Database("sqlite://"))


def write(tmp_path, text):
    path = tmp_path / "convergence.toml"
    path.write_text(text)
    return path


def test_defaults_without_a_file():
    config = load(None)
    assert config["server"]["domain"] == "localhost"
    assert config.database_url == "sqlite:///convergence-data/convergence.db"


def test_plugin_sections_are_validated_and_defaulted(tmp_path):
    path = write(tmp_path, '[server]\ndomain = "Example.ORG"\n[http]\nlisten = "127.0.0.1:9000"\n')
    config = load(path)
    create(config).close()
    assert config["server"]["domain"] == "example.org"
    assert config["http"]["listen"] == ("127.0.0.1", 9000)
    assert config["xmpp"]["listen"] == ("0.0.0.0", 5222)
    assert config["xmpp"]["s2s_listen"] == ("0.0.0.0", 5269)  # federation is on by default
    assert config["echo"]["user"] == "echo"


@pytest.mark.parametrize("text, expected", [
    ("[server\n", "not valid TOML"),
    ('[server]\ndomian = "x"\n', "[server] domian: unknown key"),
    ("[server]\nmax_offline_messages = \"many\"\n", "[server] max_offline_messages: expected a positive integer"),
    ('[server]\ndisabled_plugins = "echo"\n', "[server] disabled_plugins: expected a list of strings"),
    ('[http]\nlisten = 8080\n', '[http] listen: expected "host:port"'),
    ('[http]\nport = 8080\n', "[http] port: unknown key"),
    ('[nosuch]\nx = 1\n', "[nosuch]: unknown section"),
    ('[server]\ndisabled_plugins = ["ecko"]\n', "unknown plugin 'ecko'"),
])
def test_bad_configuration_names_file_key_and_expectation(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        create(load(path)).close()
    assert str(info.value).startswith(str(path))
    assert expected in str(info.value)


def test_a_disabled_plugins_table_is_ignored(tmp_path):
    path = write(tmp_path, '[server]\ndisabled_plugins = ["echo"]\n[echo]\nwhatever = 1\n')
    core = create(load(path))
    assert not core.pm.has_plugin("echo") and "echo" not in core.config.values
    core.close()


@pytest.mark.parametrize("value", ["host", ":80", "h:99999", "h:x"])
def test_listen_address_rejects(value):
    with pytest.raises(ValueError):
        listen_address(value)


def test_listen_address_ipv6():
    assert listen_address("[::1]:5060") == ("::1", 5060)


def test_option_types():
    section = Section("t", {"n": Option(1, ""), "f": Option(1.5, ""), "b": Option(True, "")})
    config = load(None, {"t": {"n": 2, "f": 3, "b": False}})
    config.add_section(section)
    assert config["t"] == {"n": 2, "f": 3.0, "b": False}
    bad = load(None, {"t": {"n": True}})
    with pytest.raises(ConfigError, match="expected an integer"):
        bad.add_section(section)


def test_optional_listen_address_and_positive_number():
    assert optional_listen_address("") is None
    assert optional_listen_address("127.0.0.1:5223") == ("127.0.0.1", 5223)
    assert positive_number(2) == 2.0 and positive_number(0.25) == 0.25
    for bad in (0, -1, True, "1"):
        with pytest.raises(ValueError):
            positive_number(bad)
    with pytest.raises(ValueError):
        optional_listen_address("nope")
