#!/usr/bin/env bash
# Re-pin the control-plane module to another Kubernetes release.
#
#   hack/controlplane/pin.sh v1.37.2 v3.7.0
#
# go.mod is the single place the Kubernetes version is written; everything else
# (the build, the cache path, the ldflags) reads it from there. k8s.io/kubernetes
# requires its staging modules at v0.0.0 and resolves them with local `replace`
# directives that do not survive being a dependency, so this script rewrites our
# replace block to the matching published v0.<minor>.<patch> tags, derived from
# kubernetes' own go.mod. The etcd server version is the second argument: use
# the one kubernetes is tested with (build/dependencies.yaml, "etcd" entry).
set -euo pipefail

if [[ $# -ne 2 ]]; then
    echo "usage: $0 <kubernetes version, e.g. v1.37.2> <etcd version, e.g. v3.7.0>" >&2
    exit 2
fi
k8s="$1"
etcd="$2"
staging="v0.${k8s#v1.}"
cd "$(dirname "$0")"

# Fetch only kubernetes' go.mod (no source) to learn its staging module list.
modfile="$(go mod download -json "k8s.io/kubernetes@${k8s}" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')"

# Start from a clean replace block so modules dropped upstream do not linger.
go mod edit -json | sed -n 's/.*"Path": "\(k8s\.io\/[^"]*\)".*/\1/p' | sort -u | while read -r m; do
    go mod edit -dropreplace="$m"
done

# Only modules kubernetes actually requires at v0.0.0 need a pin; replace lines
# for modules outside the build graph (sample-*) point at tags that may not exist.
sed -n 's#^\s*\(k8s\.io/[a-z0-9-]*\) v0\.0\.0$#\1#p' "$modfile" | sort -u | while read -r m; do
    go mod edit -replace="${m}=${m}@${staging}"
done

go mod edit -require="k8s.io/kubernetes@${k8s}" -require="go.etcd.io/etcd/server/v3@${etcd}"
nice -n 19 go mod tidy
echo "pinned k8s.io/kubernetes ${k8s} (staging ${staging}), etcd ${etcd}"
