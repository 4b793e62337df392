#!/usr/bin/env bash
# Roll out one Billfold release in the right order:
#   1. settings (ConfigMap, ServiceAccount)
#   2. the migrate Job, waited on until it completes (a failure stops the release)
#   3. the services (Deployments, Services, PDBs, HPAs), then wait for the rollout.
# Replicas of the new version therefore never start before their schema exists,
# and never run migrations themselves.
#
# Usage: deploy/k8s/release.sh [kubectl flags...]
#   deploy/k8s/release.sh -n billfold --context prod
# Set the image tag first:  (cd deploy/k8s && kustomize edit set image billfold/session-api:1.2.3 ...)
# The Secrets billfold-secrets, billfold-notifier-secrets and
# billfold-billing-sync-secrets must already exist (see secret.example.yaml).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
job=billfold-migrate
timeout_s=${MIGRATE_TIMEOUT_SECONDS:-900}

k() { kubectl "$@" "${kubectl_flags[@]}"; }
kubectl_flags=("$@")

# Fail early and clearly rather than with pods stuck in CreateContainerConfigError.
for secret in billfold-secrets billfold-notifier-secrets billfold-billing-sync-secrets; do
  if ! k get secret "$secret" >/dev/null 2>&1; then
    echo "release: Secret $secret is missing; create it as deploy/k8s/secret.example.yaml says" >&2
    exit 1
  fi
done

echo "release: applying settings"
k apply -k "$here" -l app.kubernetes.io/component=config

# A Job's pod template is immutable, and a finished Job never runs again: replace it.
echo "release: running migrations"
k delete job "$job" --ignore-not-found --wait=true
k apply -k "$here" -l app.kubernetes.io/component=migrate

# Poll rather than `kubectl wait --for=condition=complete`: that would sit until the
# timeout when the Job fails instead of completing.
deadline=$((SECONDS + timeout_s))
while :; do
  state=$(k get job "$job" -o jsonpath='{range .status.conditions[?(@.status=="True")]}{.type}{" "}{end}')
  case " $state " in
    *" Complete "*) echo "release: migrations applied"; break ;;
    *" Failed "*)
      echo "release: migrate Job failed; its last logs:" >&2
      k logs "job/$job" --tail=50 >&2 || true
      exit 1 ;;
  esac
  if ((SECONDS >= deadline)); then
    echo "release: migrate Job still running after ${timeout_s}s; giving up" >&2
    exit 1
  fi
  sleep 3
done

echo "release: rolling out services"
k apply -k "$here" -l 'app.kubernetes.io/component!=migrate'
for deploy in $(k get deployment -l app.kubernetes.io/part-of=billfold -o name); do
  k rollout status "$deploy" --timeout=10m
done
echo "release: done"
