//go:build tools

// Package tools records the Kubernetes commands this module builds so that
// `go mod tidy` keeps their dependencies in go.mod/go.sum. The build itself
// names the packages directly (see tests/integration/cluster.py); this file is
// never compiled (the "tools" tag is never set).
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
)
