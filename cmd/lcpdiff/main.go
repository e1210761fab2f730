// Command lcpdiff runs and trains LCP-Diffusion natively on libtorch.
package main

import (
	"fmt"
	"os"

	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = ""

func main() {
	if err := torch.UseFastBLASKernels(); err != nil {
		fmt.Fprintln(os.Stderr, "lcpdiff: warning:", err)
	}
	if err := newRootCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "lcpdiff:", err)
		os.Exit(1)
	}
}
