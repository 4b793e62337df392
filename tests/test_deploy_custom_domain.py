"""deploy/custom-domains/ingress.example.yaml: a valid Ingress (Kubernetes 1.33, strict)
sending the tenant's host to portal-web over a cert-manager certificate."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import yaml

EXAMPLE = Path(__file__).resolve().parents[1] / "deploy" / "custom-domains" / "ingress.example.yaml"


def test_custom_domain_ingress_example_is_valid_and_routes_to_portal_web() -> None:
    (doc,) = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d]
    kubernetes_validate.validate(doc, "1.33.0", strict=True)
    assert doc["kind"] == "Ingress"
    assert doc["metadata"]["annotations"]["cert-manager.io/cluster-issuer"]
    (tls,) = doc["spec"]["tls"]
    (rule,) = doc["spec"]["rules"]
    assert tls["hosts"] == [rule["host"]]
    (path,) = rule["http"]["paths"]
    assert path["backend"]["service"]["name"] == "portal-web"
    assert "billfold site domain add" in EXAMPLE.read_text()
