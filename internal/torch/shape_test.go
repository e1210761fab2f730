package torch

import "testing"

func TestShapeOps(t *testing.T) {
	s := NewScope()
	defer s.Close()
	x := Arange(0, 24, 1).Reshape(2, 3, 4) // x[i][j][k] = 12i + 4j + k

	assertShape(t, "view", x.View(6, -1), 6, 4)
	p := x.Permute(2, 0, 1)
	assertShape(t, "permute", p, 4, 2, 3)
	// p[k][i][j] = x[i][j][k], so p's second element, p[0][0][1], is x[0][1][0] = 4.
	if got := p.Contiguous().Float64s()[1]; got != 4 {
		t.Fatalf("permute values: p[0,0,1] = %v, want 4", got)
	}
	assertClose(t, "transpose", f64s(x.Select(0, 0).Transpose(0, 1).Select(0, 1)), []float64{1, 5, 9}, 0)

	a, b := Ones(2, 2), Zeros(1, 2)
	assertShape(t, "cat", Cat([]*Tensor{a, b}, 0), 3, 2)
	assertShape(t, "stack", Stack([]*Tensor{a, a}, 1), 2, 2, 2)

	parts := Arange(0, 5, 1).Chunk(2, 0)
	if len(parts) != 2 {
		t.Fatalf("chunk into %d parts", len(parts))
	}
	assertClose(t, "chunk[1]", f64s(parts[1]), []float64{3, 4}, 0)
	sp := Arange(0, 6, 1).Split([]int64{1, 2, 3}, 0)
	assertClose(t, "split[2]", f64s(sp[2]), []float64{3, 4, 5}, 0)

	r := Arange(0, 10, 1)
	assertClose(t, "narrow", f64s(r.Narrow(0, 2, 3)), []float64{2, 3, 4}, 0)
	assertClose(t, "slice step", f64s(r.Slice(0, 1, End, 3)), []float64{1, 4, 7}, 0)
	assertClose(t, "slice negative", f64s(r.Slice(0, -2, End, 1)), []float64{8, 9}, 0)
	assertClose(t, "select", f64s(x.Select(1, 2).Select(0, 1)), []float64{20, 21, 22, 23}, 0)
	assertClose(t, "index_select", f64s(r.IndexSelect(0, New([]int64{9, 0, 9}))), []float64{9, 0, 9}, 0)
	g := New([]float32{1, 2, 3, 4}, 2, 2).Gather(1, New([]int64{1, 0, 0, 0}, 2, 2))
	assertClose(t, "gather", f64s(g), []float64{2, 1, 3, 3}, 0)

	u := Zeros(3).Unsqueeze(0).Unsqueeze(2)
	assertShape(t, "unsqueeze", u, 1, 3, 1)
	assertShape(t, "squeeze dim", u.Squeeze(0), 3, 1)
	assertShape(t, "squeeze all", u.SqueezeAll(), 3)
	e := New([]float32{1, 2}, 2, 1).Expand(2, 3)
	assertClose(t, "expand", f64s(e), []float64{1, 1, 1, 2, 2, 2}, 0)
	assertClose(t, "expand -1", f64s(New([]float32{1, 2}, 2, 1).Expand(-1, 2)), []float64{1, 1, 2, 2}, 0)
	assertClose(t, "repeat", f64s(New([]float32{1, 2}).Repeat(2)), []float64{1, 2, 1, 2}, 0)
	assertShape(t, "flatten", x.Flatten(1, -1), 2, 12)
}
