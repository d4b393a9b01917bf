"""The Kubernetes manifests: schema-valid offline, consistent with each other, and the
StatefulSet's flags start a working TLS cluster.

``kubernetes-validate`` ships the API schemas, so every document is checked against
them without a cluster (strict: an unknown field is an error). The Kustomize base uses
only ``namespace``, ``labels`` and ``images``, which :func:`render` applies the way
Kustomize does, so the rendered objects are validated too. The last test starts three
``phx node`` processes with the StatefulSet's own arguments (pod IPs and Secrets
replaced by loopback addresses and temporary files) and probes them as kubelet would.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from web_helpers import get, node_process

from phoenix_cluster._membership.discovery_spec import discovery_from_spec
from phoenix_cluster.testing import free_port

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
NOT_IN_BASE = {"secrets.example.yaml", "rbac-lease.yaml", "networkpolicy.example.yaml"}
K8S_VERSION = kubernetes_validate.latest_version()

Doc = dict[str, Any]


def documents(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def kustomization() -> Doc:
    (doc,) = documents(KUBE / "kustomization.yaml")
    return doc


def render() -> list[Doc]:
    """The base as ``kubectl kustomize`` renders it (namespace, labels, images)."""
    k = kustomization()
    out: list[Doc] = []
    for resource in k["resources"]:
        for doc in documents(KUBE / resource):
            doc = copy.deepcopy(doc)
            meta = doc["metadata"]
            meta["namespace"] = k["namespace"]
            for entry in k.get("labels", []):
                meta.setdefault("labels", {}).update(entry["pairs"])
            for subject in doc.get("subjects", []):
                if subject["kind"] == "ServiceAccount":
                    subject["namespace"] = k["namespace"]
            for container in pod_spec(doc).get("containers", []):
                for image in k.get("images", []):
                    if container["image"] == image["name"]:
                        container["image"] = f"{image['newName']}:{image['newTag']}"
            out.append(doc)
    return out


def pod_spec(doc: Doc) -> Doc:
    spec: Doc = doc.get("spec", {}).get("template", {}).get("spec", {})
    return spec


def one(kind: str, name: str | None = None) -> Doc:
    found = [d for d in render() if d["kind"] == kind
             and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


def container() -> Doc:
    containers: list[Doc] = pod_spec(one("StatefulSet"))["containers"]
    (c,) = containers
    return c


def flags() -> dict[str, str]:
    """The container's ``--flag=value`` arguments (``--flag`` alone maps to "")."""
    out: dict[str, str] = {}
    for arg in container()["args"]:
        name, _, value = arg.partition("=")
        out[name] = value
    return out


# ------------------------------------------------------------------ schemas


@pytest.mark.parametrize("path", sorted(p.name for p in KUBE.glob("*.yaml")
                                        if p.name != "kustomization.yaml"))
def test_every_manifest_matches_the_kubernetes_schema(path: str) -> None:
    docs = documents(KUBE / path)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_rendered_base_matches_the_kubernetes_schema() -> None:
    rendered = render()
    assert {d["kind"] for d in rendered} == {"ServiceAccount", "Role", "RoleBinding",
                                              "Service", "StatefulSet",
                                              "PodDisruptionBudget"}
    for doc in rendered:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        assert doc["metadata"]["namespace"] == "phoenix"


def test_the_validator_rejects_a_misspelt_field() -> None:
    doc = copy.deepcopy(one("StatefulSet"))
    doc["spec"]["replica"] = doc["spec"].pop("replicas")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_every_file_is_in_the_base_or_left_out_on_purpose() -> None:
    files = {p.name for p in KUBE.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization()["resources"]) == files - NOT_IN_BASE
    text = (KUBE / "kustomization.yaml").read_text()
    for name in NOT_IN_BASE:
        assert name in text  # said why, in a comment


# ------------------------------------------------------------------ consistency


def test_statefulset_names_each_node_after_its_pod_and_keeps_its_data() -> None:
    f = flags()
    assert f["--name"] == "$(POD_NAME)"
    env = {e["name"]: e for e in container()["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    sts = one("StatefulSet")
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in container()["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == f["--data-dir"]
    assert sts["spec"]["replicas"] == 3
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    # Readiness means caught up: a roll needs no extra pause between pods.
    assert "minReadySeconds" not in sts["spec"]


def test_termination_leaves_time_for_the_handoff() -> None:
    spec = pod_spec(one("StatefulSet"))
    pre_stop = container()["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    budget = int(pre_stop[1]) + float(flags()["--shutdown-timeout-s"])
    # The rest is the handoff and the leave; SIGKILL must not cut them short.
    assert spec["terminationGracePeriodSeconds"] >= budget + 30


def test_peers_find_each_other_through_the_headless_service() -> None:
    peers = one("Service", "phoenix-peers")
    assert peers["spec"]["clusterIP"] == "None"
    assert peers["spec"]["publishNotReadyAddresses"] is True
    sts = one("StatefulSet")
    assert sts["spec"]["serviceName"] == "phoenix-peers"
    discovery = flags()["--discovery"]
    (port,) = peers["spec"]["ports"]
    assert discovery == (f"dns:srv:_{port['name']}._tcp.phoenix-peers.$(POD_NAMESPACE)"
                         ".svc.cluster.local")
    assert flags()["--listen"] == f"$(POD_IP):{port['port']}"
    discovery_from_spec(discovery.replace("$(POD_NAMESPACE)", "phoenix"))  # a valid spec
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    for service in (peers, one("Service", "phoenix")):
        assert service["spec"]["selector"].items() <= pod_labels.items()


def test_disruption_budget_takes_one_member_at_a_time() -> None:
    pdb = one("PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    labels = one("StatefulSet")["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_rbac_lets_the_pods_list_pods_and_the_optional_role_take_leases() -> None:
    role = one("Role", "phoenix-discovery")
    assert {"get", "list"} <= set(role["rules"][0]["verbs"])
    assert role["rules"][0]["resources"] == ["pods"]
    binding = one("RoleBinding", "phoenix-discovery")
    assert binding["subjects"][0]["name"] == pod_spec(one("StatefulSet"))["serviceAccountName"]
    (lease_role, _) = documents(KUBE / "rbac-lease.yaml")
    assert lease_role["rules"][0]["apiGroups"] == ["coordination.k8s.io"]
    assert lease_role["rules"][0]["resources"] == ["leases"]


def test_secrets_are_mounted_where_the_flags_read_them() -> None:
    f = flags()
    spec = pod_spec(one("StatefulSet"))
    secrets = {v["name"]: v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v}
    mounts = {m["mountPath"]: m["name"] for m in container()["volumeMounts"]}
    for flag, secret in (("--tls-cert", "phoenix-tls"), ("--tls-key", "phoenix-tls"),
                         ("--tls-ca", "phoenix-tls"),
                         ("--http-token-file", "phoenix-http-token")):
        directory = str(Path(f[flag]).parent)
        assert secrets[mounts[directory]] == secret, flag
    env = {e["name"]: e for e in container()["env"]}
    assert env["PHX_COOKIE"]["valueFrom"]["secretKeyRef"]["name"] == "phoenix-cookie"
    assert "--tls-no-verify-hostname" in f  # pod IPs change; the cluster CA is checked
    example = {d["metadata"]["name"]: d for d in documents(KUBE / "secrets.example.yaml")}
    assert set(example["phoenix-tls"]["stringData"]) == {"tls.crt", "tls.key", "ca.crt"}
    assert "cookie" in example["phoenix-cookie"]["stringData"]
    assert "token" in example["phoenix-http-token"]["stringData"]


def test_probes_and_scrape_annotations_point_at_the_http_endpoint() -> None:
    c = container()
    http_port = int(flags()["--http"].rsplit(":", 1)[1])
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["http"] == http_port
    assert c["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "http"}
    annotations = one("StatefulSet")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(http_port)
    assert annotations["prometheus.io/path"] == "/metrics"


def test_pods_run_as_the_image_user_without_privileges() -> None:
    spec = pod_spec(one("StatefulSet"))
    assert spec["securityContext"]["runAsNonRoot"] is True
    dockerfile = (ROOT / "Dockerfile").read_text()
    uid = re.search(r"ARG UID=(\d+)", dockerfile)
    assert uid is not None and spec["securityContext"]["runAsUser"] == int(uid.group(1))
    security = container()["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]


# ------------------------------------------------------------------ the flags work


def manifest_args(pod_ip: str, peer_port: int, http_port: int, seed: str | None,
                  files: dict[str, Path]) -> list[str]:
    """The StatefulSet's args for one pod, with local stand-ins for what Kubernetes gives."""
    values = {"$(POD_NAME)": f"phoenix-{pod_ip.rsplit('.', 1)[1]}", "$(POD_IP)": pod_ip}
    out = []
    for arg in container()["args"]:
        name, _, value = arg.partition("=")
        if name == "--discovery":  # cluster DNS is not here: static seeds instead
            if seed is not None:
                out.append(f"--seed={seed}")
            continue
        if name == "--import":
            value = "web_agents"
        for var, real in values.items():
            value = value.replace(var, real)
        # Test servers bind loopback: the pod's 0.0.0.0 becomes its stand-in address.
        value = value.replace("0.0.0.0:", f"{pod_ip}:")
        value = value.replace(":7100", f":{peer_port}").replace(":9100", f":{http_port}")
        for mounted, local in (("/etc/phoenix/tls/tls.crt", files["server.pem"]),
                               ("/etc/phoenix/tls/tls.key", files["server.key"]),
                               ("/etc/phoenix/tls/ca.crt", files["ca.pem"]),
                               ("/etc/phoenix/http/token", files["token"]),
                               ("/data", files["data"] / values["$(POD_NAME)"])):
            value = value.replace(mounted, str(local))
        out.append(f"{name}={value}" if value or "=" in arg else name)
    return out


@pytest.mark.slow
async def test_three_nodes_started_with_the_statefulset_args_form_a_tls_cluster(
    tmp_path: Path, tls_files: dict[str, Path]
) -> None:
    token = "manifest-test-token-5a1b"
    (tmp_path / "token").write_text(token + "\n")
    files = {**tls_files, "token": tmp_path / "token", "data": tmp_path}
    # The certificates name 127.0.0.1 only: these addresses play pod IPs they cannot name.
    ips = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    ports = [(free_port(ip), free_port(ip)) for ip in ips]
    env = {"PHX_COOKIE": "manifest-test-cookie"}
    seed = f"{ips[0]}:{ports[0][0]}"
    async with contextlib.AsyncExitStack() as stack:
        for i, (ip, (peer_port, http_port)) in enumerate(zip(ips, ports, strict=True)):
            args = manifest_args(ip, peer_port, http_port, None if i == 0 else seed, files)
            await stack.enter_async_context(
                node_process(*args, log=tmp_path / f"node-{i}.log", env=env))
        urls = [f"http://{ip}:{http}" for ip, (_, http) in zip(ips, ports, strict=True)]

        async def all_ready() -> bool:
            statuses = [(await get(u + "/health/ready"))[0] for u in urls]
            return statuses == [200, 200, 200]

        async with asyncio.timeout(60):  # probe as kubelet does, every 0.2 s here
            while True:
                if await all_ready():
                    break
                await asyncio.sleep(0.2)
        status, _, _ = await get(urls[0] + "/api/cluster")
        assert status == 401
        status, _, body = await get(urls[0] + "/api/cluster",
                                    headers={"Authorization": f"Bearer {token}"})
        assert status == 200
        assert body.count(b'"status":"alive"') == 3
        assert (await get(urls[1] + "/metrics"))[0] == 200


def test_the_lease_strategy_wiring_in_rbac_lease_parses_and_the_role_covers_its_calls() -> None:
    """rbac-lease.yaml's comment and docs/deployment.md give the same two arguments; they
    build a Kubernetes Lease provider in a pod, and the Role grants what it calls."""
    from phoenix_cluster._splitbrain.lease_spec import lease_from_spec

    text = (KUBE / "rbac-lease.yaml").read_text(encoding="utf-8")
    args = re.findall(r"^#\s+- (--split-brain\S*)$", text, flags=re.MULTILINE)
    assert args == ["--split-brain=lease",
                    "--split-brain-lease=k8s:$(POD_NAMESPACE)/phoenix-split-brain"]
    guide = (ROOT / "docs" / "deployment.md").read_text(encoding="utf-8")
    assert all(f"- {arg}\n" in guide for arg in args)
    spec = args[1].split("=", 1)[1].replace("$(POD_NAMESPACE)", kustomization()["namespace"])
    lease = lease_from_spec(spec, environ={"KUBERNETES_SERVICE_HOST": "10.96.0.1",
                                           "KUBERNETES_SERVICE_PORT": "443"})
    assert repr(lease) == ("<KubernetesLease https://10.96.0.1:443 lease "
                           "phoenix/phoenix-split-brain>")
    (role, binding) = documents(KUBE / "rbac-lease.yaml")
    assert set(role["rules"][0]["verbs"]) == {"get", "create", "update"}  # lease_k8s.py
    assert binding["subjects"][0]["name"] == pod_spec(one("StatefulSet"))["serviceAccountName"]
