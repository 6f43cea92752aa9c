"""Deployment artefacts checked by tools: every kustomize overlay renders (kubectl kustomize) and validates
against the Kubernetes schemas (kubernetes-validate --strict, pinned version); the Dockerfile is
hadolint-clean; and the rendered objects keep the invariants the code relies on."""
from __future__ import annotations

import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from services.__main__ import DEFAULT_PORTS
from tests.conftest import ROOT

K8S_VERSION = "1.32.0"
BIN = Path(sys.executable).parent


def render(overlay: str) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is not installed: `make test` installs it (apt-get install kubectl)")
    out = subprocess.run([kubectl, "kustomize", str(ROOT / "k8s" / overlay)], capture_output=True, text=True,
                         check=True)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.mark.parametrize("overlay", ["overlays/cpu", "overlays/gpu", "overlays/queue-autoscaling", "monitoring",
                                     "jobs", "examples/models-in-image", "examples/models-on-volume"])
def test_overlay_renders_and_validates(overlay, tmp_path):
    docs = render(overlay)
    f = tmp_path / "rendered.yaml"
    f.write_text(yaml.safe_dump_all(docs))
    proc = subprocess.run([str(BIN / "kubernetes-validate"), "--strict", "-k", K8S_VERSION, "--quiet", str(f)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_is_hadolint_clean():
    proc = subprocess.run([str(BIN / "hadolint"), "--failure-threshold", "warning", str(ROOT / "Dockerfile")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = (ROOT / "Dockerfile").read_text()
    for target in ("AS serve-cpu", "AS serve-gpu", "AS train"):
        assert target in text
    assert "USER 10001" in text and "HEALTHCHECK" in text and "services.healthcheck" in text
    assert "/v2/health/live" in (ROOT / "services" / "healthcheck.py").read_text()


def _container(docs, name):
    return _by_kind(docs, "Deployment")[name]["spec"]["template"]["spec"]


def test_the_two_ways_to_give_a_cluster_your_models(tmp_path):
    """docs/deployment.md: an image FROM ours with your models copied in, or a volume on the repository; either
    changes the models service only, and the gateway needs no edit (it routes unknown names there)."""
    proc = subprocess.run([str(BIN / "hadolint"), "--failure-threshold", "warning",
                           str(ROOT / "k8s" / "examples" / "models-in-image" / "Dockerfile")], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    base = render("overlays/cpu")
    image = render("examples/models-in-image")
    assert _container(image, "models")["containers"][0]["image"] == "registry.example.com/my-models:1"
    assert _container(image, "mnist") == _container(base, "mnist")
    volume = render("examples/models-on-volume")
    spec = _container(volume, "models")
    mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "user-models")
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    repository = env.get("MODEL_REPOSITORY", "/models")  # the image's default (Dockerfile)
    assert mount == {"name": "user-models", "mountPath": repository, "readOnly": True}
    assert "MODEL_REPOSITORY=/models" in (ROOT / "Dockerfile").read_text()
    claim = _by_kind(volume, "PersistentVolumeClaim")["user-models"]
    assert next(v for v in spec["volumes"] if v["name"] == "user-models")["persistentVolumeClaim"] == {
        "claimName": "user-models", "readOnly": True} and claim["metadata"]["namespace"] == "model-serving"
    for docs in (image, volume):
        backends = yaml.safe_load(_by_kind(docs, "ConfigMap")["gateway-backends"]["data"]["backends.yaml"])
        assert backends["backends"]["models"]["imported"] is True


def test_generated_manifests_are_up_to_date(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "k8s" / "generate.py"), str(tmp_path)], check=True)
    for rel in ("base/resources.yaml", "base/kustomization.yaml", "overlays/gpu/kustomization.yaml",
                "overlays/queue-autoscaling/kustomization.yaml", "overlays/queue-autoscaling/prometheus-adapter.yaml",
                "monitoring/kustomization.yaml", "monitoring/monitoring.yaml",
                "jobs/training-jobs.yaml"):
        assert filecmp.cmp(tmp_path / rel, ROOT / "k8s" / rel, shallow=False), f"{rel}: run python k8s/generate.py"


def _by_kind(docs, kind):
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def test_cpu_overlay_invariants():
    docs = render("overlays/cpu")
    deps = _by_kind(docs, "Deployment")
    assert set(deps) == set(DEFAULT_PORTS)
    svcs, hpas = _by_kind(docs, "Service"), _by_kind(docs, "HorizontalPodAutoscaler")
    pdbs = _by_kind(docs, "PodDisruptionBudget")
    for name, d in deps.items():
        port = DEFAULT_PORTS[name]
        pod = d["spec"]["template"]["spec"]
        c = pod["containers"][0]
        assert c["args"] == [name] and c["ports"][0]["containerPort"] == port
        env = {e["name"]: e["value"] for e in c["env"]}
        assert env["GATEWAY_PORT" if name == "gateway" else "PORT"] == str(port)  # what `python -m services` reads
        # a service is ready when its models are; the gateway when it is itself (one model down must not
        # remove every gateway pod from its Service)
        ready, live = ("/healthz", "/healthz") if name == "gateway" else ("/v2/health/ready", "/v2/health/live")
        assert c["startupProbe"]["httpGet"]["path"] == ready
        assert c["readinessProbe"]["httpGet"]["path"] == ready
        assert c["livenessProbe"]["httpGet"]["path"] == live
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
        assert sc["capabilities"]["drop"] == ["ALL"] and sc["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["securityContext"]["runAsUser"] == 10001 and pod["automountServiceAccountToken"] is False
        assert pod["terminationGracePeriodSeconds"] > int(env["GUNICORN_GRACEFUL_TIMEOUT"])
        assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"]
        assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"])  # writable scratch on a read-only root
        assert svcs[name]["spec"]["ports"][0]["port"] == port
        assert hpas[name]["spec"]["scaleTargetRef"]["name"] == name and pdbs[name]["spec"]["minAvailable"] == 1
    sa = _by_kind(docs, "ServiceAccount")["model-serving"]
    assert sa["automountServiceAccountToken"] is False
    ing = _by_kind(docs, "Ingress")["gateway"]
    assert ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == "gateway"


def test_network_policy_only_gateway_reaches_services():
    pols = _by_kind(render("overlays/cpu"), "NetworkPolicy")
    deny = pols["default-deny"]["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    svc = pols["services-from-gateway-only"]["spec"]
    assert set(svc["podSelector"]["matchExpressions"][0]["values"]) == set(DEFAULT_PORTS) - {"gateway"}
    assert svc["ingress"][0]["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "gateway"}}}]
    assert "gateway-from-ingress" in pols


def test_gateway_config_map_matches_the_code(tmp_path):
    from services.gateway import backends
    from services.settings import GatewaySettings
    docs = render("overlays/cpu")
    cm = _by_kind(docs, "ConfigMap")["gateway-backends"]
    f = tmp_path / "backends.yaml"
    f.write_text(cm["data"]["backends.yaml"])
    loaded = backends.load(GatewaySettings.from_env({"GATEWAY_BACKENDS_FILE": str(f)}))
    local = backends.load(GatewaySettings.from_env({}))
    assert {n: (b.models, b.routes) for n, b in loaded.items()} == {n: (b.models, b.routes) for n, b in local.items()}
    for name, b in loaded.items():
        assert b.url == f"http://{name}:{DEFAULT_PORTS[name]}"
    gw = _by_kind(docs, "Deployment")["gateway"]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "GATEWAY_BACKENDS_FILE", "value": "/etc/gateway/backends.yaml"} in gw["env"]


def test_gpu_overlay_requests_gpus():
    deps = _by_kind(render("overlays/gpu"), "Deployment")
    for name in set(DEFAULT_PORTS) - {"gateway"}:
        c = deps[name]["spec"]["template"]["spec"]["containers"][0]
        assert c["resources"]["limits"]["nvidia.com/gpu"] == 1 and c["image"].endswith(":serve-gpu")
        assert {"name": "MODEL_DEVICE", "value": "cuda"} in c["env"]
        assert deps[name]["spec"]["template"]["spec"]["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert "nvidia.com/gpu" not in deps["gateway"]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]


def test_queue_overlay_scales_each_service_on_its_pods_queue_depth_through_prometheus_adapter():
    """Each service's HPA reads ``model_queue_depth`` per pod (what the batchers export), through the adapter rule
    that ships beside it; the gateway keeps scaling on CPU."""
    from prometheus_client import REGISTRY

    import services.runtime.metrics  # noqa: F401 - registers model_queue_depth
    docs = render("overlays/queue-autoscaling")
    hpas = _by_kind(docs, "HorizontalPodAutoscaler")
    services = set(DEFAULT_PORTS) - {"gateway"}
    for name in services:
        [metric] = hpas[name]["spec"]["metrics"]
        assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == "model_queue_depth"
    assert hpas["gateway"]["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    adapter = yaml.safe_load(_by_kind(docs, "ConfigMap")["prometheus-adapter"]["data"]["config.yaml"])
    assert [r["name"]["as"] for r in adapter["rules"]] == ["model_queue_depth"]
    assert "model_queue_depth" in {m.name for m in REGISTRY.collect()}


def test_monitoring_wraps_the_rules_file_and_scrapes_every_service():
    """kubernetes-validate knows no Prometheus Operator kinds (it only warns), so their invariants are checked
    here: the PrometheusRule is monitoring/rules.yml itself, and each service and the gateway has a
    ServiceMonitor on its Service's http port and /metrics."""
    docs = render("monitoring")
    [rule] = _by_kind(docs, "PrometheusRule").values()
    assert rule["spec"] == yaml.safe_load((ROOT / "monitoring" / "rules.yml").read_text())
    monitors = _by_kind(docs, "ServiceMonitor")
    assert set(monitors) == set(DEFAULT_PORTS)
    services = _by_kind(render("overlays/cpu"), "Service")
    for name, monitor in monitors.items():
        [endpoint] = monitor["spec"]["endpoints"]
        assert endpoint["path"] == "/metrics"
        assert endpoint["port"] in {p["name"] for p in services[name]["spec"]["ports"]}
        assert monitor["spec"]["selector"]["matchLabels"].items() <= services[name]["metadata"]["labels"].items()


def test_the_gateway_places_imported_models_on_the_models_pods_by_their_headless_service():
    docs = render("overlays/cpu")
    services = _by_kind(docs, "Service")
    headless, models = services["models-replicas"], services["models"]
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["selector"] == models["spec"]["selector"]
    assert headless["spec"]["ports"][0]["port"] == DEFAULT_PORTS["models"]
    env = {e["name"]: e.get("value") for e in _container(docs, "gateway")["containers"][0]["env"]}
    assert env["GATEWAY_MODELS_REPLICAS"] == f"dns:models-replicas:{DEFAULT_PORTS['models']}"
    assert "models" in _by_kind(docs, "PodDisruptionBudget") and "models" in _by_kind(docs, "HorizontalPodAutoscaler")
