"""infra/k8s: every object valid for a pinned Kubernetes, offline and strictly; the objects agree
with each other, keep secrets out of the manifests and run the server locked down."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import tomllib

import kubernetes_validate
import pytest
import yaml

from serving.server import ServerConfig
from tests.infra.infra_files import (
    EXAMPLE_SECRET,
    K8S,
    KUSTOMIZATION,
    ROOT,
    find,
    instructions,
    load_documents,
    manifest_files,
)

KUBERNETES_VERSION = "1.32"  # the oldest minor these manifests are meant for; schemas ship in kubernetes-validate
SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL|AUTH|REGISTRY_URL", re.IGNORECASE)
URL_WITH_PASSWORD = re.compile(r"://[^/@\s]+:[^/@\s]+@")


def objects() -> list[tuple[str, dict]]:
    return [(path.name, doc) for path in manifest_files() for doc in load_documents(path)]


@pytest.mark.parametrize(
    ("name", "obj"), objects(), ids=[f"{name}:{obj['kind']}/{obj['metadata']['name']}" for name, obj in objects()]
)
def test_every_manifest_validates_against_the_pinned_kubernetes_schema(name, obj):
    assert kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True) == KUBERNETES_VERSION
    assert "namespace" not in obj["metadata"], f"{name}: the namespace is chosen at apply time (-n)"


def test_strict_validation_rejects_an_unknown_field_a_wrong_type_and_a_missing_field(deployment):
    """The check above is worth something only if the validator really is strict."""
    misspelt, wrong_type, missing = (copy.deepcopy(deployment) for _ in range(3))
    probe = misspelt["spec"]["template"]["spec"]["containers"][0]
    probe["readinessprobe"] = probe.pop("readinessProbe")
    wrong_type["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "8000"
    del missing["spec"]["selector"]
    for broken in (misspelt, wrong_type, missing):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_the_kustomization_lists_exactly_the_manifests_but_the_example_secret():
    kustomization = yaml.safe_load((K8S / KUSTOMIZATION).read_text())
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed))
    assert set(listed) == {p.name for p in manifest_files()} - {EXAMPLE_SECRET}


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with its built-in kustomize) is not installed")
def test_kustomize_builds_the_listed_objects_unchanged():
    built = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=True)
    objects_built = [doc for doc in yaml.safe_load_all(built.stdout) if doc]
    listed = yaml.safe_load((K8S / KUSTOMIZATION).read_text())["resources"]
    expected = [doc for name in listed for doc in load_documents(K8S / name)]
    key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
    assert sorted(map(key, objects_built)) == sorted(map(key, expected))
    assert sorted(objects_built, key=key) == sorted(expected, key=key)


def test_the_service_pdb_and_deployment_select_the_pods_the_deployment_makes(deployment, container):
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selectors = {
        "Deployment": deployment["spec"]["selector"]["matchLabels"],
        "Service": find("Service")["spec"]["selector"],
        "PodDisruptionBudget": find("PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
    }
    for kind, selector in selectors.items():
        assert selector and selector.items() <= pod_labels.items(), f"{kind} selects {selector}, pods have {pod_labels}"
    port_names = {port["name"] for port in container["ports"]}
    for port in find("Service")["spec"]["ports"]:
        assert port["targetPort"] in port_names
    assert find("Service")["spec"]["type"] == "ClusterIP" and find("Service")["spec"]["ports"][0]["port"] == 80


def test_the_autoscaler_drives_the_deployment_on_cpu_and_the_pdb_leaves_room_to_drain(deployment, container):
    hpa = find("HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    name = deployment["metadata"]["name"]
    assert (target["apiVersion"], target["kind"], target["name"]) == ("apps/v1", "Deployment", name)
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Resource"] == ["cpu"]
    assert "cpu" in container["resources"]["requests"], "CPU utilisation is measured against the request"
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count; kubectl apply would reset it"
    assert find("PodDisruptionBudget")["spec"]["minAvailable"] < hpa["spec"]["minReplicas"], "drains would block"


def test_the_deployment_holds_no_literal_secret(deployment, container):
    for env in container.get("env", []):
        if "value" in env:
            assert not SECRET_NAME.search(env["name"]), f"{env['name']} must come from a Secret (secretKeyRef)"
            assert not URL_WITH_PASSWORD.search(env["value"]), f"{env['name']} holds a password"
    registry_url = [e for e in container["env"] if e["name"] == "EVOREC_REGISTRY_URL"]
    assert registry_url == [{"name": "EVOREC_REGISTRY_URL", "valueFrom": {"secretKeyRef": {"name": "evorec-registry",
                                                                                          "key": "url"}}}]  # fmt: skip
    assert not URL_WITH_PASSWORD.search(yaml.safe_dump(deployment))
    served = yaml.safe_load(find("ConfigMap")["data"]["serve.yaml"])["serve"]
    assert "registry_url" not in served, "the registry URL holds a password: it comes from the Secret"


def test_every_secret_the_deployment_reads_is_documented_in_the_example(container):
    documented = {(doc["metadata"]["name"], key) for doc in load_documents(K8S / EXAMPLE_SECRET)
                  for key in doc["stringData"]}  # fmt: skip
    wanted = {(e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
              for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})}  # fmt: skip
    assert wanted and wanted <= documented


def test_the_server_runs_as_the_images_non_root_user_on_a_read_only_root(deployment, container, runtime):
    pod = deployment["spec"]["template"]["spec"]
    image_user = instructions(runtime, "USER")[-1].split(":")
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert [str(pod["securityContext"]["runAsUser"]), str(pod["securityContext"]["runAsGroup"])] == image_user
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert pod["automountServiceAccountToken"] is False


def test_every_path_the_server_writes_is_an_empty_dir(deployment, container):
    """Under a read-only root, /tmp (downloaded artifacts, Beam's scratch) and the data dir must be volumes."""
    empty_dirs = {v["name"] for v in deployment["spec"]["template"]["spec"]["volumes"] if "emptyDir" in v}
    mounted = {m["mountPath"]: m["name"] for m in container["volumeMounts"] if not m.get("readOnly")}
    data_dir = next(e["value"] for e in container["env"] if e["name"] == "EVOREC_DATA_DIR")
    for path in ("/tmp", data_dir):
        assert mounted.get(path) in empty_dirs, f"{path} is not a writable emptyDir"


def test_the_configmap_is_a_valid_server_config_that_listens_on_the_container_port(deployment, container):
    served = ServerConfig.model_validate(yaml.safe_load(find("ConfigMap")["data"]["serve.yaml"])["serve"])
    assert served.host == "0.0.0.0", "bound to loopback, the server is unreachable from the Service"
    assert served.port == container["ports"][0]["containerPort"]
    args = container["args"]
    assert args[0] == "serve"
    config_path = args[args.index("--config") + 1]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    folder, _, key = config_path.rpartition("/")
    volume = next(volumes[name] for name, path in mounts.items() if path == folder)
    assert volume["configMap"]["name"] == find("ConfigMap")["metadata"]["name"]
    assert key in find("ConfigMap")["data"]


def test_the_image_is_the_projects_version(container):
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert container["image"] == f"ghcr.io/OWNER/evorec:{version}"
