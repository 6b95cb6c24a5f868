"""The Helm chart (charts/portcullis), linted and rendered by a real Helm 4
engine, its manifests checked field by field, and the Portcullis config it
renders validated by `portcullis check`."""

from __future__ import annotations

import posixpath
import re

import helm_python as helm
import pytest
import yaml

from conftest import CHART, KUBE_VERSIONS, SECRET_DIR, schema_problems

SIDECAR = {
    "sidecar": {
        "enabled": True,
        "appPort": 3000,
        "app": {"name": "app", "image": "ghcr.io/example/app:1.2.3", "args": ["--listen=127.0.0.1:3000"]},
    },
    "ingress": {"enabled": True, "hosts": [{"host": "app.example.com", "paths": [{"path": "/", "pathType": "Prefix"}]}]},
}
OIDC = {
    "config": {
        "public_url": "https://app.example.com",
        "providers": [
            {"type": "credentials", "users_file": f"{SECRET_DIR}/users.yaml"},
            {"type": "oidc", "id": "corp", "issuer": "https://login.example.com/realms/corp", "client_id": "portcullis"},
        ],
    },
    "existingSecret": {"clientSecretKey": "corp-client-secret", "previousCookieSecretKey": "cookie-secret-previous"},
}
OIDC_PROVIDER_ONLY = {
    "config": {"providers": [{"type": "oidc", "issuer": "https://login.example.com", "client_id": "portcullis"}]}
}
SCALED = {
    "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 6, "targetMemoryUtilizationPercentage": 75},
    "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
}
VARIANTS = {"default": {}, "replicas3": {"replicaCount": 3}, "scaled": SCALED, "sidecar": SIDECAR, "oidc": OIDC}


def shown(report: dict) -> str:
    return "\n".join(f"{m['severity']} {m['path']}: {m['error']}" for m in report["messages"])


# --- lint ---------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_lint_passes_strict(variant):
    report = helm.lint(CHART, VARIANTS[variant], strict=True)
    assert report["total_charts_linted"] == 1
    assert report["errors"] == [], shown(report)
    # Severity 2 is a warning, 3 an error; only infos ("icon is recommended") may remain.
    assert [m for m in report["messages"] if m["severity"] >= 2] == [], shown(report)


def test_lint_reports_schema_errors():
    report = helm.lint(CHART, {"replicaCont": 3})
    assert any("replicaCont" in e for e in report["errors"]), shown(report)


# --- values.schema.json ----------------------------------------------------


def test_values_file_with_a_typo_in_a_top_level_key_fails(chart, tmp_path):
    values_file = tmp_path / "values.yaml"
    values_file.write_text("replicaCount: 2\nexistingSecrett:\n  name: portcullis\n")
    values = helm.values_from_yaml(values_file.read_text())
    with pytest.raises(helm.HelmValuesError, match="existingSecrett"):
        chart.validate_schema(values)
    # An install or `helm template` refuses it the same way.
    with pytest.raises(helm.HelmValuesError, match="existingSecrett"):
        chart.render(values, name="portcullis")


@pytest.mark.parametrize(
    "values, key",
    [
        ({"image": {"tagg": "1.0"}}, "tagg"),
        ({"existingSecret": {"cookieSecret": "x"}}, "cookieSecret"),
        ({"sidecar": {"enable": True}}, "enable"),
        ({"serviceMonitor": {"path": "/m"}}, "path"),
        ({"replicaCount": "three"}, "replicaCount"),
        ({"service": {"type": "Nodeport"}}, "type"),
    ],
)
def test_schema_refuses_typos_in_the_charts_own_sections(chart, values, key):
    with pytest.raises(helm.HelmValuesError, match=key):
        chart.validate_schema(values)


@pytest.mark.parametrize("variant", VARIANTS)
def test_schema_accepts_the_documented_values(chart, variant):
    chart.validate_schema(VARIANTS[variant])
    chart.validate_schema(chart.values)


# --- what renders ------------------------------------------------------------


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_manifest_matches_the_kubernetes_schema(render, variant, version):
    values = dict(VARIANTS[variant])
    values.setdefault("ingress", {"enabled": True})
    r = render(values)
    problems = [p for doc in r.docs for p in schema_problems(doc, version)]
    assert problems == []


def test_default_render(render):
    r = render()
    assert r.kinds() == ["ConfigMap", "Deployment", "Service", "ServiceAccount"]
    assert r.deployment["spec"]["replicas"] == 1
    for doc in r.docs:
        assert doc["metadata"]["name"] == "portcullis"
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == "portcullis"
    assert "PodDisruptionBudget" not in r.kinds()


def test_replicas_3_gets_a_pod_disruption_budget(render):
    r = render({"replicaCount": 3})
    assert r.deployment["spec"]["replicas"] == 3
    pdb = r.one("PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == r.deployment["spec"]["selector"]["matchLabels"]
    assert "PodDisruptionBudget" not in render({"replicaCount": 3, "podDisruptionBudget": {"enabled": False}}).kinds()


def test_autoscaler_and_service_monitor(render):
    r = render(SCALED)
    assert "replicas" not in r.deployment["spec"], "the HPA owns the replica count"
    hpa = r.one("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "portcullis"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    targets = {m["resource"]["name"]: m["resource"]["target"]["averageUtilization"] for m in hpa["spec"]["metrics"]}
    assert targets == {"cpu": 80, "memory": 75}
    # HPA resource metrics need requests.
    assert r.container()["resources"]["requests"]["cpu"]
    r.one("PodDisruptionBudget")  # minReplicas 2

    sm = r.one("ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    service = r.one("Service")
    for k, v in sm["spec"]["selector"]["matchLabels"].items():
        assert service["metadata"]["labels"][k] == v
    assert sm["spec"]["namespaceSelector"] == {"matchNames": ["web"]}
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in [p["name"] for p in service["spec"]["ports"]]
    assert endpoint["port"] == "http"


def test_service_monitor_on_a_separate_metrics_listener(render):
    r = render({"serviceMonitor": {"enabled": True}, "config": {"metrics": {"listen": "0.0.0.0:9090"}}})
    assert r.one("ServiceMonitor")["spec"]["endpoints"][0]["port"] == "metrics"
    ports = {p["name"]: p for p in r.one("Service")["spec"]["ports"]}
    assert ports["metrics"]["port"] == 9090 and ports["metrics"]["targetPort"] == "metrics"
    container_ports = {p["name"]: p["containerPort"] for p in r.container()["ports"]}
    assert container_ports == {"http": 4180, "metrics": 9090}


def test_sidecar_mode(render):
    r = render(SIDECAR)
    assert r.kinds() == ["ConfigMap", "Deployment", "Ingress", "Service", "ServiceAccount"]
    names = [c["name"] for c in r.pod["containers"]]
    assert names == ["app", "portcullis"]
    assert r.container("app")["image"] == "ghcr.io/example/app:1.2.3"
    # Portcullis proxies to the app inside the pod.
    assert r.config["upstream"] == {"url": "http://127.0.0.1:3000"}
    # The Service reaches the pod only through Portcullis's port.
    service = r.one("Service")
    (port,) = service["spec"]["ports"]
    portcullis_ports = {p["name"]: p["containerPort"] for p in r.container()["ports"]}
    assert port["targetPort"] in portcullis_ports
    assert "ports" not in r.container("app")
    ingress = r.one("Ingress")
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": service["metadata"]["name"], "port": {"number": port["port"]}}


def test_sidecar_mode_keeps_an_upstream_the_config_sets(render):
    values = {**SIDECAR, "config": {"upstream": {"url": "http://127.0.0.1:9000", "timeout": "30s"}}}
    assert render(values).config["upstream"] == {"url": "http://127.0.0.1:9000", "timeout": "30s"}


def test_sidecar_mode_without_an_app_fails(render):
    with pytest.raises(helm.HelmRenderError, match="sidecar.app"):
        render({"sidecar": {"enabled": True}})


def test_image_tag_defaults_to_the_app_version_and_a_digest_pins_it(chart, render):
    assert render().container()["image"] == f"portcullis:{chart.metadata['appVersion']}"
    digest = "sha256:" + "ab" * 32
    assert render({"image": {"repository": "registry.example.com/portcullis", "digest": digest}}).container()["image"] == (
        f"registry.example.com/portcullis@{digest}"
    )


def test_notes_say_which_secret_to_create(render):
    notes = render({"existingSecret": {"name": "my-secret", "clientSecretKey": "oidc"}, **OIDC_PROVIDER_ONLY}).files[
        "portcullis/templates/NOTES.txt"
    ]
    assert "create secret generic my-secret" in notes
    assert "--from-literal=oidc=" in notes


def test_ingress(render):
    r = render({"ingress": {"enabled": True, "className": "nginx", "tls": [{"hosts": ["app.example.com"], "secretName": "tls"}]}})
    ingress = r.one("Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "app.example.com"
    assert rule["http"]["paths"][0]["path"] == "/auth"


# --- the pod ---------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_probes_hit_healthz_and_readyz_on_the_port_portcullis_listens_on(render, variant):
    r = render(VARIANTS[variant])
    c = r.container()
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert r.config["listen"] == f"0.0.0.0:{ports['http']}"
    assert r.one("Service")["spec"]["ports"][0]["targetPort"] == "http"


def test_container_port_moves_listen_probes_and_service_together(render):
    r = render({"containerPort": 8000})
    assert r.config["listen"] == "0.0.0.0:8000"
    assert {p["name"]: p["containerPort"] for p in r.container()["ports"]} == {"http": 8000}


def test_config_listen_is_refused(render):
    with pytest.raises(helm.HelmRenderError, match="containerPort"):
        render({"config": {"listen": "0.0.0.0:9999"}})


@pytest.mark.parametrize("variant", VARIANTS)
def test_restricted_security_context(render, variant):
    r = render(VARIANTS[variant])
    sc = r.container()["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == 65532
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert r.pod["securityContext"]["runAsNonRoot"] is True
    assert r.pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert r.pod["automountServiceAccountToken"] is False
    assert r.pod["enableServiceLinks"] is False


def config_path_of(container: dict) -> str:
    args = container.get("args", [])
    if "--config" in args:
        return args[args.index("--config") + 1]
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    return env["PORTCULLIS_CONFIG"]


def volume_at(pod: dict, container: dict, path: str) -> tuple[dict, str]:
    """The volume that provides `path` in the container, and the key (file
    name inside the volume) that path is."""
    volumes = {v["name"]: v for v in pod["volumes"]}
    for m in container["volumeMounts"]:
        if m.get("subPath") and m["mountPath"] == path:
            return volumes[m["name"]], m["subPath"]
        if not m.get("subPath") and posixpath.dirname(path) == m["mountPath"].rstrip("/"):
            return volumes[m["name"]], posixpath.basename(path)
    raise AssertionError(f"nothing is mounted at {path}: {container['volumeMounts']}")


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_config_map_is_mounted_where_the_container_reads_its_config(render, variant):
    r = render(VARIANTS[variant])
    c = r.container()
    path = config_path_of(c)
    volume, key = volume_at(r.pod, c, path)
    config_map = r.one("ConfigMap")
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    assert key in config_map["data"]
    assert all(m.get("readOnly") for m in c["volumeMounts"])


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_secret_is_mounted_where_the_config_reads_it(render, variant):
    r = render(VARIANTS[variant])
    config = r.config
    files = list(config["secret_files"])
    files += [p["client_secret_file"] for p in config["providers"] if "client_secret_file" in p]
    files += [p["users_file"] for p in config["providers"] if "users_file" in p]
    for path in files:
        volume, key = volume_at(r.pod, r.container(), path)
        assert volume["secret"]["secretName"] == "portcullis", path
        assert key in {"cookie-secret", "cookie-secret-previous", "corp-client-secret", "users.yaml"}
    assert config["secret_files"][0] == f"{SECRET_DIR}/cookie-secret"


def test_oidc_client_secret_and_rotation_are_wired_from_the_secret(render):
    config = render(OIDC).config
    assert config["secret_files"] == [f"{SECRET_DIR}/cookie-secret", f"{SECRET_DIR}/cookie-secret-previous"]
    credentials, corp = config["providers"]
    assert corp["client_secret_file"] == f"{SECRET_DIR}/corp-client-secret"
    assert "client_secret_file" not in credentials


def test_client_secret_goes_to_the_named_provider(render):
    providers = [
        {"type": "oidc", "id": "a", "issuer": "https://a.example.com", "client_id": "x", "client_secret_file": "/elsewhere"},
        {"type": "oidc", "id": "b", "issuer": "https://b.example.com", "client_id": "x"},
    ]
    values = {"config": {"providers": providers}, "existingSecret": {"clientSecretKey": "b-secret", "clientSecretProvider": "b"}}
    a, b = render(values).config["providers"]
    assert a["client_secret_file"] == "/elsewhere"
    assert b["client_secret_file"] == f"{SECRET_DIR}/b-secret"


def test_client_secret_without_an_oidc_provider_fails(render):
    with pytest.raises(helm.HelmRenderError, match="no oidc provider"):
        render({"existingSecret": {"clientSecretKey": "k"}})


def test_secrets_from_the_environment_only(render):
    values = {"existingSecret": {"enabled": False}, "envFrom": [{"secretRef": {"name": "portcullis-env"}}],
              "config": {"providers": [{"type": "oidc", "issuer": "https://a.example.com", "client_id": "x"}]}}
    r = render(values)
    assert "secret_files" not in r.config
    assert [v["name"] for v in r.pod["volumes"]] == ["config"]
    assert r.container()["envFrom"] == [{"secretRef": {"name": "portcullis-env"}}]


def test_secret_volume_is_readable_by_the_pods_group_only(render):
    r = render()
    (secret,) = [v for v in r.pod["volumes"] if "secret" in v]
    assert secret["secret"]["defaultMode"] == 0o440
    assert r.pod["securityContext"]["fsGroup"] == r.container()["securityContext"]["runAsGroup"] == 65532


# --- rolling and stopping ------------------------------------------------------


def test_config_checksum_rolls_pods_on_config_changes_only(render):
    def checksum(values):
        return render(values).deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    base = checksum({})
    assert re.fullmatch(r"[0-9a-f]{64}", base)
    assert checksum({"replicaCount": 2}) == base
    assert checksum({"config": {"log": {"format": "text"}}}) != base


def grace(r) -> int:
    return r.pod["terminationGracePeriodSeconds"]


def test_termination_grace_exceeds_shutdown_grace(render):
    assert grace(render()) > 30  # Portcullis's default shutdown_grace
    assert grace(render({"config": {"limits": {"shutdown_grace": "2m"}}})) > 120
    assert grace(render({"config": {"limits": {"shutdown_grace": 90}}})) > 90
    assert grace(render({"config": {"limits": {"shutdown_grace": "1500ms"}}})) > 1
    assert grace(render({"terminationGracePeriodSeconds": 31})) == 31


def test_termination_grace_not_above_shutdown_grace_fails(render):
    with pytest.raises(helm.HelmRenderError, match="must exceed"):
        render({"terminationGracePeriodSeconds": 30})


# --- the rendered config, checked by Portcullis ----------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_portcullis_check_accepts_the_rendered_config(render, check_config, variant):
    r = render(VARIANTS[variant])
    out = check_config(r.config_text)
    assert out.returncode == 0, f"portcullis check refused:\n{r.config_text}\n{out.stderr}"
    effective = yaml.safe_load(out.stdout)  # JSON is YAML
    assert effective["listen"] == "0.0.0.0:4180"


def test_portcullis_check_still_catches_what_the_chart_cannot(render, check_config):
    r = render({"config": {"sesion": {"max_age": "8h"}}})
    out = check_config(r.config_text)
    assert out.returncode == 2
    assert "sesion" in out.stderr
