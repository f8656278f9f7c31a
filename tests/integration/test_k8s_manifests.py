"""The Kubernetes base: schema-valid (strict), and the parts that must agree with each other do."""

from __future__ import annotations

import os
import re

import kubernetes_validate
import pytest
import yaml

from tasks.names import WORKER_QUEUES as QUEUES
from workers.flower_view import TASKS_COLUMNS

BASE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                    "deploy", "k8s", "base")


def documents():
    kustomization = yaml.safe_load(open(os.path.join(BASE, "kustomization.yaml")))
    assert sorted(kustomization["resources"]) == sorted(f for f in os.listdir(BASE) if f != "kustomization.yaml")
    docs = []
    for name in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all(open(os.path.join(BASE, name))) if d]
    return docs


DOCS = documents()
BY_KIND: dict[str, dict[str, dict]] = {}
for doc in DOCS:
    BY_KIND.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc


@pytest.mark.parametrize("doc", [d for d in DOCS if not d["apiVersion"].startswith("keda.sh/")],
                         ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_standard_resources_are_schema_valid(doc):
    kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def consumed_queues(deployment):
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    return set(args[args.index("-Q") + 1].split(","))


def test_every_queue_has_a_worker_role_and_roles_do_not_overlap():
    workers = [d for name, d in BY_KIND["Deployment"].items() if name.startswith("plaud-worker-")]
    seen = [q for d in workers for q in consumed_queues(d)]
    assert sorted(seen) == sorted(QUEUES)


def test_each_scaled_object_watches_the_queues_its_target_consumes():
    scaled = BY_KIND["ScaledObject"]
    assert set(scaled) == {"plaud-worker-api", "plaud-worker-uploads", "plaud-worker-polls"}
    for so in scaled.values():
        target = BY_KIND["Deployment"][so["spec"]["scaleTargetRef"]["name"]]
        lists = {t["metadata"]["listName"] for t in so["spec"]["triggers"]}
        assert lists == consumed_queues(target)
        for trigger in so["spec"]["triggers"]:
            assert trigger["type"] == "redis"
            assert trigger["authenticationRef"]["name"] in BY_KIND["TriggerAuthentication"]
            assert trigger["metadata"]["addressFromEnv"] in BY_KIND["ConfigMap"]["plaud-workers-config"]["data"]
    assert scaled["plaud-worker-polls"]["spec"]["minReplicaCount"] >= 1  # it holds the waiting polls


def test_beat_is_one_replica_that_rollouts_never_double():
    beat = BY_KIND["Deployment"]["plaud-beat"]
    assert beat["spec"]["replicas"] == 1 and beat["spec"]["strategy"]["type"] == "Recreate"


def test_workers_get_time_to_shut_down_and_run_as_non_root():
    for name, deployment in BY_KIND["Deployment"].items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        if name.startswith("plaud-worker-"):
            assert pod["terminationGracePeriodSeconds"] >= 120
            assert "livenessProbe" in pod["containers"][0]


def test_secrets_only_in_the_secret_and_flower_keeps_history():
    secret_keys = set(BY_KIND["Secret"]["plaud-workers-secrets"]["stringData"])
    assert {"PLAUD_SECRET_KEY", "PLAUD_API_KEY", "REDIS_PASSWORD", "FLOWER_BASIC_AUTH"} <= secret_keys
    assert not secret_keys & set(BY_KIND["ConfigMap"]["plaud-workers-config"]["data"])
    flower_env = {e["name"]: e.get("value") for e in
                  BY_KIND["Deployment"]["plaud-flower"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert flower_env["FLOWER_PERSISTENT"] == "True" and flower_env["FLOWER_DB"].startswith("/data/")
    assert flower_env["FLOWER_TASKS_COLUMNS"] == TASKS_COLUMNS  # the recording id shows on every row


OVERLAY = os.path.join(os.path.dirname(BASE), "keda-prometheus")


def overlay_patches():
    kustomization = yaml.safe_load(open(os.path.join(OVERLAY, "kustomization.yaml")))
    assert kustomization["resources"] == ["../base"]
    patches = []
    for patch in kustomization["patches"]:
        patches += [d for d in yaml.safe_load_all(open(os.path.join(OVERLAY, patch["path"]))) if d]
    return patches


def test_the_prometheus_variant_scales_each_role_on_the_pending_messages_of_the_queues_it_consumes():
    from workers.metrics_exporter import PENDING_METRIC

    patches = {p["metadata"]["name"]: p for p in overlay_patches()}
    assert set(patches) == set(BY_KIND["ScaledObject"])  # every role, and only the base's ScaledObjects
    for name, patch in patches.items():
        assert patch["kind"] == "ScaledObject" and patch["apiVersion"] == BY_KIND["ScaledObject"][name]["apiVersion"]
        target = BY_KIND["Deployment"][BY_KIND["ScaledObject"][name]["spec"]["scaleTargetRef"]["name"]]
        [trigger] = patch["spec"]["triggers"]  # replaces the base's list whole (a JSON merge patch)
        assert trigger["type"] == "prometheus" and trigger["metadata"]["serverAddress"].startswith("http")
        query = trigger["metadata"]["query"]
        match = re.fullmatch(rf'sum\({PENDING_METRIC}\{{queue=~"([^"]+)"\}}\)', query)
        assert match, query
        assert set(match.group(1).split("|")) == consumed_queues(target)
        assert float(trigger["metadata"]["threshold"]) > 0


def test_the_exporter_serves_the_port_its_service_names():
    exporter = BY_KIND["Deployment"]["plaud-exporter"]["spec"]["template"]["spec"]["containers"][0]
    port = int(exporter["command"][exporter["command"].index("--port") + 1])
    assert exporter["ports"][0]["containerPort"] == port
    service = BY_KIND["Service"]["plaud-exporter"]
    assert service["metadata"]["annotations"]["prometheus.io/port"] == str(port)
