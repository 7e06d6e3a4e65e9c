"""Meta-tests that keep the plugin contract honest (after datasette's test_plugins/test_docs)."""
import inspect
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sqlalchemy import text

from convergence import Message, hookspecs
from convergence.plugin_manager import PluginManager, available
from convergence.testing import RecordingEndpoint

from . import test_hooks

ROOT = Path(__file__).resolve().parents[2]
HOOKS = sorted(name for name, f in vars(hookspecs).items()
               if inspect.isfunction(f) and hasattr(f, "convergence_spec"))


def test_the_hook_list_is_not_empty():
    assert {"resolve_recipient", "on_message", "on_login", "on_register"} <= set(HOOKS)


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented(hook):
    spec = getattr(hookspecs, hook)
    assert inspect.getdoc(spec), f"{hook} has no docstring"
    signature = f"{hook}({', '.join(inspect.signature(spec).parameters)})"
    assert signature in (ROOT / "docs" / "plugins.md").read_text(), f"docs/plugins.md lacks {signature}"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test(hook):
    assert hasattr(test_hooks, f"test_hook_{hook}"), f"tests/contract/test_hooks.py lacks test_hook_{hook}"


@pytest.mark.parametrize("name", sorted(available()))
def test_every_entry_point_loads_and_passes_check_pending(name):
    pm = PluginManager()
    pm.register_plugin(available()[name].load(), name)
    pm.check_pending()


def test_bundled_plugins_are_entry_points():
    assert {"sip", "xmpp", "http", "echo"} <= set(available())


def test_third_party_plugin_loads_through_its_entry_point_and_routes(make_core):
    """tests/plugin_package is pip-installed (README's test command): it must take part in routing."""
    assert "hello" in available(), "pip install ./tests/plugin_package first (bash .ci/run does)"
    core = make_core({"hello": {"greeting": "bonjour"}})
    assert dict((n, d) for n, d, _ in core.pm.describe())["hello"] == "convergence-hello 1.0"
    import convergence_hello
    alice = core.add_account("alice", "pw")
    phone = RecordingEndpoint(alice.with_resource("phone"))
    core.presence.login(phone)
    core.send(Message(phone.address, core.address("hello"), "world"))
    assert convergence_hello.received[-1].body == "world"
    assert [m.body for m in phone.received] == ["bonjour, world"]
    with core.db.read() as session:  # its own table, created by its own migration branch
        assert session.execute(text("SELECT recipient FROM hello_greetings")).scalars().all() == \
            ["alice@localhost/phone"]
    current, heads, up_to_date = core.db.current()
    assert up_to_date and {"0004", "hello_0001"} <= heads


def test_a_plugin_that_needs_another_says_so_with_require(core):
    """``core.pm.require``, called from a plugin's on_startup when its settings need another plugin,
    stops start-up with one line naming both (tests/callback runs it through ``serve``)."""
    from convergence.config import ConfigError
    core.pm.require(core, "needy", "echo", "[needy] x is set")  # loaded: nothing happens
    core.pm.set_blocked("weather")  # as [server] disabled_plugins does
    with pytest.raises(ConfigError) as error:
        core.pm.require(core, "needy", "weather", "[needy] x is set")
    assert str(error.value) == ("configuration: [needy] x is set, but plugin 'needy' needs plugin "
                                "'weather', which is disabled in [server] disabled_plugins")
    with pytest.raises(ConfigError, match="needs plugin 'nosuch', which is not loaded$"):
        core.pm.require(core, "needy", "nosuch", "[needy] x is set")


def fake_distribution(tmp_path, module_source):
    """An installed distribution 'broken-plugin 1.0' whose entry point 'broken' is module_source."""
    (tmp_path / "broken_plugin.py").write_text(textwrap.dedent(module_source))
    info = tmp_path / "broken_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[convergence.plugins]\nbroken = broken_plugin\n")


def run_cli(tmp_path, *args, config="", env=None):
    (tmp_path / "c.toml").write_text(config)
    return subprocess.run([str(Path(sys.executable).parent / "convergence"), "--config",
                           str(tmp_path / "c.toml"), *args], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path,
                          env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin", **(env or {})})


@pytest.mark.parametrize("source, reason", [
    ("from convergence import hookimpl\n@hookimpl\ndef on_mesage(core, message): pass\n",
     "unknown hook 'on_mesage'"),
    ("import no_such_module\n", "No module named 'no_such_module'"),
    ("from convergence import hookimpl\n@hookimpl\ndef on_message(core, message, extra): pass\n",
     "extra"),
])
def test_a_broken_plugin_stops_start_up_naming_it_and_its_distribution(tmp_path, source, reason):
    fake_distribution(tmp_path, source)
    result = run_cli(tmp_path, "plugins")
    assert result.returncode == 2
    assert "plugin 'broken' from broken-plugin 1.0" in result.stderr and reason in result.stderr
    assert "Traceback" not in result.stderr


def test_plugin_errors_skip_leaves_the_broken_plugin_out(tmp_path):
    fake_distribution(tmp_path, "import no_such_module\n")
    result = run_cli(tmp_path, "plugins", config='[server]\nplugin_errors = "skip"\n[broken]\nx = 1\n')
    assert result.returncode == 0, result.stderr
    assert "skipped plugin 'broken' from broken-plugin 1.0" in result.stderr
    assert "echo" in result.stdout and "broken" not in result.stdout


def test_disabled_plugins_are_not_loaded(tmp_path):
    fake_distribution(tmp_path, "import no_such_module\n")
    result = run_cli(tmp_path, "plugins", config='[server]\ndisabled_plugins = ["broken", "echo"]\n')
    assert result.returncode == 0, result.stderr
    assert "echo" not in result.stdout and "xmpp" in result.stdout


def test_tracing_prints_hook_calls(tmp_path):
    result = run_cli(tmp_path, "plugins", env={"CONVERGENCE_TRACE_PLUGINS": "1"})
    assert result.returncode == 0
    assert "add_config_section" in result.stderr
