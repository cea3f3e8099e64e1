// Command etcd is the etcd server, built from the go.etcd.io/etcd/server/v3
// module so that it shares one `go build` (and one version graph) with the
// Kubernetes control-plane binaries.
//
// etcd's own main package lives at the module root (go.etcd.io/etcd/server/v3),
// which `go build` would name "server"; this wrapper gives the binary its usual
// name and otherwise does exactly what upstream's main does.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
