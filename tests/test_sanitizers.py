"""The C codec under AddressSanitizer and UndefinedBehaviorSanitizer.

Uses gcc's sanitizer runtimes (a compiler is needed anyway for the C backend):

* the fuzz corpus (tests/fuzz_corpus/) through csrc/fuzz/fuzz_codec.c built as
  a plain replay program, and random programs through csrc/fuzz/fuzz_plane.c
  (the data plane over socket pairs);
* the C-level boundary tests (csrc/tests/test_boundary.c), one case each: what
  the Python wrapper never does to the C API (short arrays, wrong lengths,
  huge buffers) and allocations made to fail;
* the codec, differential and session tests, run in a subprocess against a
  copy of the package whose cffi module was rebuilt with the sanitizers, with
  libasan preloaded into Python.

Any report aborts the run (-fno-sanitize-recover=all), which fails the test.
A coverage-guided libFuzzer run is the slow test at the end (docs/fuzzing.md).
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.codec_independent

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "fuzz_corpus"
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]


def gcc_runtime(name: str) -> str:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    path = subprocess.run(
        ["gcc", f"-print-file-name={name}"], capture_output=True, text=True
    ).stdout.strip()
    if not os.path.isabs(path) or not os.path.exists(path):
        pytest.skip(f"gcc has no {name}")
    return path


def test_fuzz_corpus_replays_clean_under_asan_and_ubsan(tmp_path):
    gcc_runtime("libasan.so")
    replay = tmp_path / "replay"
    subprocess.run(
        ["gcc", "-O1", "-g", *SANITIZE, "-DRMUX_REPLAY_MAIN", f"-I{ROOT / 'csrc'}",
         str(ROOT / "csrc" / "fuzz" / "fuzz_codec.c"), str(ROOT / "csrc" / "rmux_codec.c"),
         "-o", str(replay)],
        check=True,
    )  # fmt: skip
    inputs = sorted(str(p) for p in CORPUS.iterdir())
    result = subprocess.run([str(replay), *inputs], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"replayed {len(inputs)} inputs" in result.stdout


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the data plane needs epoll")
def test_the_data_plane_runs_random_programs_clean_under_asan_and_ubsan(tmp_path):
    """csrc/fuzz/fuzz_plane.c as a plain program: 400 random programs of plane
    operations over socket pairs (its invariants check every byte and counter)."""
    gcc_runtime("libasan.so")
    program = tmp_path / "fuzz_plane"
    subprocess.run(
        ["gcc", "-std=c99", "-O1", "-g", *SANITIZE, "-DRMUX_REPLAY_MAIN", f"-I{ROOT / 'csrc'}",
         str(ROOT / "csrc" / "fuzz" / "fuzz_plane.c"), str(ROOT / "csrc" / "rmux_codec.c"),
         str(ROOT / "csrc" / "rmux_plane.c"), str(ROOT / "csrc" / "rmux_tls.c"), "-ldl",
         "-o", str(program)],
        check=True,
    )  # fmt: skip
    result = subprocess.run([str(program), "--random", "400", "22"], capture_output=True,
                            text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    assert "ran 400 random programs" in result.stdout


BOUNDARY_CASES = [
    "decode_records_capacity",
    "decode_buffer_length",
    "max_buffer",
    "append_length",
    "allocation_failure",
]


@pytest.fixture(scope="module")
def boundary_tests(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    gcc_runtime("libasan.so")
    program = tmp_path_factory.mktemp("boundary") / "test_boundary"
    subprocess.run(
        ["gcc", "-O1", "-g", "-std=c99", "-Wall", "-Wextra", *SANITIZE, f"-I{ROOT / 'csrc'}",
         str(ROOT / "csrc" / "tests" / "test_boundary.c"), "-o", str(program)],
        check=True,
    )  # fmt: skip
    return program


def test_every_boundary_case_is_run(boundary_tests):
    listed = subprocess.run([str(boundary_tests), "--list"], capture_output=True, text=True)
    assert listed.stdout.split() == BOUNDARY_CASES


@pytest.mark.parametrize("case", BOUNDARY_CASES)
def test_c_boundary_under_asan_and_ubsan(boundary_tests, case):
    result = subprocess.run([str(boundary_tests), case], capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    if result.returncode == 77:
        pytest.skip(result.stdout.strip())
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == f"ok {case}\n"


def test_codec_tests_pass_against_a_sanitized_build(tmp_path):
    libasan = gcc_runtime("libasan.so")
    source = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.so", "*.o", "_ccodec.c")
    shutil.copytree(ROOT / "reactor_mux", source / "reactor_mux", ignore=ignore)
    shutil.copytree(ROOT / "csrc", source / "csrc", ignore=ignore)
    shutil.copy(ROOT / "build_codec.py", source)
    flags = " ".join([*SANITIZE, "-g", "-O1"])
    build_env = {**os.environ, "CFLAGS": flags, "LDFLAGS": flags}
    subprocess.run([sys.executable, "build_codec.py"], cwd=source, env=build_env, check=True,
                   capture_output=True, timeout=300)  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": str(source),
        "LD_PRELOAD": libasan,
        "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1",
        "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
        "REACTOR_MUX_CODEC": "c",
    }
    probe = subprocess.run(
        [sys.executable, "-c", "import reactor_mux.codec._ccodec as m; print(m.__file__)"],
        cwd=source, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.startswith(str(source)), "the sanitized build was not the one imported"
    tests = [ROOT / "tests" / name for name in
             ("test_codec_differential.py", "test_codec.py", "test_session.py",
              "test_plane.py", "test_plane_tls.py", "test_plane_wait.py")]  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "--capture=sys", "-p", "no:cacheprovider",
         "-p", "no:warnings", *map(str, tests)],
        cwd=source, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    reports = [line for line in result.stderr.splitlines()
               if "Sanitizer" in line or "runtime error" in line or "SUMMARY" in line]  # fmt: skip
    assert result.returncode == 0, "\n".join(reports[:20]) or result.stdout[-4000:]
    assert "ERROR: AddressSanitizer" not in result.stderr
    assert "runtime error" not in result.stderr
    skipped = [line for line in result.stdout.splitlines() if line.startswith("SKIPPED")]
    assert not [line for line in skipped if "test_plane" in line], "the plane did not run sanitized"


@pytest.mark.slow
def test_short_coverage_guided_fuzz_run(tmp_path):
    """60 s of libFuzzer over a copy of the corpus (needs clang with libFuzzer)."""
    clang = shutil.which("clang") or shutil.which("clang-14")
    if clang is None:
        pytest.skip("clang is not installed")
    fuzzer = tmp_path / "fuzz_codec"
    subprocess.run(
        [clang, "-g", "-O1", "-fsanitize=fuzzer,address,undefined", "-fno-sanitize-recover=all",
         f"-I{ROOT / 'csrc'}", str(ROOT / "csrc" / "fuzz" / "fuzz_codec.c"),
         str(ROOT / "csrc" / "rmux_codec.c"), "-o", str(fuzzer)],
        check=True,
    )  # fmt: skip
    corpus = tmp_path / "corpus"
    shutil.copytree(CORPUS, corpus)
    result = subprocess.run(
        [str(fuzzer), "-max_total_time=60", "-max_len=70000", str(corpus)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
