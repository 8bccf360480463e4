"""The service files: the systemd units, the sysusers file and the Dockerfile.

systemd's own tools check the units and the sysusers file where they are
installed: ``systemd-analyze verify`` parses a unit as PID 1 would and checks
that its commands exist, which a typo in a sandboxing option or a bad
specifier fails.  The units name /usr/local/bin/reactor-mux, so each is
checked from a copy that names this venv's reactor-mux instead.  No Docker
daemon is assumed: the Dockerfile is checked as text, and against the
repository it copies from.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest
from security_support import SECRET

from reactor_mux import cli
from reactor_mux.security import keygen
from reactor_mux.tunnel.settings import DEFAULT_DRAIN_TIMEOUT

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

pytestmark = pytest.mark.codec_independent

ROOT = Path(__file__).resolve().parent.parent
SYSTEMD = ROOT / "contrib" / "systemd"
SYSUSERS = SYSTEMD / "reactor-mux.sysusers"
BINARY = "/usr/local/bin/reactor-mux"
INSTANCE = "office"
# Each unit file and the unit name it is checked as (the template as an instance).
UNITS = {
    "server": ("reactor-mux-server.service", "reactor-mux-server.service"),
    "client": ("reactor-mux-client@.service", f"reactor-mux-client@{INSTANCE}.service"),
}


def tool(name: str, option: str) -> str:
    """The systemd tool, if it is installed and knows ``option``; else skip."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (no systemd here)")
    usage = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=30)
    if option not in usage.stdout:
        pytest.skip(f"this {name} has no {option} (systemd older than 250)")
    return path


def installed_reactor_mux() -> Path:
    """The reactor-mux command next to this Python (the venv's), or on PATH."""
    beside = Path(sys.executable).parent / "reactor-mux"
    found = beside if beside.exists() else shutil.which("reactor-mux")
    if found is None:
        pytest.skip("no reactor-mux command installed next to this Python or on PATH")
    return Path(found)


def unit_settings(text: str) -> dict[str, list[str]]:
    """Each ``Section.Key`` of a unit file with its values in order (keys may repeat)."""
    settings: dict[str, list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        settings.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return settings


def verify(directory: Path, file_name: str, unit: str) -> list[str]:
    """What ``systemd-analyze verify`` says against the unit, as lines; none when it is clean.

    ``--recursive-errors=no`` keeps the units it depends on (network-online.target,
    whatever this machine has) out of the verdict, and makes a warning about
    our unit, such as an unknown key, an error.  Its messages name the unit
    file or the unit; lines naming neither are about other units.
    """
    analyze = tool("systemd-analyze", "--recursive-errors")
    result = subprocess.run(
        [analyze, "verify", "--recursive-errors=no", str(directory / unit)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    ours = (file_name, unit)
    said = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    problems = [line for line in said if any(name in line for name in ours)]
    if result.returncode != 0 and not problems:
        problems = [f"exit status {result.returncode}", *said]
    return problems


def installable_copy(role: str, directory: Path, typo: bool = False) -> tuple[str, str]:
    """The role's unit, copied into ``directory`` with this venv's reactor-mux in
    its commands; ``typo`` misspells one sandboxing option."""
    file_name, unit = UNITS[role]
    text = (SYSTEMD / file_name).read_text()
    assert f"ExecStart={BINARY} {role} " in text
    text = text.replace(BINARY, str(installed_reactor_mux()))
    if typo:
        text = text.replace("ProtectSystem=strict", "ProtectSytem=strict")
    (directory / file_name).write_text(text)
    return file_name, unit


@pytest.mark.parametrize("role", UNITS)
def test_the_unit_passes_systemd_analyze_verify(role: str, tmp_path: Path) -> None:
    """What PID 1 would refuse or ignore (a misspelt option, a bad specifier) fails here first."""
    file_name, unit = installable_copy(role, tmp_path)
    assert verify(tmp_path, file_name, unit) == []


def test_the_verify_check_sees_a_misspelt_option(tmp_path: Path) -> None:
    """systemd only warns about an unknown key and goes on without it: the check
    above must still fail, or a sandbox option could be lost unnoticed."""
    file_name, unit = installable_copy("server", tmp_path, typo=True)
    problems = verify(tmp_path, file_name, unit)
    assert any("ProtectSytem" in line for line in problems), problems


def test_the_sysusers_file_makes_the_units_user(tmp_path: Path) -> None:
    """The units run as the user the sysusers file creates, and systemd-sysusers accepts it."""
    [entry] = [line.split() for line in SYSUSERS.read_text().splitlines() if line.startswith("u ")]
    user = entry[1]
    for file_name, _unit in UNITS.values():
        settings = unit_settings((SYSTEMD / file_name).read_text())
        assert settings["Service.User"] == [user] and settings["Service.Group"] == [user]
    sysusers = tool("systemd-sysusers", "--dry-run")
    result = subprocess.run(
        [sysusers, "--dry-run", f"--root={tmp_path}", str(SYSUSERS)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    said = result.stdout + result.stderr
    assert result.returncode == 0 and SYSUSERS.name not in said, said


def test_the_two_units_share_one_sandbox() -> None:
    """One scheme for both roles: only the description, the commands and the
    runtime directory may differ, so a hardening added to one reaches the other."""
    own = {
        "Unit.Description",
        "Service.ExecStart",
        "Service.ExecReload",
        "Service.RuntimeDirectory",
    }
    server, client = (
        unit_settings((SYSTEMD / file_name).read_text()) for file_name, _unit in UNITS.values()
    )
    assert {k: v for k, v in server.items() if k not in own} == {
        k: v for k, v in client.items() if k not in own
    }


@pytest.mark.parametrize("role", UNITS)
def test_the_unit_fits_what_reactor_mux_does(role: str) -> None:
    """The control socket lies in the unit's own runtime directory (which systemd
    makes and removes), the config in /etc/reactor-mux, and systemd waits out a
    drain of the default length before it kills."""
    file_name, _unit = UNITS[role]
    text = (SYSTEMD / file_name).read_text().replace("%i", INSTANCE)
    settings = unit_settings(text)
    [command] = settings["Service.ExecStart"]
    argv = shlex.split(command)
    assert argv[:2] == [BINARY, role]
    control = PurePosixPath(argv[argv.index("--control") + 1])
    [runtime] = settings["Service.RuntimeDirectory"]
    assert control.parent == PurePosixPath("/run", runtime)
    config = PurePosixPath(argv[argv.index("--config") + 1])
    assert config.parent == PurePosixPath("/etc/reactor-mux")
    [stop] = settings["Service.TimeoutStopSec"]
    assert float(stop.removesuffix("s")) > DEFAULT_DRAIN_TIMEOUT
    assert settings["Service.RestartPreventExitStatus"] == ["2"]  # usage errors
    [reload] = settings["Service.ExecReload"]
    assert shlex.split(reload) == [BINARY, "reload", "--control", str(control)]


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's stages, each a list of (INSTRUCTION, arguments), with
    continuation lines joined and comments dropped."""
    stages: list[list[tuple[str, str]]] = []
    logical = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        word, _, rest = (logical + line).partition(" ")
        logical = ""
        if word.upper() == "FROM":
            stages.append([])
        stages[-1].append((word.upper(), " ".join(rest.split())))
    return stages


def test_the_image_runs_reactor_mux_as_a_user() -> None:
    """``docker run IMAGE server ...`` must reach reactor-mux, not a shell, and not as root."""
    *_, final = dockerfile_stages()
    settings = dict(final)
    assert json.loads(settings["ENTRYPOINT"]) == ["reactor-mux"]
    assert settings["USER"].split(":")[0] not in ("", "0", "root")
    assert any(word == "COPY" and rest.startswith("--from=build ") for word, rest in final)


def test_the_build_stage_builds_a_wheel_of_the_project() -> None:
    """The codec is compiled when the wheel is built, so the image installs a wheel
    built from this tree, not an sdist or whatever a package index holds."""
    build, *_ = dockerfile_stages()
    assert build[0][1].endswith(" AS build")
    runs = [shlex.split(rest) for word, rest in build if word == "RUN"]
    wheel = [argv for argv in runs if argv[:2] == ["pip", "wheel"]]
    assert wheel and wheel[-1][-1] == "." and "--no-deps" in wheel[-1]


def copy_sources() -> list[str]:
    """The paths the Dockerfile copies from the build context."""
    sources = []
    for stage in dockerfile_stages():
        for word, rest in stage:
            if word != "COPY" or rest.startswith("--from="):
                continue
            *paths, _target = rest.split()
            sources.extend(path.rstrip("/") for path in paths if not path.startswith("--"))
    return sources


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last .dockerignore pattern that matches the path or a
    directory above it decides, and ``!`` patterns let it back in."""
    parents = ["/".join(path.split("/")[: n + 1]) for n in range(path.count("/") + 1)]
    ignored = False
    for pattern in patterns:
        keep = pattern.startswith("!")
        glob = pattern.removeprefix("!").strip("/")
        regex = ""
        for part in re.split(r"(\*\*/|\*\*|\*|\?)", glob):
            regex += {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(
                part, re.escape(part)
            )
        if any(re.fullmatch(regex, parent) for parent in parents):
            ignored = not keep
    return ignored


def test_what_the_dockerfile_copies_is_in_the_repository_and_the_context() -> None:
    """Each COPY source exists, no file git tracks under it is left out by
    .dockerignore, and together they hold what the wheel build reads."""
    sources = copy_sources()
    for source in sources:
        assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which does not exist"
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    tracked = subprocess.run(
        ["git", "ls-files", "-z", "--", *sources],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if tracked.returncode != 0:
        pytest.skip("not a git checkout: no list of tracked files")
    files = [name for name in tracked.stdout.split("\0") if name]
    assert files
    left_out = [name for name in files if dockerignored(name, patterns)]
    assert left_out == []
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    needed = {
        "pyproject.toml",
        "setup.py",
        "build_codec.py",  # setup.py's cffi_modules
        "csrc/rmux_codec.c",
        "csrc/rmux_codec.h",
        "reactor_mux/__init__.py",
        project["readme"],
        *project["license-files"],
    }
    for name in needed:
        assert name in files, f"the Dockerfile does not copy {name}, which the wheel build reads"


def test_dockerignore_rule() -> None:
    """The matcher above, on the cases .dockerignore relies on."""
    patterns = ["**/*.so", "reactor_mux/codec/_ccodec.*", ".venv", "docs", "!docs/keep.md"]
    assert dockerignored("reactor_mux/codec/_ccodec.abi3.so", patterns)
    assert dockerignored("x.so", patterns)
    assert dockerignored(".venv/bin/python", patterns)
    assert dockerignored("docs/a.md", patterns)
    assert not dockerignored("docs/keep.md", patterns)
    assert not dockerignored("reactor_mux/codec/_c.py", patterns)
    assert not dockerignored("csrc/rmux_codec.c", patterns)


EXAMPLES = ROOT / "contrib" / "config"


def filled_examples(directory: Path) -> dict[str, Path]:
    """The example configs with their blanks filled in, as an admin would, and the
    files they name made: what ``check-config`` must then accept."""
    fingerprint = keygen.generate(directory / "server.pem", directory / "server.key",
                                  ["tunnel.example.com"], 30)  # fmt: skip
    (directory / "office.secret").write_text(SECRET)
    (directory / "office.secret").chmod(0o600)
    server = (EXAMPLES / "server.toml").read_text().replace('secret = ""', f'secret = "{SECRET}"')
    client = (EXAMPLES / "client-office.toml").read_text()
    client = client.replace('tls-fingerprint = ""', f'tls-fingerprint = "{fingerprint}"')
    paths = {"server": directory / "server.toml", "client": directory / "client-office.toml"}
    paths["server"].write_text(server)
    paths["server"].chmod(0o600)  # it holds the clients' secrets
    paths["client"].write_text(client)
    return paths


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reactor_mux", "check-config", str(path)],
                          capture_output=True, text=True, timeout=30)  # fmt: skip


def test_the_example_configs_are_refused_until_filled_in_then_accepted(tmp_path: Path) -> None:
    """The blanks (secrets, the fingerprint) stop a copied example from running
    with a placeholder; filled in, both pass check-config."""
    for name in ("server.toml", "client-office.toml"):
        copy = tmp_path / name
        copy.write_text((EXAMPLES / name).read_text())
        copy.chmod(0o600)
        assert check_config(copy).returncode == 1
    for role, path in filled_examples(tmp_path).items():
        done = check_config(path)
        assert done.returncode == 0, done.stderr
        assert f"a valid {role} config file" in done.stdout


@pytest.mark.parametrize("role", UNITS)
def test_the_units_command_line_runs_the_example_config(role: str, tmp_path: Path) -> None:
    """ExecStart's options, given the example config, are what reactor-mux accepts."""
    file_name, _unit = UNITS[role]
    settings = unit_settings((SYSTEMD / file_name).read_text().replace("%i", INSTANCE))
    argv = shlex.split(settings["Service.ExecStart"][0])[1:]
    argv[argv.index("--config") + 1] = str(filled_examples(tmp_path)[role])
    args = cli.parse_arguments(argv)
    assert cli.checked(args) is not None
    assert args.control == Path(
        f"/run/reactor-mux/{'server' if role == 'server' else 'client-' + INSTANCE}/control.sock"
    )
