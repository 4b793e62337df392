"""deploy/k8s: every manifest valid for Kubernetes 1.33 (strict: misspelt fields fail), and
the operational promises: probes, hardening, migrations in a Job only, no test code.

Offline: kubernetes-validate bundles the schemas. `kubectl kustomize` is used when
kubectl is installed (it renders locally, no cluster involved).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
KUBE_VERSION = "1.33.0"
SECRET_TEMPLATE = "secret.example.yaml"
INGRESS_EXAMPLE = "ingress.example.yaml"
# Templates to adapt, validated here but not applied by the kustomization.
EXAMPLES = {SECRET_TEMPLATE, INGRESS_EXAMPLE}
SECRET_KEYS = {
    "BILLFOLD_DATABASE_URL",
    "BILLFOLD_REDIS_URL",
    "BILLFOLD_AMQP_URL",
    "BILLFOLD_NOTIFIER_PUBLIC_KEY",
}
# Created out of band (secret.example.yaml says how); each mounted by one Deployment alone.
NOTIFIER_SECRET = "billfold-notifier-secrets"
BILLING_SYNC_SECRET = "billfold-billing-sync-secrets"
# Every service with its port (BILLFOLD_<NAME>_PORT): each must have its manifests.
SERVICE_PORTS = {"session-api": 8080, "portal-web": 8081, "billing-sync": 8082, "notifier": 8083}

Doc = dict[str, Any]


def load_manifests() -> list[tuple[str, Doc]]:
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                found.append((path.name, doc))
    return found


MANIFESTS = load_manifests()


def of_kind(kind: str) -> list[Doc]:
    return [doc for _, doc in MANIFESTS if doc["kind"] == kind]


def pod_specs() -> list[tuple[str, Doc]]:
    workloads = of_kind("Deployment") + of_kind("Job")
    return [
        (f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"]) for d in workloads
    ]


def containers(spec: Doc) -> list[Doc]:
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def dockerfile_targets() -> set[str]:
    return set(
        re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", (ROOT / "Dockerfile").read_text(), re.M | re.I)
    )


def test_manifests_exist() -> None:
    kinds = {doc["kind"] for _, doc in MANIFESTS}
    expected = {"ConfigMap", "Secret", "Job", "Deployment", "Service", "PodDisruptionBudget"}
    assert expected | {"HorizontalPodAutoscaler", "NetworkPolicy", "Ingress"} <= kinds


@pytest.mark.parametrize(
    ("filename", "doc"), MANIFESTS, ids=[f"{f}:{d['kind']}" for f, d in MANIFESTS]
)
def test_manifest_is_valid_kubernetes(filename: str, doc: Doc) -> None:
    kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def test_strict_validation_catches_a_misspelt_field() -> None:
    # Guards the test above: strict mode must reject what `kubectl apply` would ignore.
    (deployment, *_) = of_kind("Deployment")
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBE_VERSION, strict=True)


def test_manifests_are_namespace_agnostic() -> None:
    for filename, doc in MANIFESTS:
        assert "namespace" not in doc["metadata"], f"{filename}: namespace is chosen at apply time"
        assert doc["kind"] != "Namespace", filename


def test_kustomization_lists_every_manifest_except_the_examples() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert files >= EXAMPLES
    assert set(kustomization["resources"]) == files - EXAMPLES
    images = {i["name"] for i in kustomization.get("images", [])}
    used = {c["image"].split(":")[0] for _, spec in pod_specs() for c in containers(spec)}
    assert used <= images, f"images without a tag in kustomization.yaml: {used - images}"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kustomize_renders_valid_manifests() -> None:
    result = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    rendered = [d for d in yaml.safe_load_all(result.stdout) if d]
    examples = [f for f, _ in MANIFESTS if f in EXAMPLES]
    assert len(rendered) == len(MANIFESTS) - len(examples)
    for doc in rendered:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "billfold"


def test_secret_template_holds_only_placeholders() -> None:
    (secret,) = of_kind("Secret")
    data = secret["stringData"]
    assert set(data) == SECRET_KEYS
    for key, value in data.items():
        assert "CHANGE-ME" in value, f"{key} must be an obvious placeholder"
    text = (K8S / SECRET_TEMPLATE).read_text()
    assert "PLACEHOLDER" in text
    assert "TEMPLATE" in text


def test_configmap_has_settings_but_no_secrets() -> None:
    (configmap,) = of_kind("ConfigMap")
    data = configmap["data"]
    assert data["BILLFOLD_HOST"] == "0.0.0.0"  # noqa: S104 - listen on the pod IP
    assert all(key.startswith("BILLFOLD_") for key in data)
    assert not SECRET_KEYS & set(data), "URLs with credentials belong in the Secret"


def test_workloads_read_the_configmap_and_the_secret() -> None:
    (configmap,) = of_kind("ConfigMap")
    (secret,) = of_kind("Secret")
    for name, spec in pod_specs():
        for container in spec["containers"]:
            sources = container.get("envFrom", [])
            assert {"configMapRef": {"name": configmap["metadata"]["name"]}} in sources, name
            assert {"secretRef": {"name": secret["metadata"]["name"]}} in sources, name


def test_only_the_notifier_mounts_its_private_key() -> None:
    mounting = {
        name
        for name, spec in pod_specs()
        for container in spec["containers"]
        if {"secretRef": {"name": NOTIFIER_SECRET}} in container.get("envFrom", [])
    }
    assert mounting == {"Deployment/notifier"}
    assert NOTIFIER_SECRET in (K8S / SECRET_TEMPLATE).read_text()


def test_only_billing_sync_mounts_the_stripe_secrets() -> None:
    mounting = {
        name
        for name, spec in pod_specs()
        for container in containers(spec)
        if {"secretRef": {"name": BILLING_SYNC_SECRET}} in container.get("envFrom", [])
        or BILLING_SYNC_SECRET in yaml.safe_dump(container)
    }
    assert mounting == {"Deployment/billing-sync"}
    template = (K8S / SECRET_TEMPLATE).read_text()
    assert BILLING_SYNC_SECRET in template
    # The template says which keys go into it; the shared Secret holds neither.
    for key in ("BILLFOLD_STRIPE_API_KEY", "BILLFOLD_BILLING_SECRETS_KEY"):
        assert f"--from-literal={key}=" in template, key
        assert key not in SECRET_KEYS
        (configmap,) = of_kind("ConfigMap")
        assert key not in configmap["data"], key


def test_every_service_is_deployed_on_its_port() -> None:
    deployments = {d["metadata"]["name"]: d for d in of_kind("Deployment")}
    assert set(deployments) == set(SERVICE_PORTS)
    for name, port in SERVICE_PORTS.items():
        (container,) = deployments[name]["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        variable = "BILLFOLD_" + name.upper().replace("-", "_") + "_PORT"
        assert env.get(variable) == str(port), f"{name}: {env}"
        assert [p["containerPort"] for p in container["ports"]] == [port], name
        (service,) = [s for s in of_kind("Service") if s["metadata"]["name"] == name]
        assert [p["port"] for p in service["spec"]["ports"]] == [port], name


def test_release_script_checks_every_secret() -> None:
    script = (K8S / "release.sh").read_text()
    for secret in ("billfold-secrets", NOTIFIER_SECRET, BILLING_SYNC_SECRET):
        assert secret in script, secret


def probe_port(container: Doc, probe: Doc) -> int:
    """The container port number an httpGet probe asks (ports may be named)."""
    ports = {p["name"]: int(p["containerPort"]) for p in container["ports"]}
    port = probe["httpGet"]["port"]
    assert port in ports or port in ports.values(), f"{container['name']}: probe port {port}"
    return ports[port] if port in ports else int(port)


def test_probes_hit_readyz_and_healthz_on_the_container_port() -> None:
    deployments = of_kind("Deployment")
    assert deployments
    for deployment in deployments:
        template = deployment["spec"]["template"]
        for container in template["spec"]["containers"]:
            env = {e["name"]: e.get("value") for e in container.get("env", [])}

            ready, alive = container["readinessProbe"], container["livenessProbe"]
            assert ready["httpGet"]["path"] == "/readyz"
            assert alive["httpGet"]["path"] == "/healthz"
            assert probe_port(container, ready) == probe_port(container, alive)
            # The port the process is told to listen on is the port the probes ask.
            listen = [int(v) for k, v in env.items() if re.fullmatch(r"BILLFOLD_\w+_PORT", k)]
            assert listen == [probe_port(container, ready)], f"{container['name']}: {env}"
            annotations = template["metadata"]["annotations"]
            assert annotations["prometheus.io/scrape"] == "true"
            assert annotations["prometheus.io/path"] == "/metrics"
            assert int(annotations["prometheus.io/port"]) == probe_port(container, ready)


def test_pods_are_hardened() -> None:
    for name, spec in pod_specs():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert pod.get("runAsUser", 0) != 0, name
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec["automountServiceAccountToken"] is False, name
        writable = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
        for container in containers(spec):
            ctx = container["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False, name
            assert ctx["readOnlyRootFilesystem"] is True, name
            assert ctx["capabilities"]["drop"] == ["ALL"], name
            assert not ctx["capabilities"].get("add"), name
            assert ctx.get("privileged", False) is False, name
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), f"{name}: {kind}"
            # A read-only root needs a writable /tmp (Python's tempfile, asyncpg, ...).
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert mounts.get("/tmp") in writable, f"{name}: no writable /tmp"


def test_migrate_job_runs_billfold_migrate() -> None:
    (job,) = of_kind("Job")
    spec = job["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container.get("command", []) + container.get("args", []) == ["billfold", "migrate"]
    assert spec["restartPolicy"] == "Never"
    assert job["spec"].get("backoffLimit") is not None
    assert job["spec"].get("activeDeadlineSeconds"), (
        "a stuck migration must not block releases forever"
    )
    assert container["image"].split(":")[0] == "billfold/migrate"


def test_deployments_never_run_migrations() -> None:
    for deployment in of_kind("Deployment"):
        for container in containers(deployment["spec"]["template"]["spec"]):
            argv = " ".join(container.get("command", []) + container.get("args", []))
            assert "migrate" not in argv, f"{deployment['metadata']['name']} races the Job"


def test_images_are_production_targets_not_test_code() -> None:
    targets = dockerfile_targets()
    for name, spec in pod_specs():
        for container in containers(spec):
            repo = container["image"].split(":")[0]
            assert repo.startswith("billfold/"), f"{name}: {container['image']}"
            assert repo.removeprefix("billfold/") in targets, (
                f"{name}: no Dockerfile target for {repo}"
            )
            argv = " ".join(container.get("command", []) + container.get("args", []))
            assert "billfold_testing" not in argv, f"{name}: {argv}"
            assert "pytest" not in argv, f"{name}: {argv}"
    for deployment in of_kind("Deployment"):
        name = deployment["metadata"]["name"]
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["image"].split(":")[0] == f"billfold/{name}"
        module = name.replace("-", "_")
        assert container["command"] == ["python", "-m", module]
        assert (ROOT / "services" / name / "src" / module / "__main__.py").exists()


def test_deployment_is_highly_available() -> None:
    for deployment in of_kind("Deployment"):
        name = deployment["metadata"]["name"]
        spec = deployment["spec"]
        assert spec["replicas"] == 2
        assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
        pod_labels = spec["template"]["metadata"]["labels"]
        assert spec["selector"]["matchLabels"].items() <= pod_labels.items()

        (pdb,) = [p for p in of_kind("PodDisruptionBudget") if p["metadata"]["name"] == name]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        assert pdb["spec"]["minAvailable"] >= 1

        (hpa,) = [h for h in of_kind("HorizontalPodAutoscaler") if h["metadata"]["name"] == name]
        target = hpa["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == ("Deployment", name)
        assert hpa["spec"]["minReplicas"] >= 2
        assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]

        (service,) = [s for s in of_kind("Service") if s["metadata"]["name"] == name]
        assert service["spec"]["selector"].items() <= pod_labels.items()
        port_names = {p["name"] for c in spec["template"]["spec"]["containers"] for p in c["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names, f"{name}: Service targets {port['targetPort']}"


def test_release_script_runs_the_job_before_the_services() -> None:
    script = (K8S / "release.sh").read_text()
    job_wait = script.index("Complete")
    services = script.index("component!=migrate")
    assert script.index("component=migrate") < job_wait < services
    assert "delete job" in script


# --- Ingress example and NetworkPolicies (issue 8) ---------------------------------

STORE_PORTS = {5432, 6379, 5672}  # Postgres, Redis, RabbitMQ
DNS_PORT = 53
INGRESS_CONTROLLER = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "ingress-nginx"}},
}
# Policy-guarded services with what they may reach beyond the stores and DNS.
GUARDED = {"portal-web": set(), "session-api": set(), "billing-sync": {443}}


def network_policy(name: str) -> Doc:
    (policy,) = [p for p in of_kind("NetworkPolicy") if p["metadata"]["name"] == name]
    return policy


def deployment(name: str) -> Doc:
    (found,) = [d for d in of_kind("Deployment") if d["metadata"]["name"] == name]
    return found


def egress_ports(policy: Doc) -> set[int]:
    """Every port an egress rule opens. A rule without `ports` opens them all: refused."""
    found = set()
    for rule in policy["spec"].get("egress", []):
        assert rule.get("ports"), f"{policy['metadata']['name']}: egress rule opens every port"
        assert rule.get("to"), f"{policy['metadata']['name']}: egress rule to anywhere"
        found |= {int(p["port"]) for p in rule["ports"]}
        assert not any("endPort" in p for p in rule["ports"]), "port ranges open more"
    return found


def ip_blocks(policy: Doc) -> list[Doc]:
    return [
        peer["ipBlock"]
        for rule in policy["spec"].get("egress", [])
        for peer in rule.get("to", [])
        if "ipBlock" in peer
    ]


def test_portal_web_egress_reaches_only_the_stores_and_dns() -> None:
    policy = network_policy("portal-web")
    assert "Egress" in policy["spec"]["policyTypes"], "without it egress is not restricted"
    assert egress_ports(policy) == STORE_PORTS | {DNS_PORT}
    assert 443 not in egress_ports(policy)
    for block in ip_blocks(policy):
        assert block["cidr"] not in ("0.0.0.0/0", "::/0"), block


@pytest.mark.parametrize("name", sorted(GUARDED))
def test_network_policy_guards_the_service(name: str) -> None:
    policy = network_policy(name)
    spec = policy["spec"]
    pod_labels = deployment(name)["spec"]["template"]["metadata"]["labels"]
    assert spec["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
    # Egress: the stores, DNS, and only what this service needs on top.
    assert egress_ports(policy) == STORE_PORTS | {DNS_PORT} | GUARDED[name]
    for rule in spec["egress"]:
        ports = {int(p["port"]) for p in rule["ports"]}
        if DNS_PORT in ports:
            # DNS only to the cluster's resolver, and nothing else in that rule.
            assert ports == {DNS_PORT}
            for peer in rule["to"]:
                assert peer["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
        else:
            # No other rule reaches pods in the cluster by selector.
            assert all(set(peer) == {"ipBlock"} for peer in rule["to"]), rule
        if ports & STORE_PORTS:
            assert ports == STORE_PORTS & ports, rule
            for peer in rule["to"]:
                assert peer["ipBlock"]["cidr"] not in ("0.0.0.0/0", "::/0"), rule
    # Ingress: only the ingress controller, only on the container port.
    (container,) = deployment(name)["spec"]["template"]["spec"]["containers"]
    (port,) = [p["containerPort"] for p in container["ports"]]
    (rule,) = spec["ingress"]
    assert rule["from"] == [INGRESS_CONTROLLER]
    assert rule["ports"] == [{"protocol": "TCP", "port": port}]


def test_only_billing_sync_reaches_the_internet_and_only_on_443() -> None:
    for policy in of_kind("NetworkPolicy"):
        name = policy["metadata"]["name"]
        public = [b for b in ip_blocks(policy) if b["cidr"] in ("0.0.0.0/0", "::/0")]
        if name != "billing-sync":
            assert not public, name
            continue
        assert {b["cidr"] for b in public} == {"0.0.0.0/0", "::/0"}
        (rule,) = [
            r
            for r in policy["spec"]["egress"]
            if any("ipBlock" in p and p["ipBlock"]["cidr"] == "0.0.0.0/0" for p in r["to"])
        ]
        assert rule["ports"] == [{"protocol": "TCP", "port": 443}]


def test_ingress_example_routes_each_host_to_its_service_over_tls() -> None:
    (ingress,) = of_kind("Ingress")
    assert ingress["metadata"]["annotations"]["cert-manager.io/cluster-issuer"]
    tls_hosts = {h for entry in ingress["spec"]["tls"] for h in entry["hosts"]}
    services = {s["metadata"]["name"]: s for s in of_kind("Service")}
    routed: dict[str, list[str]] = {}
    for rule in ingress["spec"]["rules"]:
        assert rule["host"] in tls_hosts, f"{rule['host']} has no certificate"
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            service = services[backend["name"]]
            assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
            routed.setdefault(backend["name"], []).append(path["path"])
    assert routed["portal-web"] == ["/"]
    assert routed["session-api"] == ["/"]
    # Stripe's webhooks, and nothing else of billing-sync (not /metrics, not /readyz).
    assert routed["billing-sync"] == ["/stripe/webhooks/"]
    webhooks = (ROOT / "services/billing-sync/src/billing_sync/webhooks.py").read_text()
    assert '"/stripe/webhooks/{site}"' in webhooks


def test_k8s_readme_documents_the_ingress_and_the_policies() -> None:
    readme = (K8S / "README.md").read_text()
    for needle in (INGRESS_EXAMPLE, "cert-manager", "NetworkPolicy", "ingress-nginx", "kube-dns"):
        assert needle in readme, needle
    (ingress,) = of_kind("Ingress")
    for rule in ingress["spec"]["rules"]:
        assert rule["host"] in readme, rule["host"]
