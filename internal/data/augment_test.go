package data

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// testRef is a 16 x 16 reference: a red subject on [3,7) x [2,10), its
// pixels told apart by their green and blue (under 64), on white.
func testRef() Ref {
	mask := squareMask(16, 16, 3, 2, 7, 10)
	img := NewRGB(16, 16)
	for i := range 16 * 16 {
		img.Pix[3*i], img.Pix[3*i+1], img.Pix[3*i+2] = 255, uint8(i%64), uint8(i/4)
	}
	whiten(img, mask)
	box, _ := maskBox(mask)
	return Ref{Image: img, Mask: mask, Box: box}
}

// TestFlipMirrors: a flip alone mirrors image and mask pixel for pixel,
// and the box with them.
func TestFlipMirrors(t *testing.T) {
	in := testRef()
	out, ok := Geometry{Flip: true, Scale: 1}.Apply(in)
	if !ok {
		t.Fatal("the subject is lost")
	}
	for y := range 16 {
		for x := range 16 {
			if out.Mask.At(x, y) != in.Mask.At(15-x, y) {
				t.Fatalf("mask (%d,%d) is not mask (%d,%d)", x, y, 15-x, y)
			}
			r, g, b := out.Image.At(x, y)
			r2, g2, b2 := in.Image.At(15-x, y)
			if r != r2 || g != g2 || b != b2 {
				t.Fatalf("image (%d,%d) is not image (%d,%d)", x, y, 15-x, y)
			}
		}
	}
	if want := (Box{1 - in.Box[2], in.Box[1], 1 - in.Box[0], in.Box[3]}); out.Box != want {
		t.Fatalf("box %v, want the mirror of %v, %v", out.Box, in.Box, want)
	}
	if same, _ := (Geometry{Scale: 1}).Apply(in); !bytes.Equal(same.Image.Pix, in.Image.Pix) || same.Box != in.Box {
		t.Fatal("the identity geometry changes the reference")
	}
}

// TestAugmentKeepsMaskInBoxAndAligned: over many draws, the box is the
// moved mask's tight bounding box, and the image under the mask is the
// subject's (red), not the white around it: image and mask moved together.
func TestAugmentKeepsMaskInBoxAndAligned(t *testing.T) {
	a := DefaultAugment()
	a.MaxAngle, a.MaxShift, a.MinScale, a.MaxScale = 30, 0.2, 0.6, 1.3
	a.Brightness, a.Contrast, a.Saturation, a.Hue = 0, 0, 0, 0 // keep the red red
	r := rand.New(rand.NewPCG(3, 4))
	in := testRef()
	for n := range 200 {
		out := a.Apply(r, in)
		x0, y0 := int(out.Box[0]*16+.5), int(out.Box[1]*16+.5)
		x1, y1 := int(out.Box[2]*16+.5), int(out.Box[3]*16+.5)
		touches := [4]bool{}
		for y := range 16 {
			for x := range 16 {
				if out.Mask.At(x, y) == 0 {
					continue
				}
				if x < x0 || x >= x1 || y < y0 || y >= y1 {
					t.Fatalf("draw %d: mask pixel (%d,%d) outside box %v", n, x, y, out.Box)
				}
				touches[0] = touches[0] || x == x0
				touches[1] = touches[1] || y == y0
				touches[2] = touches[2] || x == x1-1
				touches[3] = touches[3] || y == y1-1
				// Bilinear gives the pixel the mask took at least a
				// quarter weight, so green and blue are at most
				// 63/4 + 255*3/4 = 207.
				if r, g, b := out.Image.At(x, y); r != 255 || max(g, b) > 207 {
					t.Fatalf("draw %d: (%d,%d) in the mask is (%d,%d,%d), not the subject", n, x, y, r, g, b)
				}
			}
		}
		if touches != [4]bool{true, true, true, true} {
			t.Fatalf("draw %d: box %v is not tight", n, out.Box)
		}
	}
}

func TestBlendIsPillows(t *testing.T) {
	for _, c := range []struct {
		from, to uint8
		alpha    float32
		want     uint8
	}{
		{0, 200, 0.5, 100},
		{0, 201, 0.5, 100}, // 100.5, truncated
		{100, 200, 1.5, 250},
		{100, 200, 2, 255}, // 300, clipped
		{100, 0, 1.5, 0},   // -50, clipped
		{37, 180, 1, 180},
	} {
		if got := blend(c.from, c.to, c.alpha); got != c.want {
			t.Errorf("blend(%d, %d, %g) = %d, want %d", c.from, c.to, c.alpha, got, c.want)
		}
	}
}

func TestEnhanceEnds(t *testing.T) {
	in := testRef().Image
	fresh := func() *RGB { return &RGB{W: in.W, H: in.H, Pix: append([]uint8(nil), in.Pix...)} }
	for name, f := range map[string]func(*RGB, float64){"brightness": brightness, "contrast": contrast, "saturation": saturation} {
		m := fresh()
		f(m, 1)
		if !bytes.Equal(m.Pix, in.Pix) {
			t.Errorf("%s 1 changes the image", name)
		}
	}
	m := fresh()
	brightness(m, 0)
	if m.Pix[0] != 0 || m.Pix[len(m.Pix)-1] != 0 {
		t.Error("brightness 0 is not black")
	}
	m = fresh()
	saturation(m, 0)
	if l := pillowLuma(in.At(4, 4)); m.Pix[(4*16+4)*3] != l || m.Pix[(4*16+4)*3+2] != l {
		t.Error("saturation 0 is not the luma")
	}
	m = fresh()
	contrast(m, 0)
	for _, v := range m.Pix {
		if v != m.Pix[0] {
			t.Fatal("contrast 0 is not flat")
		}
	}
}

// TestHue: a third of a turn takes red to green and green to blue, through
// Pillow's 8-bit HSV (hue 85 is 2 of 6 sectors exactly).
func TestHue(t *testing.T) {
	if h, s, v := rgbToHSV(255, 0, 0); h != 0 || s != 255 || v != 255 {
		t.Fatalf("red is HSV (%d,%d,%d)", h, s, v)
	}
	m := &RGB{W: 2, H: 1, Pix: []uint8{255, 0, 0, 0, 255, 0}}
	hue(m, 1.0/3)
	if !bytes.Equal(m.Pix, []uint8{0, 255, 0, 0, 0, 255}) {
		t.Fatalf("red and green turned a third are %v", m.Pix)
	}
	grey := &RGB{W: 1, H: 1, Pix: []uint8{90, 90, 90}}
	hue(grey, 0.25)
	if !bytes.Equal(grey.Pix, []uint8{90, 90, 90}) {
		t.Fatalf("grey changed hue: %v", grey.Pix)
	}
}

// TestJitterKeepsWhiteBackground: however the colours move, the DA-Encoder
// sees its subject on white.
func TestJitterKeepsWhiteBackground(t *testing.T) {
	in := testRef()
	j := Jitter{Order: [4]int{3, 2, 1, 0}, Brightness: 0.6, Contrast: 1.4, Saturation: 0.5, Hue: 0.2}
	out := j.Apply(in)
	for i, v := range in.Mask.Pix {
		if v == 0 && (out.Image.Pix[3*i] != 255 || out.Image.Pix[3*i+1] != 255 || out.Image.Pix[3*i+2] != 255) {
			t.Fatalf("background pixel %d is not white", i)
		}
	}
	if bytes.Equal(out.Image.Pix, in.Image.Pix) {
		t.Fatal("jitter changed nothing")
	}
}
