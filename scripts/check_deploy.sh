#!/usr/bin/env bash
# Static checks of the deployment files, no container engine or cluster needed
# (part of `make lint`, so of `make test` and CI):
#   - hadolint on every Dockerfile, failing on warnings;
#   - docker-compose.yml against the compose specification (check-jsonschema's
#     built-in copy of the schema);
#   - every Kubernetes resource file under deploy/k8s strictly against the
#     Kubernetes schemas (kubernetes-validate --strict), file by file; the
#     kustomization.yaml files are kustomize's, not resources, and are checked
#     by tests/deploy (references, names, images) and, where kubectl is
#     installed, by rendering each overlay.
# Everything runs from the venv (pinned dev dependencies).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin

mapfile -t dockerfiles < <(git ls-files --cached --others --exclude-standard '*Dockerfile*')
"$BIN/hadolint" --failure-threshold warning "${dockerfiles[@]}"

"$BIN/check-jsonschema" --builtin-schema vendor.compose-spec docker-compose.yml

mapfile -t manifests < <(git ls-files --cached --others --exclude-standard 'deploy/k8s/*.yaml' \
  | grep -v '/kustomization.yaml$')
"$BIN/kubernetes-validate" --strict --quiet "${manifests[@]}"
echo "deploy files: ${#dockerfiles[@]} Dockerfile(s), docker-compose.yml, ${#manifests[@]} Kubernetes file(s) valid"
