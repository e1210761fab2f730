package torch_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/golden"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// The golden detector (eval/tiny_detector.pt) is a scripted module saved by
// torch 1.13.1; its golden file holds the inputs it was called with and the
// outputs, which C++ torch::jit::load reproduces within the README's atol
// 1e-6 (which measured 5.96e-08 for boxes and 8.94e-08 for scores with two
// threads): bit for bit with one thread on an AMD EPYC, 5.96e-08 and
// 1.79e-07 on an Intel Xeon, whose convolution kernels sum otherwise.
func TestModuleForwardMatchesGolden(t *testing.T) {
	for _, threads := range []int{1, 2} {
		t.Run(fmt.Sprintf("threads=%d", threads), func(t *testing.T) {
			defer torch.SetNumThreads(torch.NumThreads())
			torch.SetNumThreads(threads)
			checkGoldenDetector(t, 1e-6)
		})
	}
}

func checkGoldenDetector(t *testing.T, atol float64) {
	s := torch.NewScope()
	defer s.Close()
	m, err := torch.LoadModule(golden.Path(t, "eval", "tiny_detector.pt"), torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	f := golden.File(t, "eval", "tiny_detector_golden.safetensors")
	images := golden.Tensor(t, f, "detector.images")
	// The profiling executor optimises a graph after its first runs: the
	// later calls must give the same numbers as the first.
	for call := range 3 {
		outs, err := m.Forward(images)
		if err != nil {
			t.Fatal(err)
		}
		if len(outs) != 3 {
			t.Fatalf("call %d: %d outputs, want boxes, scores, labels", call, len(outs))
		}
		golden.Compare(t, "detector.boxes", outs[0], golden.Tensor(t, f, "detector.boxes"), atol)
		golden.Compare(t, "detector.scores", outs[1], golden.Tensor(t, f, "detector.scores"), atol)
		if outs[2].DType() != torch.Int64 {
			t.Fatalf("labels are %v, want i64", outs[2].DType())
		}
		golden.Compare(t, "detector.labels", outs[2], golden.Tensor(t, f, "detector.labels"), 0)
	}
}

func TestModuleForwardIsScopedAndGradFree(t *testing.T) {
	m, err := torch.LoadModule(golden.Path(t, "eval", "tiny_detector.pt"), torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	x := torch.Zeros(1, 3, 64, 64)
	x.SetRequiresGrad(true)
	torch.Settle()
	before := torch.LiveTensors()
	for range 5 {
		func() {
			s := torch.NewScope()
			defer s.Close()
			outs, err := m.Forward(x)
			if err != nil {
				t.Fatal(err)
			}
			if outs[0].RequiresGrad() {
				t.Fatal("forward recorded a graph: the outputs require grad")
			}
		}()
	}
	if after := torch.LiveTensors(); after != before {
		t.Fatalf("live tensors %d before, %d after five scoped calls", before, after)
	}
	m.Close()
	m.Close() // harmless
	if _, err := m.Forward(x); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("forward after Close: %v", err)
	}
}

func TestModuleLoadErrors(t *testing.T) {
	dir := t.TempDir()
	notZip := filepath.Join(dir, "weights.pt")
	os.WriteFile(notZip, []byte("not a zip archive at all"), 0o644)
	// A zip archive, as torch.save writes, but without TorchScript code.
	stateDict := filepath.Join(dir, "state_dict.pt")
	golden.WriteZip(t, stateDict, map[string]string{"archive/data.pkl": "\x80\x02}q\x00.", "archive/version": "3\n"})
	for _, c := range []struct{ path, want string }{
		{filepath.Join(dir, "missing.pt"), "missing.pt"},
		{notZip, "not a TorchScript file"},
		{stateDict, "without TorchScript code"},
	} {
		m, err := torch.LoadModule(c.path, torch.CPU)
		if err == nil {
			m.Close()
			t.Errorf("%s: loaded", c.path)
			continue
		}
		t.Logf("%v", err)
		if msg := err.Error(); !strings.Contains(msg, c.want) || !strings.Contains(msg, c.path) || strings.Contains(msg, "\n") {
			t.Errorf("%s: error %q, want one line naming the file and saying %q", c.path, msg, c.want)
		}
	}
}

// On a CUDA device the module's parameters move there and its inputs must
// follow; without CUDA, loading there is an error, not a crash.
func TestModuleOnCUDA(t *testing.T) {
	path := golden.Path(t, "eval", "tiny_detector.pt")
	m, err := torch.LoadModule(path, torch.CUDA(0))
	if torch.CUDADeviceCount() == 0 {
		if err == nil || !strings.Contains(err.Error(), "sees 0 CUDA") || strings.Contains(err.Error(), "\n") {
			t.Fatalf("no CUDA: loading onto cuda:0 gave %v, want a one-line error", err)
		}
		t.Logf("no CUDA device: %v", err)
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	s := torch.NewScope()
	defer s.Close()
	f := golden.File(t, "eval", "tiny_detector_golden.safetensors")
	outs, err := m.Forward(golden.Tensor(t, f, "detector.images").ToDevice(m.Device()))
	if err != nil {
		t.Fatal(err)
	}
	// cuDNN's convolutions are not the CPU's: the README's tolerance.
	golden.Compare(t, "cuda detector.boxes", outs[0], golden.Tensor(t, f, "detector.boxes"), 1e-6)
	golden.Compare(t, "cuda detector.scores", outs[1], golden.Tensor(t, f, "detector.scores"), 1e-6)
	golden.Compare(t, "cuda detector.labels", outs[2], golden.Tensor(t, f, "detector.labels"), 0)
}

func TestModuleForwardErrors(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	good := golden.Path(t, "eval", "tiny_detector.pt")
	m, err := torch.LoadModule(good, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	before := torch.LiveTensors()
	for _, c := range []struct {
		name   string
		inputs []*torch.Tensor
		want   string
	}{
		{"no input", nil, "images"},
		{"two inputs", []*torch.Tensor{torch.Zeros(1, 3, 64, 64), torch.Zeros(1)}, "forward"},
		{"wrong channels", []*torch.Tensor{torch.Zeros(1, 4, 64, 64)}, "to have 3 channels, but got 4 channels instead (TorchScript File"},
		{"freed input", []*torch.Tensor{freed()}, "NULL"},
	} {
		_, err := m.Forward(c.inputs...)
		t.Logf("%s: %v", c.name, err)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error %v, want one line containing %q", c.name, err, c.want)
		}
	}
	if after := torch.LiveTensors(); after > before+3 { // the inputs made above
		t.Errorf("failed calls leaked handles: %d live before, %d after", before, after)
	}

	// Results that are not tensors: the module's code edited in place.
	for _, c := range []struct{ sig, ret, want string }{
		{"int", "7", "forward returned int"},
		{"Dict[str, Tensor]", `{"boxes": boxes1}`, "forward returned Dict(str, Tensor)"},
		{"Tuple[Tensor, int]", "(boxes1, 3)", "element 1 is int"},
	} {
		path := golden.DetectorVariant(t, good, filepath.Join(t.TempDir(), "variant.pt"), c.sig, c.ret)
		v, err := torch.LoadModule(path, torch.CPU)
		if err != nil {
			t.Fatalf("%s: %v", c.sig, err)
		}
		_, err = v.Forward(torch.Zeros(1, 3, 64, 64))
		v.Close()
		t.Logf("-> %s: %v", c.sig, err)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("-> %s: error %v, want %q", c.sig, err, c.want)
		}
	}
	// A list of tensors is as good as a tuple.
	v, err := torch.LoadModule(golden.DetectorVariant(t, good, filepath.Join(t.TempDir(), "variant.pt"), "List[Tensor]", "[boxes1, scores1]"), torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if outs, err := v.Forward(torch.Zeros(1, 3, 64, 64)); err != nil || len(outs) != 2 {
		t.Fatalf("list result: %d outputs, %v", len(outs), err)
	}
}

func freed() *torch.Tensor {
	x := torch.Zeros(1)
	x.Free()
	return x
}
