package torch

import (
	"math"
	"testing"
)

func TestCreationAndDataRoundTrip(t *testing.T) {
	s := NewScope()
	defer s.Close()

	f := New([]float32{1, 2, 3, 4, 5, 6}, 2, 3)
	assertShape(t, "new", f, 2, 3)
	if f.DType() != Float32 || f.Device() != CPU || f.Numel() != 6 || f.Dim() != 2 || f.Size(-1) != 3 {
		t.Fatalf("metadata of %v", f)
	}
	assertClose(t, "f32", f64s(f), []float64{1, 2, 3, 4, 5, 6}, 0)

	if got := Data[int64](New([]int64{-3, 1 << 40})); got[0] != -3 || got[1] != 1<<40 {
		t.Fatalf("i64 round trip: %v", got)
	}
	if got := Data[bool](New([]bool{true, false, true})); !got[0] || got[1] || !got[2] {
		t.Fatalf("bool round trip: %v", got)
	}
	if got := Data[uint8](New([]uint8{0, 255})); got[1] != 255 {
		t.Fatalf("u8 round trip: %v", got)
	}
	if got := Data[float64](New([]float64{math.Pi})); got[0] != math.Pi {
		t.Fatalf("f64 round trip: %v", got)
	}
	// f16 1.0 = 0x3c00, -2.0 = 0xc000; bf16 1.0 = 0x3f80, 0.5 = 0x3f00 (little endian).
	h := FromBytes([]byte{0x00, 0x3c, 0x00, 0xc0}, Float16, 2)
	assertClose(t, "f16", f64s(h), []float64{1, -2}, 0)
	b := FromBytes([]byte{0x80, 0x3f, 0x00, 0x3f}, BFloat16, 2)
	assertClose(t, "bf16", f64s(b), []float64{1, 0.5}, 0)
	if got := b.Bytes(); len(got) != 4 || got[1] != 0x3f || got[3] != 0x3f {
		t.Fatalf("bf16 bytes: %x", got)
	}
	if got := New([]float32{1.5}).To(Float16).To(Float32).Item(); got != 1.5 {
		t.Fatalf("f32->f16->f32: %v", got)
	}

	assertClose(t, "zeros", f64s(Zeros(2, 2)), []float64{0, 0, 0, 0}, 0)
	assertClose(t, "ones", f64s(Options{DType: Int64}.Ones(3)), []float64{1, 1, 1}, 0)
	assertClose(t, "full", f64s(Full(2.5, 2)), []float64{2.5, 2.5}, 0)
	assertClose(t, "arange", f64s(Arange(0, 1, 0.25)), []float64{0, 0.25, 0.5, 0.75}, 0)
	assertClose(t, "linspace", f64s(Linspace(-1, 1, 5)), []float64{-1, -0.5, 0, 0.5, 1}, 1e-7)
	assertClose(t, "zeros_like", f64s(ZerosLike(f)), make([]float64, 6), 0)
	if OnesLike(h).DType() != Float16 {
		t.Fatal("ones_like kept no dtype")
	}

	c := f.Clone()
	c.Fill(7)
	assertClose(t, "fill leaves the original", f64s(f), []float64{1, 2, 3, 4, 5, 6}, 0)
	c.CopyFrom(New([]float32{1, 2, 3}))
	assertClose(t, "copy_ broadcasts", f64s(c), []float64{1, 2, 3, 1, 2, 3}, 0)
}

func TestGeneratorsMatchPyTorch(t *testing.T) {
	s := NewScope()
	defer s.Close()
	// Values printed by torch 1.13 for torch.Generator().manual_seed(seed).
	assertClose(t, "randn(3) seed 0", f64s(Randn(NewGenerator(0), 3)),
		[]float64{1.5409961, -0.2934289, -2.1787894}, 1e-6)
	assertClose(t, "rand(3) seed 0", f64s(Rand(NewGenerator(0), 3)),
		[]float64{0.49625658988952637, 0.7682217955589294, 0.08847743272781372}, 1e-7)
	// 16 and more values take libtorch's vectorised normal path.
	x := Randn(NewGenerator(42), 20).Float64s()
	assertClose(t, "randn(20) seed 42", []float64{x[0], x[7], x[16], x[19]},
		[]float64{1.9269152879714966, 1.680620551109314, -0.3097267746925354, -0.6215953826904297}, 1e-7)
	assertClose(t, "randn f64", f64s(Options{DType: Float64}.Randn(NewGenerator(42), 2, 4))[:3],
		[]float64{0.33669035438385886, 0.1288094051365897, 0.23446236336153173}, 1e-15)

	// A saved state replays the same numbers.
	g := NewGenerator(7)
	Randn(g, 5)
	state := g.State()
	a := Randn(g, 5).Float64s()
	g.SetState(state)
	assertClose(t, "replay from state", Randn(g, 5).Float64s(), a, 0)

	ManualSeed(0)
	assertClose(t, "manual_seed default generator", f64s(Options{}.Randn(nil, 3)),
		[]float64{1.5409961, -0.2934289, -2.1787894}, 1e-6)
}

func TestDTypeAndDeviceParsing(t *testing.T) {
	for in, want := range map[string]DType{"fp32": Float32, "fp16": Float16, "bf16": BFloat16, "float16": Float16} {
		if got, err := ParseDType(in); err != nil || got != want {
			t.Errorf("ParseDType(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ParseDType("fp8"); err == nil {
		t.Error("ParseDType accepted fp8")
	}
	for in, want := range map[string]Device{"cpu": CPU, "cuda": CUDA(0), "cuda:3": CUDA(3)} {
		if got, err := ParseDevice(in); err != nil || got != want {
			t.Errorf("ParseDevice(%q) = %v, %v", in, got, err)
		}
	}
	for _, bad := range []string{"gpu", "cuda:", "cuda:-1", "cuda:x", ""} {
		if _, err := ParseDevice(bad); err == nil {
			t.Errorf("ParseDevice(%q) accepted", bad)
		}
	}
	if Float16.Size() != 2 || Int64.Size() != 8 || !BFloat16.IsFloat() || Int32.IsFloat() {
		t.Error("dtype sizes or kinds")
	}
}
