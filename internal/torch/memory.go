package torch

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// PeakRSS is the process's resident-set high-water mark (VmHWM) in MiB,
// the number memory benchmarks report beside LiveTensors: libtorch's
// allocations are invisible to Go's own statistics.
func PeakRSS() (float64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb / 1024, err
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/self/status")
}
