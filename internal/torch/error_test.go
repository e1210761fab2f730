package torch

import (
	"errors"
	"strings"
	"testing"
)

func TestErrorsNameOpAndShapes(t *testing.T) {
	s := NewScope()
	defer s.Close()
	a := Zeros(2, 3)

	e := mustPanicError(t, func() { a.Add(Zeros(4)) })
	if e.Op != "add" || !strings.Contains(e.Inputs, "[2 3] f32 cpu") || !strings.Contains(e.Inputs, "[4] f32 cpu") ||
		!strings.Contains(e.Msg, "must match") {
		t.Fatalf("shape mismatch error: %v", e)
	}
	if strings.Contains(e.Error(), "\n") {
		t.Fatalf("error spans lines: %q", e.Error())
	}

	e = mustPanicError(t, func() { a.Matmul(Options{DType: Float64}.Zeros(3, 2)) })
	if e.Op != "matmul" || !strings.Contains(e.Inputs, "f32") || !strings.Contains(e.Inputs, "f64") {
		t.Fatalf("dtype mismatch error: %v", e)
	}

	if CUDADeviceCount() == 0 {
		e = mustPanicError(t, func() { a.ToDevice(CUDA(0)) })
		if e.Op != "to_device" {
			t.Fatalf("device error: %v", e)
		}
	} else {
		g := a.ToDevice(CUDA(0))
		e = mustPanicError(t, func() { a.Add(g) })
		if !strings.Contains(e.Inputs, "cuda:0") || !strings.Contains(e.Inputs, "cpu") {
			t.Fatalf("device mismatch error: %v", e)
		}
	}

	e = mustPanicError(t, func() { a.IndexSelect(1, New([]int64{0, 10})) })
	if e.Op != "index_select" || !(strings.Contains(e.Msg, "out of range") || strings.Contains(e.Msg, "bounds")) {
		t.Fatalf("index error: %v", e)
	}
	e = mustPanicError(t, func() { a.Select(0, 5) })
	if e.Op != "select" || !strings.Contains(e.Msg, "out of range") {
		t.Fatalf("select error: %v", e)
	}
	mustPanicError(t, func() { a.Gather(1, New([]int64{0, 7, 0, 0, 0, 0}, 2, 3)) })
	mustPanicError(t, func() { a.Size(2) })
	e = mustPanicError(t, func() { Conv2d(Zeros(1, 3, 8, 8), Zeros(4, 2, 3, 3), nil, ConvOptions{}) })
	if e.Op != "conv2d" || !strings.Contains(e.Msg, "channels") {
		t.Fatalf("conv2d error: %v", e)
	}
	mustPanicError(t, func() { a.Reshape(4, 2) })
	mustPanicError(t, func() { a.Transpose(0, 1).View(6) })
	mustPanicError(t, func() { Data[float64](a) })
	mustPanicError(t, func() { Cat(nil, 0) })
	mustPanicError(t, func() { New([]float32{1, 2, 3}, 2, 2) })
	mustPanicError(t, func() { Options{DType: DType(99)}.Zeros(1) })
	mustPanicError(t, func() { a.Sum().Backward() }) // nothing requires grad

	// A freed tensor and a nil tensor are errors, not crashes.
	b := Ones(3)
	b.Free()
	b.Free()
	e = mustPanicError(t, func() { b.Add(b) })
	if !strings.Contains(e.Inputs, "<freed>") || !strings.Contains(e.Msg, "NULL") {
		t.Fatalf("freed tensor error: %v", e)
	}
	var nilTensor *Tensor
	mustPanicError(t, func() { Linear(nilTensor, a, nil) })
	mustPanicError(t, func() { nilTensor.Shape() })
}

func TestRecoverKeepsOtherPanics(t *testing.T) {
	run := func(f func()) (err error) {
		defer Recover(&err)
		f()
		return nil
	}
	err := run(func() { Zeros(2).Add(Zeros(3)) })
	var te *Error
	if !errors.As(err, &te) || te.Op != "add" {
		t.Fatalf("Recover gave %v", err)
	}
	defer func() {
		if r := recover(); r != "not a torch error" {
			t.Fatalf("foreign panic was swallowed or changed: %v", r)
		}
	}()
	_ = run(func() { panic("not a torch error") })
}
