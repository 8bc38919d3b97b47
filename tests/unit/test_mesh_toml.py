"""The mesh file that `mesh up` reads: what it accepts, and the one-line errors for what it does not."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from mesh.config import DEFAULT_REGISTRY_PORT
from mesh.errors import ConfigError
from mesh.runtime.meshfile import RUN_ENV, RUN_HEADERS, load_plan

ROOT = Path(__file__).resolve().parents[2]

VALID = """
[mesh]
name = "support-desk"
policy = "policy.cedar"

[registry]
port = 0

[[agents]]
target = "triage.py"
meta = { jurisdiction = "us", tier = 2, pilot = true }
env = { LOG = "debug" }

[[agents]]
target = "echo"
name = "echo-two"
replicas = 2
"""

POLICY = '@id("all") permit (principal, action, resource);\n'


def write(directory: Path, toml: str, *, files: tuple[str, ...] = ("triage.py",), policy: str = POLICY) -> Path:
    (directory / "mesh.toml").write_text(toml)
    (directory / "policy.cedar").write_text(policy)
    for name in files:
        (directory / name).write_text("from mesh import Agent\nagent = Agent('triage')\n")
    return directory


def error_of(directory: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_plan(directory)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_a_valid_file_resolves_targets_and_the_policy_relative_to_itself(tmp_path: Path) -> None:
    plan = load_plan(write(tmp_path, VALID), mesh="from-flag")

    assert plan.mesh == "from-flag"
    assert plan.policy == (tmp_path / "policy.cedar").resolve()
    assert plan.registry is not None
    assert plan.registry.port == 0
    assert [a.label for a in plan.agents] == ["triage", "echo-two#1", "echo-two#2"]
    triage = plan.agents[0]
    assert triage.target == str((tmp_path / "triage.py").resolve())
    assert triage.meta == (("jurisdiction", "us"), ("tier", "2"), ("pilot", "true"))
    assert triage.env == (("LOG", "debug"),)
    assert plan.agents[1].target == "echo"


def test_the_file_name_is_used_when_no_flag_or_environment_names_the_mesh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MESH_NAME", raising=False)
    assert load_plan(write(tmp_path, VALID)).mesh == "support-desk"
    monkeypatch.setenv("MESH_NAME", "from-env")
    assert load_plan(write(tmp_path, VALID)).mesh == "from-env"


def test_an_agent_command_line_carries_the_registry_policy_name_and_meta(tmp_path: Path) -> None:
    plan = load_plan(write(tmp_path, VALID), mesh="m")
    argv = plan.agents[1].argv(mesh="m", registry="http://127.0.0.1:9", policy=plan.policy, mdns=False)

    assert argv[:5] == [sys.executable, "-m", "mesh", "run", "echo"]
    assert argv[argv.index("--name") + 1] == "echo-two"
    assert argv[argv.index("--registry") + 1] == "http://127.0.0.1:9"
    assert argv[argv.index("--policy") + 1] == str(plan.policy)
    assert argv[argv.index("--port") + 1] == "0"
    assert "--no-mdns" in argv
    assert plan.agents[0].argv(mesh="m", registry=None, policy=None).count("--meta") == 3


def test_the_registry_defaults_to_its_documented_port_and_can_be_overridden_or_disabled(tmp_path: Path) -> None:
    write(tmp_path, '[[agents]]\ntarget = "echo"\n')
    plan = load_plan(tmp_path)
    assert plan.registry is not None
    assert plan.registry.port == DEFAULT_REGISTRY_PORT
    overridden = load_plan(tmp_path, registry_port=0).registry
    assert overridden is not None
    assert overridden.port == 0
    write(tmp_path, '[registry]\nenabled = false\n[[agents]]\ntarget = "echo"\n')
    assert load_plan(tmp_path).registry is None


def test_a_file_path_works_as_well_as_its_directory(tmp_path: Path) -> None:
    write(tmp_path, VALID)
    (tmp_path / "other.toml").write_text((tmp_path / "mesh.toml").read_text())
    assert len(load_plan(tmp_path / "other.toml").agents) == 3


def test_an_unknown_key_is_one_line_naming_it_and_the_known_keys(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, '[[agents]]\ntarget = "echo"\nnmae = "x"\n'))
    assert "agents[0].nmae: unknown key" in message
    assert "known: target, command, url, name, replicas, meta, env, headers" in message


def test_an_unknown_section_is_named(tmp_path: Path) -> None:
    assert "agent: unknown key" in error_of(write(tmp_path, '[[agent]]\ntarget = "echo"\n'))


def test_a_missing_target_file_names_the_entry_and_the_file(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, '[[agents]]\ntarget = "agents/nowhere.py"\n', files=()))
    assert "agents[0].target: no such file: agents/nowhere.py" in message


def test_a_target_that_is_neither_a_file_nor_built_in_is_refused(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, '[[agents]]\ntarget = "no-such-agent"\n'))
    assert "'no-such-agent' is neither a file" in message
    assert "echo" in message


def test_a_value_of_the_wrong_type_names_its_key(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, '[[agents]]\ntarget = "echo"\nreplicas = "two"\n'))
    assert "agents[0].replicas:" in message


def test_an_invalid_agent_name_is_refused(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, '[[agents]]\ntarget = "echo"\nname = "Not_A_Label"\n'))
    assert "agents[0].name: 'Not_A_Label' is not an agent name" in message


def test_the_same_agent_twice_without_a_name_is_refused(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, '[[agents]]\ntarget = "echo"\n[[agents]]\ntarget = "echo"\n'))
    assert "agents[1]: 'echo' is already started by agents[0]" in message


def test_a_file_that_is_not_toml_says_where(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "[[agents]\ntarget = \n"))
    assert "not valid TOML" in message
    assert "line 1" in message


def test_a_directory_without_a_mesh_file_and_a_missing_file_are_refused(tmp_path: Path) -> None:
    assert "no mesh.toml in" in error_of(tmp_path)
    assert "no such file" in error_of(tmp_path / "missing.toml")


def test_a_missing_or_broken_policy_is_refused_before_anything_starts(tmp_path: Path) -> None:
    toml = '[mesh]\npolicy = "nope.cedar"\n[[agents]]\ntarget = "echo"\n'
    assert "mesh.policy: no such file: nope.cedar" in error_of(write(tmp_path, toml))
    toml = '[mesh]\npolicy = "policy.cedar"\n[[agents]]\ntarget = "echo"\n'
    assert "mesh.policy:" in error_of(write(tmp_path, toml, policy="permit (principal,"))


def test_a_file_with_nothing_to_start_is_refused(tmp_path: Path) -> None:
    assert "nothing to start" in error_of(write(tmp_path, "[registry]\nenabled = false\n"))


@pytest.mark.parametrize("example", ["support-desk", "sales-pipeline"])
def test_the_shipped_examples_are_valid_mesh_files(example: str) -> None:
    plan = load_plan(ROOT / "examples" / example, mesh="m")
    assert plan.policy is not None
    assert plan.agents
    assert all(Path(a.target).is_file() for a in plan.agents)


ADOPTED = """
[[agents]]
name = "everything"
command = "npx -y @modelcontextprotocol/server-everything"
replicas = 2
meta = { owner = "platform" }
env = { API_TOKEN = "s3cret-env", DEBUG = 1 }

[[agents]]
name = "docs"
url = "https://user:pw@docs.example.com:8443/mcp?key=s3cret-query#frag"
headers = { Authorization = "Bearer s3cret-header" }
"""
SECRETS = ("s3cret-env", "s3cret-header")


def test_command_and_url_entries_run_existing_servers_under_their_names(tmp_path: Path) -> None:
    plan = load_plan(write(tmp_path, ADOPTED), mesh="m")

    assert [(a.label, a.kind, a.name) for a in plan.agents] == [
        ("everything#1", "command", "everything"),
        ("everything#2", "command", "everything"),
        ("docs", "url", "docs"),
    ]
    everything, docs = plan.agents[0], plan.agents[2]
    assert everything.target == "npx -y @modelcontextprotocol/server-everything"
    assert everything.env == (("API_TOKEN", "s3cret-env"), ("DEBUG", "1"))
    assert docs.headers == (("Authorization", "Bearer s3cret-header"),)


def test_a_command_entry_launches_mesh_run_command_with_its_secrets_in_the_environment_only(tmp_path: Path) -> None:
    plan = load_plan(write(tmp_path, ADOPTED), mesh="m")
    everything = plan.agents[0]
    argv = everything.argv(mesh="m", registry="http://127.0.0.1:9", policy=None)

    assert argv[:5] == [sys.executable, "-m", "mesh", "run", "--command=npx -y @modelcontextprotocol/server-everything"]
    assert argv[argv.index("--name") + 1] == "everything"
    assert argv[argv.index("--meta") + 1] == "owner=platform"
    assert argv[argv.index("--registry") + 1] == "http://127.0.0.1:9"
    assert "--env" not in argv
    assert not any(secret in word for word in argv for secret in SECRETS)
    assert everything.environment() == {RUN_ENV: json.dumps({"API_TOKEN": "s3cret-env", "DEBUG": "1"})}


def test_a_url_entry_launches_mesh_run_url_with_its_headers_in_the_environment_only(tmp_path: Path) -> None:
    plan = load_plan(write(tmp_path, ADOPTED), mesh="m")
    docs = plan.agents[2]
    argv = docs.argv(mesh="m", registry=None, policy=None, mdns=False)

    assert argv[4] == "--url=https://user:pw@docs.example.com:8443/mcp?key=s3cret-query#frag"
    assert "--header" not in argv
    assert not any(secret in word for word in argv for secret in SECRETS)
    assert docs.environment() == {RUN_HEADERS: json.dumps({"Authorization": "Bearer s3cret-header"})}


def test_an_adopted_server_without_env_still_overrides_what_the_shell_passed_on(tmp_path: Path) -> None:
    write(tmp_path, '[[agents]]\nname = "a"\ncommand = "srv"\n[[agents]]\nname = "b"\nurl = "http://h/mcp"\n')
    plan = load_plan(tmp_path)

    assert [a.environment() for a in plan.agents] == [{RUN_ENV: "{}"}, {RUN_HEADERS: "{}"}]


def test_what_mesh_up_shows_of_a_plan_holds_no_secret(tmp_path: Path) -> None:
    plan = load_plan(write(tmp_path, ADOPTED), mesh="m")
    shown = repr(plan) + "".join(a.shown for a in plan.agents)

    assert not any(secret in shown for secret in SECRETS)
    assert plan.agents[2].shown == "https://docs.example.com:8443/mcp"
    assert "s3cret-query" not in plan.agents[2].shown
    assert plan.agents[0].shown == "npx -y @modelcontextprotocol/server-everything"


def test_a_target_entry_keeps_its_env_as_the_agent_process_environment(tmp_path: Path) -> None:
    plan = load_plan(write(tmp_path, VALID), mesh="m")

    assert plan.agents[0].environment() == {"LOG": "debug"}
    assert plan.agents[0].argv(mesh="m", registry=None, policy=None)[4] == plan.agents[0].target


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ('name = "x"\ntarget = "echo"\ncommand = "srv"', "agents[0]: 'x': give exactly one of target, command or url"),
        ('command = "srv"\nurl = "http://h"', "agents[0]: give exactly one of target, command or url"),
        ('name = "x"', "agents[0]: 'x': give exactly one of target, command or url (it has none)"),
        ('command = "srv"', "agents[0]: a command entry needs a name"),
        ('url = "https://h/mcp"', "agents[0]: a url entry needs a name"),
        ('name = "x"\ncommand = "srv"\nheaders = { A = "b" }', "agents[0]: 'x': headers are for url entries"),
        ('name = "x"\ntarget = "echo"\nheaders = { A = "b" }', "agents[0]: 'x': headers are for url entries"),
        ('name = "x"\nurl = "https://h"\nenv = { A = "b" }', "agents[0]: 'x': env is for target and command"),
        ('name = "x"\nurl = "ftp://h/mcp"', "agents[0].url: not an http:// or https:// URL"),
        ('name = "x"\ncommand = "srv \'unclosed"', "agents[0].command: not a shell command line"),
        ('name = "x"\ncommand = "  "', "agents[0].command: an empty command"),
        ('name = "x"\ncommand = ""', "agents[0].command:"),
        ('name = "x"\nurl = "https://h"\nheaders = { "Bad Name" = "v" }', "'Bad Name' cannot be an HTTP header"),
        ('name = "x"\nurl = "https://h"\nheaders = { A = 1 }', "agents[0].headers.A:"),
        ('name = "x"\ncommand = "srv"\nenv = { "A=B" = "v" }', "'A=B' cannot be an environment variable"),
    ],
)
def test_a_wrong_adopted_server_entry_is_one_line_naming_the_entry(tmp_path: Path, entry: str, expected: str) -> None:
    assert expected in error_of(write(tmp_path, f"[[agents]]\n{entry}\n"))


def test_a_header_value_with_a_line_break_is_refused_without_showing_the_value(tmp_path: Path) -> None:
    toml = '[[agents]]\nname = "x"\nurl = "https://h"\nheaders = { Authorization = "s3cret-header\\nX: y" }\n'
    message = error_of(write(tmp_path, toml))

    assert "agents[0].headers: the value of 'Authorization' holds a line break" in message
    assert "s3cret-header" not in message


def test_two_adopted_servers_under_one_name_are_refused(tmp_path: Path) -> None:
    toml = '[[agents]]\nname = "x"\ncommand = "a"\n[[agents]]\nname = "x"\nurl = "https://h"\n'
    assert "agents[1]: 'x' is already started by agents[0]" in error_of(write(tmp_path, toml))
