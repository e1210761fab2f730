package eval

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// BenchOptions are what every benchmark is opened with.
type BenchOptions struct {
	// Data is the benchmark's folder (DreamBench: the dataset folder).
	Data string
	// ImagesPerPrompt, BaseSeed and Limit are as in CaseOptions.
	ImagesPerPrompt int
	BaseSeed        uint64
	Limit           int
	// Views is how many of a subject's reference photos the generator is
	// given (0: 1); the identity metrics compare with all of them.
	Views int
}

// BenchFactory opens a benchmark.
type BenchFactory func(BenchOptions) (Bench, error)

var benches = map[string]BenchFactory{}

// RegisterBench makes a benchmark available by name; a bench's file calls
// it from init. A name registered twice is a programming error.
func RegisterBench(name string, f BenchFactory) {
	if _, dup := benches[name]; dup {
		panic("eval: bench " + name + " registered twice")
	}
	benches[name] = f
}

// BenchNames are the registered benchmarks, sorted.
func BenchNames() []string { return slices.Sorted(maps.Keys(benches)) }

// OpenBench opens the named benchmark.
func OpenBench(name string, o BenchOptions) (Bench, error) {
	f, ok := benches[name]
	if !ok {
		return nil, fmt.Errorf("unknown bench %q (available: %s)", name, strings.Join(BenchNames(), ", "))
	}
	return f(o)
}
