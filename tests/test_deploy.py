"""deploy/: the container recipe and the Kubernetes manifests cannot run here, so they are checked
against the real CLI instead: every `dcodex serve` flag they use is one the real parser has (and
parses), the ports, the health service, the probes, the secret paths and the drain agree with what
`dcodex serve` does with those flags. And `dns:///`, how clients reach the pods, is run for real."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from dcodex_kernel import cli
from dcodex_kernel.options import join_flag_values, parse_words
from dcodex_kernel.request import COMPILE_LIMITS, parse_size
from dcodex_kernel.server import SERVICE

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"


def containerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, argument) of deploy/Containerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Containerfile").read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def instruction(name: str) -> list[str]:
    return [arg for word, arg in containerfile() if word == name]


def exec_form(name: str) -> list[str]:
    (arg,) = instruction(name)[-1:]
    words = json.loads(arg)  # exec form: no shell between the runtime and the server
    assert isinstance(words, list) and all(isinstance(w, str) for w in words)
    return words


def manifests() -> dict[str, dict]:
    """Every Kubernetes object of deploy/kubernetes/, by kind."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    objects = {}
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            assert doc["kind"] not in objects, doc["kind"]
            objects[doc["kind"]] = doc
    return objects


def serve_options():
    """The option strings of the real `dcodex serve` parser."""
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    serve = sub.choices["serve"]
    return parser, {s for action in serve._actions for s in action.option_strings}


def parse_serve(args: list[str]):
    """`dcodex serve ARGS` through the real parser, as `dcodex` itself parses it. Each flag must
    be spelled out: argparse would take an abbreviation the README then fails to document."""
    parser, options = serve_options()
    for word in args:
        if word.startswith("--"):
            assert word.split("=")[0] in options, f"dcodex serve has no option {word}"
    return parse_words(parser, join_flag_values(["serve", *args]))


def container():
    deployment = manifests()["Deployment"]
    (box,) = deployment["spec"]["template"]["spec"]["containers"]
    return deployment, box


def port_named(box, name: str) -> int:
    return next(p["containerPort"] for p in box["ports"] if p["name"] == name)


def quantity(value) -> float:
    """A Kubernetes quantity ("5Gi", "2", "500m") as a number."""
    value = str(value)
    if value.endswith("m"):
        return float(value[:-1]) / 1000
    if value[-2:] in ("Ki", "Mi", "Gi", "Ti"):
        return float(value[:-2]) * 1024 ** ("KMGT".index(value[-2]) + 1)
    return float(parse_size(value)) if value[-1].isalpha() else float(value)


# ---------------------------------------------------------------------------------------------


def test_the_container_is_debian_with_the_sandbox_needs_and_runs_dcodex_serve():
    (base,) = instruction("FROM")
    assert base.startswith("debian:12"), base
    installs = " ".join(instruction("RUN"))
    for package in ("libseccomp-dev", "gcc", "g++", "python3"):
        assert re.search(rf"apt-get install[^&]*\s{re.escape(package)}(\s|$)", installs), package
    assert "pip install" in installs and "/src" in installs
    entry = exec_form("ENTRYPOINT")
    assert entry[-1] == "serve" and entry[-2].endswith("/dcodex")
    assert instruction("STOPSIGNAL") == ["SIGTERM"]  # what drains


def test_the_containers_arguments_are_real_serve_flags_that_serve_in_the_open(tmp_path):
    args = exec_form("CMD")
    ns = parse_serve(args)
    assert ns.host == "0.0.0.0" and ns.port == 50051 and ns.health_port == 50052
    exposed = {int(p.split("/")[0]) for arg in instruction("EXPOSE") for p in arg.split()}
    assert {ns.port, ns.health_port} <= exposed
    # With its secrets where they are mounted (here: the same names in a temp dir), this is a
    # configuration `dcodex serve` accepts on a public address: a token and TLS.
    for attr in ("token_file", "tls_cert", "tls_key"):
        path = getattr(ns, attr)
        assert path and path.startswith("/run/secrets/dcodex/"), (attr, path)
        local = tmp_path / path.lstrip("/")
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_text("a-token\n" if attr == "token_file" else "PEM\n")
        setattr(ns, attr, str(local))
    config = cli.serve_config(ns, environ={})
    assert config.tokens == ("a-token",) and config.tls_cert and not config.insecure
    assert config.grace_s >= COMPILE_LIMITS.wall_s + config.maxima.wall_s, \
        "--grace must cover the longest request: a compile and a run of --max-timeout"


def test_the_deployment_runs_the_containers_arguments_and_its_own_capacity():
    _, box = container()
    assert "command" not in box, "keep the image's ENTRYPOINT (dcodex serve)"
    ns, image = parse_serve(box["args"]), parse_serve(exec_form("CMD"))
    for attr in ("host", "port", "health_port", "token_file", "tls_cert", "tls_key", "grace",
                 "max_wall_s"):
        assert getattr(ns, attr) == getattr(image, attr), attr
    assert ns.max_concurrent >= 1 and ns.max_memory


def test_probes_use_the_standard_health_service_on_the_port_that_serves_it():
    _, box = container()
    ns = parse_serve(box["args"])
    assert port_named(box, "grpc") == ns.port
    assert port_named(box, "health") == ns.health_port  # plaintext: kubelet's probes speak no TLS
    readiness, liveness = box["readinessProbe"]["grpc"], box["livenessProbe"]["grpc"]
    assert readiness == {"port": ns.health_port, "service": SERVICE}  # NOT_SERVING while draining
    assert liveness["port"] == ns.health_port and liveness.get("service", "") in ("", SERVICE)


def test_the_headless_service_reaches_every_pod_on_the_serve_port():
    objects = manifests()
    deployment, box = container()
    service = objects["Service"]["spec"]
    assert service["clusterIP"] == "None", "headless: DNS gives every pod's address"
    assert not service.get("publishNotReadyAddresses", False)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["selector"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (port,) = service["ports"]
    target = port["targetPort"]
    assert port["port"] == parse_serve(box["args"]).port
    assert (port_named(box, target) if isinstance(target, str) else target) == port["port"]
    budget = objects["PodDisruptionBudget"]["spec"]
    assert budget["selector"]["matchLabels"].items() <= labels.items()


def test_the_secret_paths_are_where_the_secrets_are_mounted():
    deployment, box = container()
    ns = parse_serve(box["args"])
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m for m in box["volumeMounts"]}
    for attr in ("token_file", "tls_cert", "tls_key"):
        path = Path(getattr(ns, attr))
        mount = mounts[str(path.parent)]
        assert mount.get("readOnly")
        secret = volumes[mount["name"]]["secret"]
        assert str(path.name) in {item["path"] for item in secret["items"]}, attr
    tls = volumes[mounts[str(Path(ns.tls_cert).parent)]["name"]]["secret"]
    assert {i["key"] for i in tls["items"]} == {"tls.crt", "tls.key"}  # a kubernetes.io/tls Secret


def test_the_drain_fits_in_the_termination_grace_period():
    deployment, box = container()
    ns = parse_serve(box["args"])
    grace_period = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace_period >= ns.grace + 5, "Kubernetes would SIGKILL a server still draining"
    assert ns.grace >= COMPILE_LIMITS.wall_s + ns.max_wall_s
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_resources_and_the_security_context_the_sandbox_needs():
    _, box = container()
    ns = parse_serve(box["args"])
    resources = box["resources"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= resources[kind].keys(), kind
        assert quantity(resources[kind]["memory"]) > 0 and quantity(resources[kind]["cpu"]) > 0
    assert quantity(resources["limits"]["memory"]) >= ns.max_concurrent * ns.max_memory, \
        "the pod's memory limit would kill the server before the runs reach theirs"
    context = box["securityContext"]
    # namespaces, mounts, per-run uids and cgroups: a privileged container, or SYS_ADMIN at least
    assert context.get("privileged") or "SYS_ADMIN" in context.get("capabilities", {}).get("add", [])
    assert context.get("runAsUser") == 0  # the engine's root mode: a uid and a cgroup per run


def test_the_readme_tells_how_to_run_n_servers():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Running N servers", 1)[1].split("\n## ", 1)[0]
    deployment, _ = container()
    grace_period = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    for needed in ("dns:///", "round_robin", "SIGTERM", "terminationGracePeriodSeconds",
                   str(grace_period), "--health-port", "deploy/Containerfile"):
        assert needed in section, needed


def test_a_dns_target_reaches_the_servers_behind_a_name():
    """What the headless Service gives clients, for real on loopback: `dns:///NAME:PORT`."""
    import socket

    from dcodex_kernel.backends.remote import RemoteBackend
    from dcodex_kernel.events import collect
    from dcodex_kernel.request import Request

    from .test_server import Served

    if "127.0.0.1" not in {a[4][0] for a in socket.getaddrinfo("localhost", None)}:
        pytest.skip("localhost does not resolve to 127.0.0.1 here")
    served = Served()
    try:
        port = served.address.rsplit(":", 1)[1]
        backend = RemoteBackend(f"dns:///localhost:{port}")
        result = collect(backend.execute(Request("python", "print('via dns')", cache=False)))
        backend.close()
        assert result.ok and result.stdout == "via dns\n", result
    finally:
        assert served.stop() == 0


def test_the_manifests_quote_what_must_stay_a_string():
    """YAML would make `- 50051` an int, which Kubernetes refuses in args."""
    _, box = container()
    assert all(isinstance(arg, str) for arg in box["args"]), box["args"]
