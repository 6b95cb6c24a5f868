"""The plain manifests in deploy/kubernetes: every document parses, the
Portcullis config embedded in them passes `portcullis check`, and the
pieces point at each other (config mount, Secret, ports, ingress-nginx
annotations)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
import yaml

from conftest import DEPLOY, KUBE_VERSIONS, SECRET_DIR, schema_problems
from test_chart import config_path_of, volume_at

FILES = sorted(p.name for p in DEPLOY.glob("*.yaml"))


def docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d is not None]


def find(name: str, kind: str, metadata_name: str | None = None) -> dict:
    found = [d for d in docs(name) if d["kind"] == kind and metadata_name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"{name}: expected one {kind} {metadata_name or ''}, got {len(found)}"
    return found[0]


def portcullis_pod(name: str) -> tuple[dict, dict]:
    for d in docs(name):
        if d["kind"] == "Deployment":
            pod = d["spec"]["template"]["spec"]
            for c in pod["containers"]:
                if c["name"] == "portcullis":
                    return pod, c
    raise AssertionError(f"{name}: no Deployment with a portcullis container")


def embedded_config(name: str) -> str:
    pod, container = portcullis_pod(name)
    volume, key = volume_at(pod, container, config_path_of(container))
    return find(name, "ConfigMap", volume["configMap"]["name"])["data"][key]


def test_there_are_examples():
    assert {"sidecar.yaml", "ingress-nginx.yaml"} <= set(FILES)
    assert (DEPLOY / "README.md").exists()


@pytest.mark.parametrize("name", FILES)
def test_every_document_parses_and_is_a_kubernetes_object(name):
    all_docs = docs(name)
    assert all_docs
    for d in all_docs:
        assert isinstance(d, dict), d
        assert d["apiVersion"] and d["kind"] and d["metadata"]["name"]
        assert d["metadata"]["namespace"] == "web"


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("name", FILES)
def test_every_document_matches_the_kubernetes_schema(name, version):
    assert [p for d in docs(name) for p in schema_problems(d, version)] == []


@pytest.mark.parametrize("name", FILES)
def test_embedded_config_passes_portcullis_check(name, check_config):
    text = embedded_config(name)
    out = check_config(text)
    assert out.returncode == 0, f"{name}: portcullis check refused:\n{text}\n{out.stderr}"


@pytest.mark.parametrize("name", FILES)
def test_pod_is_wired_like_the_chart(name):
    pod, container = portcullis_pod(name)
    config = yaml.safe_load(embedded_config(name))
    port = int(config["listen"].rsplit(":", 1)[1])
    assert config["listen"].startswith("0.0.0.0:")
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": port}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert pod["enableServiceLinks"] is False
    assert pod["terminationGracePeriodSeconds"] > 30  # default shutdown_grace
    sc = container["securityContext"]
    assert (sc["runAsNonRoot"], sc["runAsUser"], sc["readOnlyRootFilesystem"], sc["allowPrivilegeEscalation"]) == (True, 65532, True, False)
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["seccompProfile"] == {"type": "RuntimeDefault"}
    # Every file the config reads comes from the mounted Secret.
    for path in config["secret_files"] + [p["users_file"] for p in config["providers"] if "users_file" in p]:
        assert path.startswith(SECRET_DIR + "/")
        volume, _ = volume_at(pod, container, path)
        assert "secret" in volume
    # The Service sends traffic to Portcullis, never straight to an app container.
    for service in (d for d in docs(name) if d["kind"] == "Service"):
        for p in service["spec"]["ports"]:
            assert p["targetPort"] in ("http", port)


def test_sidecar_proxies_to_the_app_on_localhost():
    config = yaml.safe_load(embedded_config("sidecar.yaml"))
    upstream = urlsplit(config["upstream"]["url"])
    assert upstream.hostname == "127.0.0.1"
    pod, _ = portcullis_pod("sidecar.yaml")
    assert [c["name"] for c in pod["containers"]] == ["app", "portcullis"]
    app = pod["containers"][0]
    assert f"--port={upstream.port}" in app["args"]
    policy = find("sidecar.yaml", "NetworkPolicy")
    assert policy["spec"]["ingress"] == [{"ports": [{"port": int(config["listen"].rsplit(":", 1)[1]), "protocol": "TCP"}]}]


def test_ingress_nginx_annotations_point_at_portcullis():
    config = yaml.safe_load(embedded_config("ingress-nginx.yaml"))
    assert "upstream" not in config, "forward-auth only"
    base = config.get("base_path", "/auth")
    service = find("ingress-nginx.yaml", "Service", "portcullis")
    annotations = find("ingress-nginx.yaml", "Ingress", "app")["metadata"]["annotations"]
    assert annotations == {
        "nginx.ingress.kubernetes.io/auth-url": "http://portcullis.web.svc.cluster.local:4180/auth/auth-request",
        "nginx.ingress.kubernetes.io/auth-signin": "https://$host/auth/signin?callbackUrl=$escaped_request_uri",
        "nginx.ingress.kubernetes.io/auth-response-headers": "X-Auth-Request-User,X-Auth-Request-Email,X-Auth-Request-Groups",
    }
    auth_url = urlsplit(annotations["nginx.ingress.kubernetes.io/auth-url"])
    meta = service["metadata"]
    assert auth_url.hostname == f"{meta['name']}.{meta['namespace']}.svc.cluster.local"
    assert auth_url.port == service["spec"]["ports"][0]["port"]
    assert auth_url.path == f"{base}/auth-request"
    # The sign-in pages are served by Portcullis on the app's host.
    pages = find("ingress-nginx.yaml", "Ingress", "portcullis")
    assert "annotations" not in pages["metadata"]
    (rule,) = pages["spec"]["rules"]
    (path,) = rule["http"]["paths"]
    assert path["path"] == base and path["backend"]["service"]["name"] == "portcullis"
    assert f"https://{rule['host']}" == config["public_url"]
    # ingress-nginx's pods must be trusted for X-Original-URL.
    assert any(not t.startswith(("127.", "::1")) for t in config["trusted_proxies"])
