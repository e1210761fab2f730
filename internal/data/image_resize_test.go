package data

import (
	"crypto/sha256"
	"encoding/hex"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/golden"
)

// The hashes are of numpy.asarray(img.resize((w, h), filter,
// reducing_gap=None)).tobytes() computed by Pillow 9.4.0 (Debian bookworm's
// python3-pil, the reference's Pillow) on the same inputs: the golden photo
// and patternPix's pattern.
var pillowResizes = []struct {
	src  string
	w, h int
	f    Filter
	hash string
}{
	{"dog", 56, 56, Bicubic, "5358a6bc648ad200c08f5f7007c7d0b4fb587ac6d29557f640c3cbe8053cbeb4"},
	{"dog", 224, 224, Bicubic, "08093790b321284c6743cfa536cc610a82bec2fd73d8d722d18070e4d2529893"},
	{"dog", 107, 56, Bicubic, "13296e3b537bab5c6fae6a8b6414491041c8fe5aa1803387b286d81da9f120cf"},
	{"dog", 1000, 1001, Bicubic, "4e1242a4fc08914515a64d047e105c299c07f375b3b2711387b108e2f67cee71"},
	{"dog", 780, 100, Bicubic, "30ccd9a046100335de0647a9cd521ec46422d87060945fbc90d47259178b146a"},
	{"dog", 100, 780, Bicubic, "a3361118d0f0315143fd572135dc91f1975d356789d608e165835320fd8d4acc"},
	{"dog", 333, 517, Bilinear, "569397d44f8c55038309038465eea45972d0835e1fb83ac4773092792b3a45b5"},
	{"dog", 64, 48, Bilinear, "0e4b4b882ddbaa2192fc1393f30332dac7688700e233df2d5f0d27e09d593669"},
	{"dog", 50, 1200, Nearest, "f5a067dcee5f7d59e95933fb98a5b23c5514243383e2b09b620bfa6a0760de62"},
	{"dog", 97, 61, Nearest, "17246acded34e7def5a579decea92a3bf2010f42bf9c1d2aad25e67a983c8102"},
	{"rgb13x7", 5, 3, Bicubic, "e59e5215c826b8e081756b8bf17807da3ff2ed8063a6b766f8957a44e5316ecd"},
	{"rgb13x7", 29, 17, Bicubic, "a997443c3c265fc9fe6ad162cf3d03bcdaff5c17731d42ffed81e57fd604c26e"},
	{"rgb13x7", 5, 3, Bilinear, "a4899cff426a5c8b6963d7e3d6650e9edda52b71869cc69dd17f77afaa8b55d5"},
	{"rgb13x7", 29, 17, Bilinear, "4af76a2b7f6e9c1b257fd3c2d6a019d7042725d907bd436c98861772f09fc8d7"},
	{"rgb13x7", 5, 3, Nearest, "ef160e5da33cb77c7599ab02e8f0b2dcea4108e9c2cd0496e6128990409993d7"},
	{"rgb13x7", 29, 17, Nearest, "d5e8597e93abc53adaa509ec92546448bfb78bb4de5462cc610de108ac9c5e08"},
	{"rgb13x7", 1, 1, Bicubic, "4196a19110814061245e68a2a48c679f6feda4656954ecc368262c340e06916e"},
	{"gray13x7", 4, 9, Bicubic, "2647705b8d189eb93b0726e475963741c0616c1cbc0e7fb7ff756be5b24fd707"},
	{"gray13x7", 40, 2, Bilinear, "f733186830a6751b3e904b14f2b5b7ceb6b43f9347c83c3b79623d4951393629"},
	{"gray13x7", 3, 30, Nearest, "c0856bfa4b3e3f153f0f568ffd4e8293d9989ca2ca79fe29e551cf70918b0bde"},
}

func TestResizeMatchesPillow(t *testing.T) {
	dog, err := ReadImage(golden.Path(t, "tiny-ip-adapter", "dog00_decoded_pil.png"))
	if err != nil {
		t.Fatal(err)
	}
	rgb := &RGB{W: 13, H: 7, Pix: patternPix(13, 7, 3)}
	gray := &Gray{W: 13, H: 7, Pix: patternPix(13, 7, 1)}
	for _, c := range pillowResizes {
		var pix []uint8
		switch c.src {
		case "dog":
			pix = dog.Resize(c.w, c.h, c.f).Pix
		case "rgb13x7":
			pix = rgb.Resize(c.w, c.h, c.f).Pix
		case "gray13x7":
			pix = gray.Resize(c.w, c.h, c.f).Pix
		}
		sum := sha256.Sum256(pix)
		if got := hex.EncodeToString(sum[:]); got != c.hash {
			t.Errorf("%s to %dx%d %v: sha256 %s, Pillow's %s", c.src, c.w, c.h, c.f, got, c.hash)
		}
	}
}

// patternPix is a w x h pattern with c channels that has edges in every
// direction: (37x + 91y + 53ch + 7xy) mod 256.
func patternPix(w, h, c int) []uint8 {
	pix := make([]uint8, 0, w*h*c)
	for y := range h {
		for x := range w {
			for ch := range c {
				pix = append(pix, uint8((x*37+y*91+ch*53+x*y*7)%256))
			}
		}
	}
	return pix
}

func TestResizeSameSizeCopies(t *testing.T) {
	m := &RGB{W: 13, H: 7, Pix: patternPix(13, 7, 3)}
	for _, f := range []Filter{Nearest, Bilinear, Bicubic} {
		out := m.Resize(13, 7, f)
		if string(out.Pix) != string(m.Pix) {
			t.Errorf("%v: resize to the same size changed the pixels", f)
		}
		out.Pix[0]++
		if out.Pix[0] == m.Pix[0] {
			t.Errorf("%v: resize to the same size shares the pixels", f)
		}
	}
}

func TestFixedWeightsSumToOne(t *testing.T) {
	// Rounding each weight on its own can leave the sum a unit or two off
	// 2^22, but never more: a flat image stays flat.
	for _, n := range []int{7, 56, 780} {
		for _, out := range []int{1, 3, 56, 107, 1001} {
			for _, f := range []Filter{Bilinear, Bicubic} {
				pw := pillowWeights(n, out, resampleKernels[f])
				for i, ks := range pw.fixed {
					var sum int32
					for _, k := range ks {
						sum += k
					}
					if d := int(sum - 1<<precisionBits); d < -len(ks) || d > len(ks) {
						t.Fatalf("%v %d->%d: weights of output %d sum to 2^22%+d", f, n, out, i, d)
					}
				}
			}
		}
	}
	flat := &RGB{W: 31, H: 17, Pix: make([]uint8, 31*17*3)}
	for i := range flat.Pix {
		flat.Pix[i] = 200
	}
	for _, p := range flat.Resize(11, 40, Bicubic).Pix {
		if p != 200 {
			t.Fatalf("flat 200 image resized to %d", p)
		}
	}
}

func TestResizeRejectsBadArguments(t *testing.T) {
	m := NewRGB(4, 4)
	for _, c := range []struct {
		name string
		f    func()
	}{
		{"zero width", func() { m.Resize(0, 3, Bicubic) }},
		{"lanczos", func() { m.Resize(3, 3, Filter(1)) }},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", c.name)
				}
			}()
			c.f()
		}()
	}
}
