"""Writes k8s/base, k8s/overlays and k8s/jobs from the service table (services/catalog.py: ports, models,
routes, resources), so the
five near-identical Deployments are kept in one place. Run: python k8s/generate.py (the tests check that
the committed files match)."""
from __future__ import annotations

import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere
from services import catalog  # noqa: E402 - the service table, after the path
from services.gateway.backends import backend_map  # noqa: E402

HERE = Path(__file__).resolve().parent
RULES = HERE.parent / "monitoring" / "rules.yml"  # the one rules file (promtool-tested), wrapped for the operator
NS = "model-serving"
IMAGE = "ghcr.io/example/keras-onnx-serving"
# name -> (port, models, resources)
DEPLOYMENTS = {s.name: (s.port, list(s.models), s.resources.cpu, s.resources.memory, s.resources.memory_limit,
                      s.resources.max_replicas) for s in catalog.SERVICES}
GATEWAY_PORT = catalog.GATEWAY_PORT
GRACE = 30  # GUNICORN_GRACEFUL_TIMEOUT; pods get GRACE + 15 s to drain


def labels(name):
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "keras-onnx-serving"}


def security():
    return {"runAsNonRoot": True, "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}


def workers_for(cpu: str) -> int:
    cores = int(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)
    return max(1, round(cores))


def deployment(name, port, env, cpu, mem, mem_limit, port_env="PORT", ready="/v2/health/ready",
               live="/v2/health/live"):
    probe = lambda path, **kw: {"httpGet": {"path": path, "port": "http"}, **kw}  # noqa: E731
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels(name)},
        "spec": {
            "replicas": 2, "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": labels(name),
                             "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": str(port),
                                             "prometheus.io/path": "/metrics"}},
                "spec": {
                    "serviceAccountName": "model-serving", "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": GRACE + 15,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                        "fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{
                        "name": name, "image": f"{IMAGE}:serve-cpu", "imagePullPolicy": "IfNotPresent",
                        "args": [name],
                        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
                        "env": [{"name": port_env, "value": str(port)},
                                {"name": "GUNICORN_GRACEFUL_TIMEOUT", "value": str(GRACE)},
                                {"name": "PROMETHEUS_MULTIPROC_DIR", "value": "/tmp/prometheus"},
                                # one worker per requested core: the pod's memory limit holds one model copy each
                                {"name": "WEB_CONCURRENCY", "value": str(workers_for(cpu))}] + env,
                        "resources": {"requests": {"cpu": cpu, "memory": mem}, "limits": {"memory": mem_limit}},
                        "startupProbe": probe(ready, periodSeconds=2, failureThreshold=90),
                        "readinessProbe": probe(ready, periodSeconds=5, failureThreshold=2),
                        "livenessProbe": probe(live, periodSeconds=10, failureThreshold=3),
                        # let the Service stop routing here before gunicorn starts draining
                        "lifecycle": {"preStop": {"sleep": {"seconds": 5}}},
                        "securityContext": security(),
                        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                    }],
                    "volumes": [{"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}],
                },
            },
        },
    }


def service(name, port, grpc_ports=None):
    ports = [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}]
    ports += [{"name": n, "port": p, "targetPort": n, "protocol": "TCP", "appProtocol": "grpc"}
              for n, p in (grpc_ports or {}).items()]
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "labels": labels(name)},
            "spec": {"selector": {"app.kubernetes.io/name": name}, "ports": ports}}


def hpa(name, max_replicas):
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": name},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                     "minReplicas": 2, "maxReplicas": max_replicas,
                     "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                         "type": "Utilization", "averageUtilization": 70}}}],
                     "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}}}}


def pdb(name):
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": name},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": name}}}}


def network_policies():
    gw = {"matchLabels": {"app.kubernetes.io/name": "gateway"}}
    deny = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "default-deny"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}
    to_services = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                   "metadata": {"name": "services-from-gateway-only"},
                   "spec": {"podSelector": {"matchExpressions": [{"key": "app.kubernetes.io/name", "operator": "In",
                                                                  "values": list(DEPLOYMENTS)}]},
                            "policyTypes": ["Ingress"],
                            "ingress": [{"from": [{"podSelector": gw}],
                                         "ports": [{"protocol": "TCP", "port": p} for p, *_ in DEPLOYMENTS.values()]}]}}
    gateway_in = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                  "metadata": {"name": "gateway-from-ingress"},
                  "spec": {"podSelector": gw, "policyTypes": ["Ingress"],
                           "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {
                               "kubernetes.io/metadata.name": "ingress-nginx"}}}],
                               "ports": [{"protocol": "TCP", "port": p}
                                         for p in (GATEWAY_PORT, *catalog.GRPC_PORTS.values())]}]}}
    gateway_out = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                   "metadata": {"name": "gateway-to-services-and-dns"},
                   "spec": {"podSelector": gw, "policyTypes": ["Egress"],
                            "egress": [{"to": [{"podSelector": {"matchExpressions": [{
                                "key": "app.kubernetes.io/name", "operator": "In", "values": list(DEPLOYMENTS)}]}}],
                                "ports": [{"protocol": "TCP", "port": p} for p, *_ in DEPLOYMENTS.values()]},
                                {"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {
                                    "k8s-app": "kube-dns"}}}],
                                 "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}]}}
    return [deny, to_services, gateway_in, gateway_out]


def base():
    docs = [{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "model-serving"},
             "automountServiceAccountToken": False}]
    backends = backend_map(lambda s: f"{s.name}:{s.port}")
    docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "gateway-backends"},
                 "data": {"backends.yaml": yaml.safe_dump(backends, sort_keys=False)}})
    for n, (port, _m, cpu, mem, lim, mx) in DEPLOYMENTS.items():
        docs += [deployment(n, port, [{"name": "MODEL_DEVICE", "value": "cpu"}], cpu, mem, lim), service(n, port),
                 hpa(n, mx), pdb(n)]
    imported = next(s for s in catalog.SERVICES if s.imported)
    # the imported models' replicas, each pod's address: the gateway places each model on one or two of them
    replicas = service(f"{imported.name}-replicas", imported.port)
    replicas["spec"].update(clusterIP="None", selector={"app.kubernetes.io/name": imported.name})
    docs.append(replicas)
    gw = deployment("gateway", GATEWAY_PORT, [{"name": "GATEWAY_BACKENDS_FILE", "value": "/etc/gateway/backends.yaml"},
                                              {"name": "GATEWAY_MODELS_REPLICAS",
                                               "value": f"dns:{imported.name}-replicas:{imported.port}"},
                                              {"name": "GATEWAY_RATE_LIMIT", "value": "200/second"},
                                              # the ingress controller's pods: the client is in X-Forwarded-For
                                              {"name": "GATEWAY_TRUSTED_PROXIES", "value": "10.0.0.0/8"}],
                    "250m", "256Mi", "512Mi", port_env="GATEWAY_PORT",
                    # the gateway's own health: one model's backend down must not take every model down
                    ready="/healthz", live="/healthz")
    spec = gw["spec"]["template"]["spec"]
    spec["containers"][0]["ports"] += [{"name": n, "containerPort": p, "protocol": "TCP"}
                                       for n, p in catalog.GRPC_PORTS.items()]  # probes stay HTTP
    spec["containers"][0]["volumeMounts"].append({"name": "backends", "mountPath": "/etc/gateway", "readOnly": True})
    spec["volumes"].append({"name": "backends", "configMap": {"name": "gateway-backends"}})
    docs += [gw, service("gateway", GATEWAY_PORT, catalog.GRPC_PORTS), hpa("gateway", 6), pdb("gateway")]
    docs.append({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {
        "name": "gateway", "annotations": {"nginx.ingress.kubernetes.io/proxy-body-size": "16m",
                                           "nginx.ingress.kubernetes.io/proxy-buffering": "off",
                                           "nginx.ingress.kubernetes.io/proxy-read-timeout": "120"}},
        "spec": {"ingressClassName": "nginx", "rules": [{"host": "models.example.com", "http": {"paths": [{
            "path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": "gateway", "port": {"name": "http"}}}}]}}]}})
    docs += network_policies()
    return docs


QUEUE_TARGET = "16"  # rows waiting per pod, on average, above which a service scales out (a quarter of a batch)


def queue_overlay():
    """overlays/queue-autoscaling: the CPU overlay's services, each HPA scaling on its pods' batcher queue depth
    (``model_queue_depth``) through prometheus-adapter, whose rule for that metric ships beside it."""
    adapter_rules = {"rules": [{
        "seriesQuery": 'model_queue_depth{namespace!="",pod!=""}',
        "resources": {"overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}},
        "name": {"matches": "model_queue_depth", "as": "model_queue_depth"},
        "metricsQuery": "sum by (<<.GroupBy>>) (<<.Series>>{<<.LabelMatchers>>})"}]}
    config = {"apiVersion": "v1", "kind": "ConfigMap",
              "metadata": {"name": "prometheus-adapter", "namespace": "monitoring"},
              "data": {"config.yaml": yaml.safe_dump(adapter_rules, sort_keys=False)}}
    write(HERE / "overlays" / "queue-autoscaling" / "prometheus-adapter.yaml", [config])
    patches = [{"target": {"kind": "HorizontalPodAutoscaler", "name": n}, "patch": yaml.safe_dump([
        {"op": "replace", "path": "/spec/metrics", "value": [{"type": "Pods", "pods": {
            "metric": {"name": "model_queue_depth"},
            "target": {"type": "AverageValue", "averageValue": QUEUE_TARGET}}}]}])} for n in DEPLOYMENTS]
    (HERE / "overlays" / "queue-autoscaling" / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ../cpu\n"
        "  - prometheus-adapter.yaml\n" + yaml.safe_dump({"patches": patches}, sort_keys=False, width=200))


def monitoring():
    """k8s/monitoring: for the Prometheus Operator, monitoring/rules.yml wrapped as a PrometheusRule (the same
    groups, not a copy to keep in step by hand) and a ServiceMonitor per service and for the gateway, scraping
    /metrics on each Service's http port. Apply it beside an overlay: kubectl apply -k k8s/monitoring."""
    rules = yaml.safe_load((RULES).read_text())
    rule = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
            "metadata": {"name": "keras-onnx-serving", "labels": labels("monitoring")}, "spec": rules}
    monitors = [{"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
                 "metadata": {"name": name, "labels": labels(name)},
                 "spec": {"selector": {"matchLabels": {"app.kubernetes.io/name": name}},
                          "endpoints": [{"port": "http", "path": "/metrics", "interval": "15s"}]}}
                for name in [*DEPLOYMENTS, "gateway"]]
    write(HERE / "monitoring" / "monitoring.yaml", [rule, *monitors])
    (HERE / "monitoring" / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"namespace: {NS}\nresources:\n  - monitoring.yaml\n")


def write(path: Path, docs):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# generated by k8s/generate.py - edit the table there\n" +
                    yaml.safe_dump_all(docs, sort_keys=False, width=120))


def main(out: Path = HERE):
    global HERE
    HERE = out
    write(HERE / "base" / "resources.yaml", base())
    (HERE / "base" / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"namespace: {NS}\nresources:\n  - namespace.yaml\n  - resources.yaml\n")
    write(HERE / "base" / "namespace.yaml", [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}])
    (HERE / "overlays" / "cpu").mkdir(parents=True, exist_ok=True)
    (HERE / "overlays" / "cpu" / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ../../base\n"
        f"images:\n  - name: {IMAGE}\n    newTag: serve-cpu\n")
    gpu_patch = []
    for n in DEPLOYMENTS:
        gpu_patch.append({"target": {"kind": "Deployment", "name": n}, "patch": yaml.safe_dump([
            {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": f"{IMAGE}:serve-gpu"},
            # env: PORT, GUNICORN_GRACEFUL_TIMEOUT, PROMETHEUS_MULTIPROC_DIR, WEB_CONCURRENCY, MODEL_DEVICE.
            # WEB_CONCURRENCY stays one per requested core: on an H100 one worker (one CUDA context) capped
            # MNIST at 780 req/s, four shared the GPU for 2,400-2,800
            {"op": "replace", "path": "/spec/template/spec/containers/0/env/4/value", "value": "cuda"},
            {"op": "add", "path": "/spec/template/spec/containers/0/resources/limits/nvidia.com~1gpu", "value": 1},
            {"op": "add", "path": "/spec/template/spec/nodeSelector", "value": {"nvidia.com/gpu.present": "true"}},
            {"op": "add", "path": "/spec/template/spec/tolerations", "value": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]},
            {"op": "replace", "path": "/spec/replicas", "value": 1}])})
    (HERE / "overlays" / "gpu").mkdir(parents=True, exist_ok=True)
    (HERE / "overlays" / "gpu" / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ../../base\n" +
        yaml.safe_dump({"patches": gpu_patch}, sort_keys=False, width=200))
    queue_overlay()
    monitoring()
    jobs = []
    for fam in catalog.FAMILIES:
        jobs.append({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": f"train-{fam}"},
                     "spec": {"backoffLimit": 2, "ttlSecondsAfterFinished": 86400, "template": {"spec": {
                         "restartPolicy": "OnFailure", "automountServiceAccountToken": False,
                         "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "fsGroup": 10001,
                                             "seccompProfile": {"type": "RuntimeDefault"}},
                         "containers": [{"name": "train", "image": f"{IMAGE}:train",
                                         "args": [fam, "--out", "/models", "--run-dir", "/work/runs",
                                                  "--report-dir", "/work/reports"],
                                         "env": [{"name": "DATA_CACHE", "value": "/work/data"}],
                                         "resources": {"requests": {"cpu": "4", "memory": "8Gi"},
                                                       "limits": {"memory": "16Gi"}},
                                         "securityContext": security(),
                                         "volumeMounts": [{"name": "models", "mountPath": "/models"},
                                                          {"name": "work", "mountPath": "/work"},
                                                          {"name": "tmp", "mountPath": "/tmp"}]}],
                         "volumes": [{"name": "models", "persistentVolumeClaim": {"claimName": "model-repository"}},
                                     {"name": "work", "persistentVolumeClaim": {"claimName": "training-work"}},
                                     {"name": "tmp", "emptyDir": {}}]}}}})
    write(HERE / "jobs" / "training-jobs.yaml", jobs)
    (HERE / "jobs" / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"namespace: {NS}\nresources:\n  - training-jobs.yaml\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
    sys.exit(0)
