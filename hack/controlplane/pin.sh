#!/usr/bin/env bash
# Re-pin the control-plane module to another Kubernetes release.
#
#   hack/controlplane/pin.sh v1.37.2 v3.7.0
#
# go.mod is the single place the Kubernetes version is written; everything else (the build, the
# cache path, the version stamped into the binaries, the tests) reads it from there.
#
# k8s.io/kubernetes requires its staging modules (k8s.io/api, k8s.io/client-go, ...) at v0.0.0
# and resolves them with `replace => ./staging/...` directives, which only apply in its own
# repository. A module that depends on it must replace each of them with the published
# v0.<minor>.<patch> of the same release; this script derives that list from kubernetes' own
# go.mod, so no staging module is forgotten or left at another release.
#
# The second argument is the etcd server version: the one Kubernetes is tested with, i.e. the
# "etcd" entry of build/dependencies.yaml in the kubernetes source (ETCD_VERSION in
# hack/lib/etcd.sh).
set -euo pipefail

if [[ $# -ne 2 ]]; then
    echo "usage: $0 <kubernetes version, e.g. v1.37.2> <etcd version, e.g. v3.7.0>" >&2
    exit 2
fi
k8s="$1"
etcd="$2"
staging="v0.${k8s#v1.}"
cd "$(dirname "$0")"

# Only kubernetes' go.mod is fetched here (not its source).
upstream="$(go mod download -json "k8s.io/kubernetes@${k8s}" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')"
# Build with the language version and GODEBUG defaults Kubernetes itself declares.
go_directive="$(grep -m1 '^go ' "$upstream")"
godebug="$(grep -m1 '^godebug ' "$upstream" || true)"
# Staging modules that kubernetes requires at v0.0.0. (Its replace list also names modules
# outside the build graph, e.g. sample-controller, whose tags need not exist.)
modules="$(sed -n 's#^[[:space:]]*\(k8s\.io/[a-z0-9-]*\) v0\.0\.0$#\1#p' "$upstream" | sort -u)"

{
    echo "// Control-plane binaries for kubevision's integration tests (see docs/control-plane.md)."
    echo "// The Kubernetes version is pinned here and nowhere else; re-pin with ./pin.sh."
    echo "module kubevision.dev/hack/controlplane"
    echo
    echo "$go_directive"
    [[ -n "$godebug" ]] && { echo; echo "$godebug"; }
    echo
    echo "require ("
    echo "	go.etcd.io/etcd/server/v3 ${etcd}"
    echo "	k8s.io/kubernetes ${k8s}"
    echo ")"
    echo
    echo "// The staging modules of k8s.io/kubernetes ${k8s}, at their published tags (see pin.sh)."
    echo "replace ("
    for m in $modules; do
        echo "	${m} => ${m} ${staging}"
    done
    echo ")"
} > go.mod

nice -n 19 go mod tidy
echo "pinned k8s.io/kubernetes ${k8s} (staging modules ${staging}), etcd ${etcd}"
