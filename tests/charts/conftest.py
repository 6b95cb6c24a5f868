"""Shared fixtures of the Kubernetes tests: the chart rendered by a real
Helm 4 engine (helm-python-sdk, no helm binary), and `portcullis check`
run on the configs that the chart and deploy/kubernetes produce.

The Portcullis binary is $PORTCULLIS_BIN, else target/debug/portcullis
(tests/run builds it before running these tests).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import helm_python as helm
import pytest
import yaml
from kubernetes_validate import utils as k8s_schema

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "portcullis"
DEPLOY = ROOT / "deploy" / "kubernetes"
# Where the chart and the examples mount the Secret.
SECRET_DIR = "/etc/portcullis/secrets"


def portcullis_bin() -> Path:
    if os.environ.get("PORTCULLIS_BIN"):
        return Path(os.environ["PORTCULLIS_BIN"])
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return target / "debug" / "portcullis"


def run_portcullis(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    binary = portcullis_bin()
    if not binary.exists():
        pytest.fail(f"{binary} is missing: run `cargo build` (or set PORTCULLIS_BIN)")
    # Only the file counts: no PORTCULLIS_* variable of the caller's.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTCULLIS_")}
    return subprocess.run(
        [str(binary), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@pytest.fixture(scope="session")
def secret_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files a mounted Secret would hold: a session secret, a previous
    one, an OIDC client secret and a users file with a real argon2id hash."""
    d = tmp_path_factory.mktemp("secrets")
    for key in ("cookie-secret", "cookie-secret-previous"):
        out = run_portcullis("gen-secret")
        assert out.returncode == 0, out.stderr
        (d / key).write_text(out.stdout)
    (d / "corp-client-secret").write_text("s3cr3t\n")
    hashed = run_portcullis("hash-password", stdin="a long test password")
    assert hashed.returncode == 0, hashed.stderr
    users = {"users": [{"email": "alice@example.com", "password_hash": hashed.stdout.strip()}]}
    (d / "users.yaml").write_text(yaml.safe_dump(users))
    return d


@pytest.fixture(scope="session")
def check_config(secret_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """`portcullis check` on a config's text, the Secret's mount path
    pointed at the materialised files. Returns the CompletedProcess."""

    def check(text: str) -> subprocess.CompletedProcess[str]:
        rewritten = text.replace(SECRET_DIR, str(secret_dir))
        path = tmp_path_factory.mktemp("config") / "portcullis.yaml"
        path.write_text(rewritten)
        return run_portcullis("check", "--config", str(path))

    return check


# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the
# newest kubernetes-validate knows.
KUBE_VERSIONS = ["1.25.0", max(k8s_schema.all_versions(), key=lambda v: tuple(map(int, v.split("."))))]
# Custom resources, which Kubernetes' own schemas do not cover.
CUSTOM_API_GROUPS = ("monitoring.coreos.com/",)


def schema_problems(doc: dict, version: str) -> list[str]:
    """What Kubernetes `version`'s OpenAPI schema (strict: no unknown
    fields) finds wrong with `doc`; custom resources are skipped."""
    if doc["apiVersion"].startswith(CUSTOM_API_GROUPS):
        return []
    try:
        k8s_schema.validate(doc, version, strict=True)
    except k8s_schema.ValidationError as e:
        where = ".".join(str(p) for p in e.path)
        return [f"{doc['kind']}/{doc['metadata']['name']} {where}: {e.message} (Kubernetes {e.version})"]
    except k8s_schema.SchemaNotFoundError as e:
        return [e.message]
    return []


class Rendered:
    """A chart render: every manifest parsed, by kind and name."""

    def __init__(self, manifests: dict[str, str]) -> None:
        self.files = manifests
        self.docs: list[dict] = []
        for name, text in sorted(manifests.items()):
            if name.endswith("NOTES.txt"):
                continue
            self.docs.extend(d for d in yaml.safe_load_all(text) if d)

    def kinds(self) -> list[str]:
        return sorted(d["kind"] for d in self.docs)

    def all(self, kind: str) -> list[dict]:
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind: str) -> dict:
        found = self.all(kind)
        assert len(found) == 1, f"expected one {kind}, got {len(found)}: {self.kinds()}"
        return found[0]

    @property
    def deployment(self) -> dict:
        return self.one("Deployment")

    @property
    def pod(self) -> dict:
        return self.deployment["spec"]["template"]["spec"]

    def container(self, name: str = "portcullis") -> dict:
        (c,) = [c for c in self.pod["containers"] if c["name"] == name]
        return c

    @property
    def config_text(self) -> str:
        return self.one("ConfigMap")["data"]["portcullis.yaml"]

    @property
    def config(self) -> dict:
        return yaml.safe_load(self.config_text)


@pytest.fixture(scope="session")
def chart():
    with helm.Chart.load(CHART) as c:
        yield c


@pytest.fixture(scope="session")
def render(chart):
    def do(values: dict | None = None, **kw) -> Rendered:
        kw.setdefault("name", "portcullis")
        kw.setdefault("namespace", "web")
        return Rendered(chart.render(values or {}, **kw))

    return do
