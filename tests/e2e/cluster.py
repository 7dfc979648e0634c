"""Helpers for the e2e suite: kubectl, polling, the helm client, agent HTTP through `kubectl exec`.

Everything goes through kubectl (and `kubectl exec` into pods for the agents' HTTP API), so the suite runs the
same against the testbed cluster (tools/testcluster/e2e.sh) and against any cluster a user points KUBECONFIG at:
nothing assumes that pod IPs are reachable from the test process.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "gossip-operator"
EXAMPLE = ROOT / "examples" / "gossipcluster.yaml"
GROUP = "gossip-operator.dev"
CRD_NAME = f"gossipclusters.{GROUP}"
AGENT_PORT = 7946
_T = TypeVar("_T")

# A poll interval well under the operator's status interval (the chart is installed with 2s), and generous
# deadlines: the suite must pass on a busy 2-core machine, so only "eventually" is asserted, never "within".
POLL = 1.0
DEADLINE = float(os.environ.get("GOSSIP_E2E_DEADLINE", "300"))


class KubectlError(AssertionError):
    def __init__(self, args: tuple[str, ...], returncode: int, stderr: str) -> None:
        super().__init__(f"kubectl {' '.join(args)} (exit {returncode}): {stderr.strip()}")
        self.stderr = stderr


def kubectl(*args: str, stdin: str | None = None, check: bool = True, timeout: float = 120) -> str:
    result = subprocess.run(["kubectl", *args], input=stdin, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise KubectlError(args, result.returncode, result.stderr)
    return result.stdout


def kubectl_result(*args: str, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["kubectl", *args], input=stdin, capture_output=True, text=True, timeout=timeout)


def get(kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
    ns = ["-n", namespace] if namespace else []
    result = kubectl_result("get", kind, name, *ns, "-o", "json")
    if result.returncode != 0:
        if "NotFound" in result.stderr or "not found" in result.stderr:
            return None
        raise KubectlError(("get", kind, name), result.returncode, result.stderr)
    obj: dict[str, Any] = json.loads(result.stdout)
    return obj


def items(kind: str, namespace: str | None = None, selector: str | None = None) -> list[dict[str, Any]]:
    args = ["get", kind, "-o", "json"]
    args += ["-n", namespace] if namespace else ["-A"]
    if selector:
        args += ["-l", selector]
    found: list[dict[str, Any]] = json.loads(kubectl(*args))["items"]
    return found


def eventually(predicate: Callable[[], _T], *, what: str, timeout: float = DEADLINE,
               interval: float = POLL, describe: Callable[[], Any] | None = None) -> _T:
    """Poll until predicate() is truthy; on timeout, fail naming what was awaited (and the last state seen)."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except (KubectlError, subprocess.TimeoutExpired, json.JSONDecodeError) as exc:  # transient while rolling
            last_error = exc
        if time.monotonic() >= deadline:
            state = describe() if describe else None
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}"
                                 + (f"; last error: {last_error}" if last_error else "")
                                 + (f"; state: {state}" if state is not None else ""))
        time.sleep(interval)


def condition(obj: Mapping[str, Any] | None, ctype: str) -> dict[str, Any]:
    conditions = ((obj or {}).get("status") or {}).get("conditions") or []
    found: dict[str, Any] = next((c for c in conditions if c.get("type") == ctype), {})
    return found


def status(obj: Mapping[str, Any] | None) -> dict[str, Any]:
    found: dict[str, Any] = (obj or {}).get("status") or {}
    return found


class Timings:
    """Durations measured by the suite: printed at the end of the run and appended to $GOSSIP_E2E_TIMINGS."""

    def __init__(self) -> None:
        self.rows: list[str] = []

    def record(self, what: str, seconds: float) -> None:
        self._add(f"{seconds:7.1f}s  {what}")

    def note(self, what: str) -> None:
        """Something observed that is not a duration (a count, the message a user saw)."""
        self._add(f"{'':8}  {what}")

    def _add(self, line: str) -> None:
        self.rows.append(line)
        path = os.environ.get("GOSSIP_E2E_TIMINGS")
        if path:
            with open(path, "a", encoding="utf-8") as f:
                f.write(line + "\n")


TIMINGS = Timings()


@dataclass(frozen=True)
class Images:
    agent: str
    operator: str
    pull_policy: str

    @staticmethod
    def from_env() -> Images:
        return Images(agent=os.environ.get("GOSSIP_E2E_AGENT_IMAGE", ""),
                      operator=os.environ.get("GOSSIP_E2E_OPERATOR_IMAGE", ""),
                      pull_policy=os.environ.get("GOSSIP_E2E_PULL_POLICY", "IfNotPresent"))


def helm_binary() -> str | None:
    return os.environ.get("GOSSIP_E2E_HELM") or shutil.which("helm")


def server_version() -> str:
    info = json.loads(kubectl("version", "-o", "json"))["serverVersion"]
    return str(info["gitVersion"]).lstrip("v").split("+")[0].split("-")[0]


def served(group_version: str) -> bool:
    return group_version in kubectl("api-versions").split()


def parse_manifest(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


class Helm:
    """The real helm client ($GOSSIP_E2E_HELM, else `helm` on PATH) against $KUBECONFIG, with its cache, config
    and data in a private directory (no user repositories or plugins leak in)."""

    def __init__(self, home: Path) -> None:
        binary = helm_binary()
        assert binary, "helm not found (set GOSSIP_E2E_HELM or put helm on PATH; tools/get-helm.py fetches one)"
        self.binary = binary
        self.env = {**os.environ, "HELM_CACHE_HOME": str(home / "cache"), "HELM_CONFIG_HOME": str(home / "config"),
                    "HELM_DATA_HOME": str(home / "data")}

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.binary, *args], capture_output=True, text=True, env=self.env, timeout=timeout)

    def check(self, *args: str, timeout: float = 120) -> str:
        result = self.run(*args, timeout=timeout)
        assert result.returncode == 0, f"helm {' '.join(args[:2])} failed (exit {result.returncode}): " \
                                       f"{result.stderr.strip()}"
        return result.stdout

    def major(self) -> int:
        version = self.check("version", "--template", "{{.Version}}").strip()  # e.g. v3.17.2
        return int(version.lstrip("v").split(".")[0])

    def install_flags(self, kube_version: str) -> list[str]:
        """What a user passes for this helm and server (docs/deploy.md "Kubernetes versions"): Helm 4 installs
        crds/ by server-side apply, which a server that does not know every field of the CRD's schema refuses
        (`x-kubernetes-validations: field not declared in schema` on 1.20; `fieldPath`/`reason` need 1.28), so
        there it must create the objects client-side, as Helm 3 always does."""
        minor = int(kube_version.split(".")[1])
        return ["--server-side=false"] if self.major() >= 4 and minor < 28 else []

    @staticmethod
    def values(images: Images) -> list[str]:
        """The chart's values for the images under test, with short operator intervals (the suite waits less)."""
        repository, _, tag = images.operator.rpartition(":")
        return ["--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
                "--set", f"image.pullPolicy={images.pull_policy}",
                "--set", "operator.settings.statusInterval=2s", "--set", "operator.settings.resyncInterval=15s",
                "--set", "operator.settings.retryBackoff=2s"]


# The agents' HTTP API from inside a pod (the agent image has Python): METHOD URL [BODY] -> status line, body.
# Runs inside an agent pod: the operator mounts the cluster's API tokens there (the API answers 401 without
# one), so this also proves the Secret is generated, mounted and read.
_HTTP = """
import os, sys, urllib.request as u, urllib.error as e
method, url = sys.argv[1], sys.argv[2]
data = sys.argv[3].encode() if len(sys.argv) > 3 else None
headers = {}
tokens = "/etc/gossip/api-tokens/tokens"
if os.path.exists(tokens):
    for line in open(tokens):
        if line.startswith("write:"):
            headers["Authorization"] = "Bearer " + line[len("write:"):].strip()
req = u.Request(url, data=data, method=method, headers=headers)
try:
    r = u.urlopen(req, timeout=15); code, body = r.status, r.read()
except e.HTTPError as x:
    code, body = x.code, x.read()
print(code); sys.stdout.write(body.decode(errors="replace"))
"""


def agent_http(namespace: str, pod: str, method: str, path: str, body: str | None = None, *,
               host: str = "127.0.0.1", port: int = AGENT_PORT, container: str = "agent") -> tuple[int, str]:
    args = ["exec", "-n", namespace, pod, "-c", container, "--", "python3", "-c", _HTTP, method,
            f"http://{host}:{port}{path}"]
    if body is not None:
        args.append(body)
    out = kubectl(*args, timeout=60)
    code, _, text = out.partition("\n")
    return int(code), text


def api_token(namespace: str, cluster: str, scope: str = "write") -> str:
    """A token of the cluster's API tokens Secret (NAME-api-tokens, key `tokens`: `scope:token` lines)."""
    encoded = kubectl("get", "secret", f"{cluster}-api-tokens", "-n", namespace, "-o", "jsonpath={.data.tokens}")
    for line in base64.b64decode(encoded).decode().splitlines():
        if line.startswith(f"{scope}:"):
            return line[len(scope) + 1:].strip()
    raise AssertionError(f"no {scope} token in {cluster}-api-tokens")


def agent_json(namespace: str, pod: str, path: str) -> dict[str, Any]:
    code, text = agent_http(namespace, pod, "GET", path)
    assert code == 200, f"GET {path} at {pod}: {code} {text}"
    found: dict[str, Any] = json.loads(text)
    return found


def members(namespace: str, pod: str) -> dict[str, str]:
    """name -> state in one agent's member table."""
    return {m["name"]: m["state"] for m in agent_json(namespace, pod, "/v1/members")["members"]}
