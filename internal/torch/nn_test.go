package torch

import (
	"math"
	"testing"
)

// The functionals are checked against plain Go loops written from their
// definitions (PyTorch's documentation), in f64.

func conv2dRef(x []float64, n, c, h, w int, k []float64, o, kh, kw int, bias []float64,
	stride, pad, dil, groups int) ([]float64, int, int) {
	oh := (h+2*pad-dil*(kh-1)-1)/stride + 1
	ow := (w+2*pad-dil*(kw-1)-1)/stride + 1
	cg, og := c/groups, o/groups
	out := make([]float64, n*o*oh*ow)
	for b := 0; b < n; b++ {
		for oc := 0; oc < o; oc++ {
			g := oc / og
			for y := 0; y < oh; y++ {
				for xx := 0; xx < ow; xx++ {
					sum := 0.0
					if bias != nil {
						sum = bias[oc]
					}
					for ic := 0; ic < cg; ic++ {
						for i := 0; i < kh; i++ {
							for j := 0; j < kw; j++ {
								iy, ix := y*stride-pad+i*dil, xx*stride-pad+j*dil
								if iy < 0 || iy >= h || ix < 0 || ix >= w {
									continue
								}
								sum += x[((b*c+g*cg+ic)*h+iy)*w+ix] * k[((oc*cg+ic)*kh+i)*kw+j]
							}
						}
					}
					out[((b*o+oc)*oh+y)*ow+xx] = sum
				}
			}
		}
	}
	return out, oh, ow
}

func TestLinear(t *testing.T) {
	s := NewScope()
	defer s.Close()
	x := New([]float64{1, 2, 3, 4, 5, 6}, 2, 3)
	w := New([]float64{1, 0, -1, 2, 1, 0}, 2, 3)
	b := New([]float64{0.5, -1})
	assertClose(t, "linear", f64s(Linear(x, w, b)), []float64{-1.5, 3, -1.5, 12}, 0)
	assertClose(t, "linear no bias", f64s(Linear(x, w, nil)), []float64{-2, 4, -2, 13}, 0)
}

func TestConv2d(t *testing.T) {
	s := NewScope()
	defer s.Close()
	for _, c := range []struct{ stride, pad, dil, groups int }{{1, 1, 1, 1}, {2, 0, 1, 1}, {1, 2, 2, 1}, {1, 1, 1, 2}} {
		x := randomF64(1, 2, 4, 7, 6)
		k := randomF64(2, 6, 4/int64(c.groups), 3, 3)
		b := randomF64(3, 6)
		got := Conv2d(x, k, b, ConvOptions{Stride: Square2(int64(c.stride)), Padding: Square2(int64(c.pad)),
			Dilation: Square2(int64(c.dil)), Groups: int64(c.groups)})
		want, oh, ow := conv2dRef(f64s(x), 2, 4, 7, 6, f64s(k), 6, 3, 3, f64s(b), c.stride, c.pad, c.dil, c.groups)
		assertShape(t, "conv2d", got, 2, 6, int64(oh), int64(ow))
		assertClose(t, "conv2d", f64s(got), want, 1e-12)
	}
}

func TestGroupAndLayerNorm(t *testing.T) {
	s := NewScope()
	defer s.Close()
	const n, c, hw, groups, eps = 2, 6, 5, 3, 1e-5
	x := randomF64(4, n, c, hw)
	w, b := randomF64(5, c), randomF64(6, c)
	xv, wv, bv := f64s(x), f64s(w), f64s(b)
	want := make([]float64, len(xv))
	per := c / groups * hw
	for i := 0; i < n*groups; i++ {
		seg := xv[i*per : (i+1)*per]
		mean, v := 0.0, 0.0
		for _, e := range seg {
			mean += e
		}
		mean /= float64(per)
		for _, e := range seg {
			v += (e - mean) * (e - mean)
		}
		v /= float64(per)
		for j := range seg {
			ch := (i%groups)*(c/groups) + j/hw
			want[i*per+j] = (seg[j]-mean)/math.Sqrt(v+eps)*wv[ch] + bv[ch]
		}
	}
	assertClose(t, "group_norm", f64s(GroupNorm(x, groups, w, b, eps)), want, 1e-12)

	y := randomF64(7, 3, 4)
	lw, lb := randomF64(8, 4), randomF64(9, 4)
	yv, lwv, lbv := f64s(y), f64s(lw), f64s(lb)
	want = make([]float64, 12)
	for r := 0; r < 3; r++ {
		row := yv[r*4 : r*4+4]
		mean, v := 0.0, 0.0
		for _, e := range row {
			mean += e / 4
		}
		for _, e := range row {
			v += (e - mean) * (e - mean) / 4
		}
		for j := range row {
			want[r*4+j] = (row[j]-mean)/math.Sqrt(v+eps)*lwv[j] + lbv[j]
		}
	}
	assertClose(t, "layer_norm", f64s(LayerNorm(y, []int64{4}, lw, lb, eps)), want, 1e-12)
}

func softmaxRef(row []float64) []float64 {
	m := math.Inf(-1)
	for _, v := range row {
		m = math.Max(m, v)
	}
	out, sum := make([]float64, len(row)), 0.0
	for i, v := range row {
		out[i] = math.Exp(v - m)
		sum += out[i]
	}
	for i := range out {
		out[i] /= sum
	}
	return out
}

func TestSoftmaxAndAttention(t *testing.T) {
	s := NewScope()
	defer s.Close()
	x := New([]float64{1, 2, 3, -1, 0, 1}, 2, 3)
	want := append(softmaxRef([]float64{1, 2, 3}), softmaxRef([]float64{-1, 0, 1})...)
	assertClose(t, "softmax", f64s(x.Softmax(-1)), want, 1e-12)
	logWant := make([]float64, 6)
	for i, v := range want {
		logWant[i] = math.Log(v)
	}
	assertClose(t, "log_softmax", f64s(x.LogSoftmax(1)), logWant, 1e-12)

	const L, S, E = 3, 4, 5
	q, k, v := randomF64(10, 2, L, E), randomF64(11, 2, S, E), randomF64(12, 2, S, E)
	additive := randomF64(13, L, S)
	keep := New([]bool{true, false, true, true}) // broadcasts over queries
	qv, kv, vv, mv := f64s(q), f64s(k), f64s(v), f64s(additive)
	ref := func(scale float64, mask func(i, j int) (float64, bool)) (out, probs []float64) {
		for b := 0; b < 2; b++ {
			for i := 0; i < L; i++ {
				scores := make([]float64, S)
				for j := 0; j < S; j++ {
					dot := 0.0
					for e := 0; e < E; e++ {
						dot += qv[(b*L+i)*E+e] * kv[(b*S+j)*E+e]
					}
					add, ok := mask(i, j)
					scores[j] = dot*scale + add
					if !ok {
						scores[j] = math.Inf(-1)
					}
				}
				p := softmaxRef(scores)
				probs = append(probs, p...)
				for e := 0; e < E; e++ {
					o := 0.0
					for j := 0; j < S; j++ {
						o += p[j] * vv[(b*S+j)*E+e]
					}
					out = append(out, o)
				}
			}
		}
		return out, probs
	}
	defScale := 1 / math.Sqrt(E)
	wantOut, wantProbs := ref(defScale, func(i, j int) (float64, bool) { return 0, true })
	assertClose(t, "attention", f64s(Attention(q, k, v, nil, 0)), wantOut, 1e-12)
	o, p := AttentionProbs(q, k, v, nil, 0)
	assertClose(t, "attention_probs out", f64s(o), wantOut, 1e-12)
	assertClose(t, "attention_probs probs", f64s(p), wantProbs, 1e-12)

	wantOut, wantProbs = ref(0.3, func(i, j int) (float64, bool) { return mv[i*S+j], true })
	assertClose(t, "attention additive mask", f64s(Attention(q, k, v, additive, 0.3)), wantOut, 1e-12)
	_, p = AttentionProbs(q, k, v, additive, 0.3)
	assertClose(t, "probs additive mask", f64s(p), wantProbs, 1e-12)

	wantOut, wantProbs = ref(defScale, func(i, j int) (float64, bool) { return 0, j != 1 })
	assertClose(t, "attention boolean mask", f64s(Attention(q, k, v, keep, 0)), wantOut, 1e-12)
	_, p = AttentionProbs(q, k, v, keep, 0)
	assertClose(t, "probs boolean mask", f64s(p), wantProbs, 1e-12)
}

func TestInterpolateAndPool(t *testing.T) {
	s := NewScope()
	defer s.Close()
	x := New([]float64{1, 2, 3, 4}, 1, 1, 2, 2)
	assertClose(t, "nearest x2", f64s(Interpolate(x, InterpolateOptions{Mode: Nearest, Scale: [2]float64{2, 2}})),
		[]float64{1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4}, 0)

	// Bilinear, align_corners=False: source = (dst + 0.5) * in/out - 0.5, clamped at 0.
	in := randomF64(14, 1, 1, 3, 4)
	iv := f64s(in)
	const oh, ow = 5, 7
	src := func(d, inSize, outSize int) (int, int, float64) {
		f := math.Max((float64(d)+0.5)*float64(inSize)/float64(outSize)-0.5, 0)
		i0 := int(f)
		i1 := min(i0+1, inSize-1)
		return i0, i1, f - float64(i0)
	}
	want := make([]float64, 0, oh*ow)
	for y := 0; y < oh; y++ {
		y0, y1, ly := src(y, 3, oh)
		for xx := 0; xx < ow; xx++ {
			x0, x1, lx := src(xx, 4, ow)
			top := iv[y0*4+x0]*(1-lx) + iv[y0*4+x1]*lx
			bot := iv[y1*4+x0]*(1-lx) + iv[y1*4+x1]*lx
			want = append(want, top*(1-ly)+bot*ly)
		}
	}
	assertClose(t, "bilinear", f64s(Interpolate(in, InterpolateOptions{Mode: Bilinear, Size: [2]int64{oh, ow}})), want, 1e-12)
	// Corner-aligned bilinear keeps the corners exactly.
	ac := f64s(Interpolate(in, InterpolateOptions{Mode: Bilinear, Size: [2]int64{oh, ow}, AlignCorners: true}))
	assertClose(t, "align_corners corners", []float64{ac[0], ac[oh*ow-1]}, []float64{iv[0], iv[11]}, 1e-12)
	assertShape(t, "bicubic antialias", Interpolate(in, InterpolateOptions{Mode: Bicubic, Size: [2]int64{2, 2}, Antialias: true}), 1, 1, 2, 2)

	p := AvgPool2d(Arange(0, 16, 1).Reshape(1, 1, 4, 4), Square2(2), [2]int64{}, [2]int64{})
	assertClose(t, "avg_pool2d", f64s(p), []float64{2.5, 4.5, 10.5, 12.5}, 0)

	if got := f64s(Dropout(Ones(100), 0.5, false)); got[0] != 1 || got[99] != 1 {
		t.Fatal("dropout in eval mode changed values")
	}
	d := f64s(Dropout(Ones(1000), 0.5, true))
	zeros := 0
	for _, v := range d {
		if v == 0 {
			zeros++
		} else if v != 2 {
			t.Fatalf("dropout kept value %v, want 2", v)
		}
	}
	if zeros < 400 || zeros > 600 {
		t.Fatalf("dropout p=0.5 zeroed %d of 1000", zeros)
	}
}
