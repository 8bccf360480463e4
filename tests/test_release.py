"""The release path, as a packager and a user meet it: sdist, wheels, installs.

``python -m build --sdist`` runs on a clean copy of the tree; the sdist is
unpacked and ``python -m build --wheel`` runs on *that*, so a file the sdist
leaves out (build_codec.py, a header) fails here rather than on the machine of
whoever installs the published sdist.  Two wheels come from it: one with a
compiler, which must hold the codec built for the stable ABI and be tagged
``cp310-abi3`` (one wheel per platform for every CPython from 3.10), and one
with ``CC=false``, which must hold no compiled module and still work.  Each
goes into a fresh venv through pip, and must name its codec in ``--version``
and pass the demo.  The builds are isolated, as a packager's are: setuptools
and cffi come from the package index, not from this venv.

That is a few processes of several seconds each, so it runs once per suite
(in the ``REACTOR_MUX_CODEC=c`` pass) and overlaps what does not depend on
each other: the venvs are made while the sdist builds, and the two wheels
build, and then install, side by side.
"""

from __future__ import annotations

import email.message
import email.parser
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import zipfile
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
KINDS = ("c", "python")  # the codec each wheel must carry: built with a compiler, or CC=false
COMPILED = "reactor_mux/codec/_ccodec.abi3.so"
EXPECTED_CLASSIFIERS = {
    "Operating System :: POSIX",
    "Operating System :: POSIX :: Linux",
    "Programming Language :: Python :: 3 :: Only",
    *(f"Programming Language :: Python :: 3.{minor}" for minor in range(10, 14)),
    "Topic :: System :: Networking",
}

pytestmark = pytest.mark.codec_independent


def clean_copy(target: pathlib.Path) -> None:
    """The working tree minus ignored files (no build/ or compiled module to reuse)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
    )
    if listed.returncode == 0 and listed.stdout:
        for name in listed.stdout.decode().split("\0"):
            if name and (ROOT / name).is_file():
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, target / name)
        return
    ignore = shutil.ignore_patterns(
        ".git",
        ".venv",
        "build",
        "dist",
        "*.so",
        "*.o",
        "__pycache__",
        "*.egg-info",
        ".hypothesis",
        ".pytest_cache",
        "_ccodec.c",
    )
    shutil.copytree(ROOT, target, ignore=ignore, dirs_exist_ok=True)


def user_env(**extra: str) -> dict[str, str]:
    """This environment without the suite's codec choice, plus ``extra``."""
    env = {key: value for key, value in os.environ.items() if key != "REACTOR_MUX_CODEC"}
    return {**env, **extra}


def run(
    command: list[str], cwd: pathlib.Path | None = None, **extra_env: str
) -> subprocess.CompletedProcess[str]:
    """Run one step of the release; a failure shows the end of its output."""
    result = subprocess.run(
        command, cwd=cwd, env=user_env(**extra_env), capture_output=True, text=True, timeout=600
    )
    if result.returncode != 0:
        output = f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        pytest.fail(f"{command} exited {result.returncode}:\n{output}")
    return result


def only(paths: list[pathlib.Path]) -> pathlib.Path:
    """The one path of a list that must hold exactly one (one sdist, one wheel...)."""
    assert len(paths) == 1, paths
    return paths[0]


@dataclass
class Release:
    """What the release fixture made, for the tests to inspect and run."""

    sdist: pathlib.Path
    wheels: dict[str, pathlib.Path]  # by the codec the wheel carries
    venvs: dict[str, pathlib.Path]  # each with its wheel installed


def make_venv(path: pathlib.Path) -> pathlib.Path:
    """A fresh venv, empty but for the standard library.

    It gets no pip of its own: ensurepip costs about 5 s of CPU per venv on
    this suite's 2 cores, and the pip running the suite installs into it just
    as well through ``--python`` (pip >= 22.3), the way ``build`` fills its
    isolated environments.
    """
    run([sys.executable, "-m", "venv", "--without-pip", str(path)])
    return path


def build_and_install(
    kind: str, sdist: pathlib.Path, venv: Future[pathlib.Path], work: pathlib.Path
) -> pathlib.Path:
    """Unpack the sdist, build a wheel from it, install that into ``venv``."""
    unpacked = work / f"unpacked-{kind}"
    with tarfile.open(sdist) as archive:
        if hasattr(tarfile, "data_filter"):  # 3.12+, and later 3.10/3.11 patch releases
            archive.extractall(unpacked, filter="data")
        else:
            archive.extractall(unpacked)
    source = only(list(unpacked.iterdir()))
    outdir = work / f"wheel-{kind}"
    compiler = {} if kind == "c" else {"CC": "false"}  # every compile fails
    run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(outdir), str(source)], **compiler
    )
    wheel = only(list(outdir.glob("*.whl")))
    target = venv.result() / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", str(target), "install", str(wheel)])
    return wheel


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Release:
    """Build the sdist, then both wheels from it, each installed into its own venv."""
    work = tmp_path_factory.mktemp("release")
    source = work / "source"
    source.mkdir()
    clean_copy(source)
    venv_paths = {kind: work / f"venv-{kind}" for kind in KINDS}
    with ThreadPoolExecutor(max_workers=4) as pool:
        venvs = {kind: pool.submit(make_venv, path) for kind, path in venv_paths.items()}
        run(
            [sys.executable, "-m", "build", "--sdist", "--outdir", str(work / "sdist"), str(source)]
        )
        sdist = only(list((work / "sdist").glob("*.tar.gz")))
        lanes = {
            kind: pool.submit(build_and_install, kind, sdist, venvs[kind], work) for kind in KINDS
        }
        wheels = {kind: lane.result() for kind, lane in lanes.items()}
    return Release(sdist, wheels, venv_paths)


def wheel_names(wheel: pathlib.Path) -> list[str]:
    """Every path inside a wheel."""
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def wheel_metadata(wheel: pathlib.Path) -> email.message.Message:
    """The wheel's METADATA file: what pip and a package index read."""
    with zipfile.ZipFile(wheel) as archive:
        name = only(
            [pathlib.Path(n) for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        )
        return email.parser.Parser().parsestr(archive.read(str(name)).decode())


def test_the_sdist_carries_what_a_wheel_build_needs(release: Release) -> None:
    """Without build_codec.py or the C sources no wheel can be built from the sdist."""
    with tarfile.open(release.sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    needed = [
        "build_codec.py",
        "setup.py",
        "pyproject.toml",
        "csrc/rmux_codec.c",
        "csrc/rmux_codec.h",
        "LICENSE",
        "README.md",
        "reactor_mux/codec/_python.py",
    ]
    for name in needed:
        assert name in names, f"{name} missing from {release.sdist.name}"
    artefacts = [name for name in names if name.endswith((".so", ".o", ".pyc"))]
    assert not artefacts, artefacts


def test_the_sdist_carries_the_service_files(release: Release) -> None:
    """A distribution packages the systemd units from the sdist, not from git."""
    with tarfile.open(release.sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    for path in sorted((ROOT / "contrib").rglob("*")):
        if path.is_file():
            name = path.relative_to(ROOT).as_posix()
            assert name in names, f"{name} missing from {release.sdist.name}"


def test_the_compiled_wheel_is_abi3_and_holds_the_codec(release: Release) -> None:
    """One wheel per platform serves every CPython >= 3.10 only if it is cp310-abi3."""
    wheel = release.wheels["c"]
    assert "-cp310-abi3-" in wheel.name, wheel.name
    assert COMPILED in wheel_names(wheel)


def test_the_wheel_built_without_a_compiler_holds_no_compiled_module(release: Release) -> None:
    """``CC=false`` makes the optional extension fail; the wheel must still be made."""
    names = wheel_names(release.wheels["python"])
    assert not [name for name in names if "_ccodec" in name], names
    assert "reactor_mux/codec/_python.py" in names


def test_metadata_says_mit_and_names_only_the_runtime_dependencies(release: Release) -> None:
    """What pip and a package index read: license, classifiers, and dependencies.

    A user's install pulls in cffi (the codec), cryptography (keygen),
    prometheus_client (--metrics), wsproto (WebSocket channels) and, on
    Python 3.10 only, tomli (TOML files).  ruff and mypy are the developers'
    tools: they may appear only under the ``dev`` extra.
    """
    for wheel in release.wheels.values():
        metadata = wheel_metadata(wheel)
        assert metadata["License-Expression"] == "MIT"
        classifiers = set(metadata.get_all("Classifier") or [])
        assert not EXPECTED_CLASSIFIERS - classifiers, EXPECTED_CLASSIFIERS - classifiers
        requires = metadata.get_all("Requires-Dist") or []
        runtime = sorted(spec for spec in requires if "extra ==" not in spec)
        assert runtime == [
            "cffi>=1.16",
            "cryptography>=42",
            "prometheus_client>=0.20",
            'tomli>=1.1; python_version < "3.11"',
            "wsproto>=1.2",
        ]
        for tool in ("ruff", "mypy"):
            specs = [spec for spec in requires if spec.startswith(tool)]
            assert specs and all(spec.endswith('extra == "dev"') for spec in specs), specs
        license_text = [
            name for name in wheel_names(wheel) if name.endswith(".dist-info/licenses/LICENSE")
        ]
        assert license_text, wheel_names(wheel)


@pytest.mark.parametrize("kind", KINDS)
def test_an_installed_wheel_names_its_codec_and_passes_the_demo(
    release: Release, kind: str
) -> None:
    """The installed command works from the venv, with the codec its wheel carries."""
    command = str(release.venvs[kind] / "bin" / "reactor-mux")
    version = run([command, "--version"], cwd=release.venvs[kind])
    assert f"(codec: {kind})" in version.stdout
    demo = run([command, "demo", "--size", "4"], cwd=release.venvs[kind])
    assert f"codec {kind}" in demo.stdout and "demo passed" in demo.stdout, demo.stdout


def test_demanding_the_missing_compiled_codec_is_a_one_line_error(release: Release) -> None:
    """``REACTOR_MUX_CODEC=c`` is how CI notices a build that fell back to Python."""
    command = str(release.venvs["python"] / "bin" / "reactor-mux")
    demanded = subprocess.run(
        [command, "--version"],
        cwd=release.venvs["python"],
        env=user_env(REACTOR_MUX_CODEC="c"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert demanded.returncode == 2
    assert "REACTOR_MUX_CODEC=c but the compiled codec is unavailable" in demanded.stderr
    assert "Traceback" not in demanded.stderr
    assert len(demanded.stderr.strip().splitlines()) == 1, demanded.stderr
