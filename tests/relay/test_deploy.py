"""The relay's deployment files, checked offline: the Dockerfile with hadolint, the Kubernetes
manifests against the API schemas with kubernetes-validate (no container runtime or cluster)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "relay" / "deploy"
KUBERNETES_VERSION = "1.30.0"


def test_the_dockerfile_passes_hadolint() -> None:
    hadolint = Path(sys.executable).with_name("hadolint")
    result = subprocess.run([str(hadolint), str(DEPLOY / "Dockerfile")], capture_output=True, text=True,
                            check=False, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_does_fail_on_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\n")
    hadolint = Path(sys.executable).with_name("hadolint")
    result = subprocess.run(
        [str(hadolint), str(bad)], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode != 0 and "DL3007" in result.stdout


def _documents(name: str) -> list[dict[str, object]]:
    return [d for d in yaml.safe_load_all((DEPLOY / "k8s" / name).read_text()) if d]


@pytest.mark.parametrize("name", ["relay.yaml", "persistence.yaml"])
def test_the_manifests_validate_strictly(name: str) -> None:
    documents = _documents(name)
    assert documents
    for document in documents:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_the_manifests_have_what_the_deployment_model_needs() -> None:
    kinds = {d["kind"]: d for d in _documents("relay.yaml")}
    assert set(kinds) == {"Deployment", "Service", "HorizontalPodAutoscaler"}
    ports = kinds["Service"]["spec"]["ports"]  # type: ignore[index]
    assert [p["protocol"] for p in ports] == ["UDP"]
    assert kinds["HorizontalPodAutoscaler"]["spec"]["metrics"][0]["resource"]["name"] == "cpu"  # type: ignore[index]
    home = {d["kind"] for d in _documents("persistence.yaml")}
    assert "StatefulSet" in home
    stateful = next(d for d in _documents("persistence.yaml") if d["kind"] == "StatefulSet")
    assert stateful["spec"]["volumeClaimTemplates"]  # type: ignore[index]


def test_a_broken_manifest_is_refused() -> None:
    document = _documents("relay.yaml")[0]
    document["spec"]["replicas"] = "two"  # type: ignore[index]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_the_persistence_peers_settings_resolve_and_their_ports_are_exposed() -> None:
    from aetherflow_relay._command import ENV_PREFIX, resolve_settings

    documents = _documents("persistence.yaml")
    stateful = next(d for d in documents if d["kind"] == "StatefulSet")
    (container,) = stateful["spec"]["template"]["spec"]["containers"]  # type: ignore[index]
    # The image's ENV first (the Dockerfile's), then the pod's, which overrides it.
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    image_env = re.findall(r"(AETHERFLOW_RELAY_\w+)=(\S+)", dockerfile)
    assert image_env
    env = {**dict(image_env), **{e["name"]: e["value"] for e in container["env"]}}
    assert all(name.startswith(ENV_PREFIX) for name in env)
    settings = resolve_settings({}, env, None)  # every value parses (a bad one raises)
    assert settings["data_dir"] is not None
    mount = container["volumeMounts"][0]["mountPath"]
    assert str(settings["data_dir"]).startswith(mount)  # the documents live on the volume
    serve_port = settings["serve_port"]
    assert {"containerPort": serve_port, "name": "serve", "protocol": "UDP"} in container["ports"]
    for service in (d for d in documents if d["kind"] == "Service"):
        assert serve_port in [p["port"] for p in service["spec"]["ports"]]  # type: ignore[index]
