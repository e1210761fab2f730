// Command lcpdiff runs and trains LCP-Diffusion natively on libtorch.
package main

import (
	"fmt"
	"os"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = ""

func main() {
	if err := newRootCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "lcpdiff:", err)
		os.Exit(1)
	}
}
