package data

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/golden"
)

func TestReadJPEGMatchesPillow(t *testing.T) {
	jpegPath := golden.Path(t, "tiny-ip-adapter", "dog00.jpg")
	got, err := ReadImage(jpegPath)
	if err != nil {
		t.Fatal(err)
	}
	want, err := ReadImage(golden.Path(t, "tiny-ip-adapter", "dog00_decoded_pil.png"))
	if err != nil {
		t.Fatal(err)
	}
	if got.W != 780 || got.H != 780 || want.W != 780 || want.H != 780 {
		t.Fatalf("decoded %dx%d and %dx%d, want 780x780", got.W, got.H, want.W, want.H)
	}
	n := countDiffering(got.Pix, want.Pix)
	t.Logf("libjpeg-turbo vs Pillow: %d of %d values differ", n, len(want.Pix))
	if n != 0 {
		t.Errorf("%d of %d values differ from Pillow's decoding", n, len(want.Pix))
	}

	// For the record: Go's own decoder is why libjpeg is linked.
	b, err := os.ReadFile(jpegPath)
	if err != nil {
		t.Fatal(err)
	}
	img, err := jpeg.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	goPix := flattenRGB(img)
	maxDiff := 0
	for i := range goPix {
		maxDiff = max(maxDiff, levelDiff(goPix[i], want.Pix[i]))
	}
	t.Logf("image/jpeg vs Pillow: %d of %d values differ (by up to %d levels)",
		countDiffering(goPix, want.Pix), len(want.Pix), maxDiff)
}

func TestReadJPEGErrors(t *testing.T) {
	b, err := os.ReadFile(golden.Path(t, "tiny-ip-adapter", "dog00.jpg"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	garbled := bytes.Clone(b[:400])
	for i := 20; i < len(garbled); i++ {
		garbled[i] = byte(i * 7)
	}
	for _, c := range []struct {
		name string
		data []byte
		want string
	}{
		{"no end marker", b[:len(b)-2], "file is truncated"},
		{"cut in the scan", b[:len(b)/2], "file is truncated"},
		{"cut in the header", b[:300], "file is truncated"},
		{"garbled header", garbled, "jpeg: "},
		{"soi only", []byte{0xFF, 0xD8, 0xFF}, "jpeg: "},
		{"text", []byte("not an image"), "not a JPEG or PNG file"},
		{"empty", nil, "not a JPEG or PNG file"},
	} {
		path := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "_")+".jpg")
		if err := os.WriteFile(path, c.data, 0o644); err != nil {
			t.Fatal(err)
		}
		m, err := ReadImage(path)
		if err == nil {
			t.Errorf("%s: decoded a %dx%d image", c.name, m.W, m.H)
			continue
		}
		msg := err.Error()
		if !strings.Contains(msg, path) || !strings.Contains(msg, c.want) || strings.Contains(msg, "\n") {
			t.Errorf("%s: error %q, want one line naming the file and saying %q", c.name, msg, c.want)
		}
	}

	_, err = ReadImage(filepath.Join(dir, "missing.jpg"))
	if err == nil || strings.Count(err.Error(), "missing.jpg") != 1 {
		t.Errorf("missing file: error %v, want one naming the file once", err)
	}
}

func TestReadJPEGCorruptDataIsNotFatal(t *testing.T) {
	// Damage inside the entropy-coded data is a warning to libjpeg, and
	// Pillow loads such files; so do we, to the same pixels (the hash is of
	// Pillow 9.4's decoding of this damaged file).
	b, err := os.ReadFile(golden.Path(t, "tiny-ip-adapter", "dog00.jpg"))
	if err != nil {
		t.Fatal(err)
	}
	b = bytes.Clone(b)
	for i := 30000; i < 30010; i += 2 {
		b[i], b[i+1] = 0xFF, 0xD9
	}
	path := filepath.Join(t.TempDir(), "damaged.jpg")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := ReadImage(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(m.Pix)
	const pillow = "d028f18dbbf647d711ec0b146e0f6c6f6ceb0f637999ba4a2fe49c82be734998"
	if got := hex.EncodeToString(sum[:]); m.W != 780 || m.H != 780 || got != pillow {
		t.Errorf("decoded %dx%d with sha256 %s, Pillow's is 780x780 with %s", m.W, m.H, got, pillow)
	}
}

func TestReadGrayJPEG(t *testing.T) {
	g := image.NewGray(image.Rect(0, 0, 24, 16))
	for i := range g.Pix {
		g.Pix[i] = uint8(i * 5)
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, g, &jpeg.Options{Quality: 90}); err != nil {
		t.Fatal(err)
	}
	path := tempImageFile(t, "gray.jpg", buf.Bytes())
	m, err := ReadImage(path)
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := jpeg.Decode(bytes.NewReader(buf.Bytes()))
	for i := range g.Pix {
		r, gg, b := m.Pix[3*i], m.Pix[3*i+1], m.Pix[3*i+2]
		if r != gg || r != b {
			t.Fatalf("pixel %d is (%d, %d, %d), want gray replicated", i, r, gg, b)
		}
		// Both decoders implement the standard IDCT; without chroma they
		// agree to a level.
		if d := levelDiff(r, ref.(*image.Gray).Pix[i]); d > 1 {
			t.Fatalf("pixel %d is %d, image/jpeg says %d", i, r, ref.(*image.Gray).Pix[i])
		}
	}
}

func TestReadPNGAsPillowConverts(t *testing.T) {
	const w, h = 5, 3
	nrgba := image.NewNRGBA(image.Rect(0, 0, w, h))
	gray := image.NewGray(image.Rect(0, 0, w, h))
	gray16 := image.NewGray16(image.Rect(0, 0, w, h))
	rgba64 := image.NewNRGBA64(image.Rect(0, 0, w, h))
	pal := image.NewPaletted(image.Rect(0, 0, w, h), color.Palette{
		color.RGBA{10, 20, 30, 255}, color.NRGBA{200, 100, 50, 0}, color.RGBA{0, 255, 0, 255},
	})
	var wantRGB, wantGray, want16, wantPal []uint8
	for i := range w * h {
		c := color.NRGBA{uint8(i * 17), uint8(255 - i*9), uint8(i * i), uint8(i * 13)} // alpha 0 included
		nrgba.Pix[4*i], nrgba.Pix[4*i+1], nrgba.Pix[4*i+2], nrgba.Pix[4*i+3] = c.R, c.G, c.B, c.A
		wantRGB = append(wantRGB, c.R, c.G, c.B)
		gray.Pix[i] = uint8(i * 16)
		wantGray = append(wantGray, gray.Pix[i], gray.Pix[i], gray.Pix[i])
		v := uint16(i * 40) // Pillow clips 16-bit gray at 255
		gray16.Pix[2*i], gray16.Pix[2*i+1] = uint8(v>>8), uint8(v)
		want16 = append(want16, uint8(min(v, 255)), uint8(min(v, 255)), uint8(min(v, 255)))
		rgba64.SetNRGBA64(i%w, i/w, color.NRGBA64{uint16(i) * 4000, 0xFFFF, 0x1234, 0x8000})
		pal.Pix[i] = uint8(i % 3)
		p := pal.Palette[i%3]
		r, g, b, _ := p.RGBA()
		if n, ok := p.(color.NRGBA); ok {
			r, g, b = uint32(n.R)<<8, uint32(n.G)<<8, uint32(n.B)<<8
		}
		wantPal = append(wantPal, uint8(r>>8), uint8(g>>8), uint8(b>>8))
	}
	var want64 []uint8
	for i := range w * h {
		want64 = append(want64, uint8(uint16(i)*4000>>8), 0xFF, 0x12)
	}
	for _, c := range []struct {
		name string
		img  image.Image
		want []uint8
	}{
		{"rgba drops alpha", nrgba, wantRGB},
		{"gray replicates", gray, wantGray},
		{"gray16 clips", gray16, want16},
		{"rgba64 high byte", rgba64, want64},
		{"palette looks up", pal, wantPal},
	} {
		path := tempPNG(t, c.img)
		m, err := ReadImage(path)
		if err != nil {
			t.Fatal(err)
		}
		if m.W != w || m.H != h || !bytes.Equal(m.Pix, c.want) {
			t.Errorf("%s: got %dx%d %v, want %v", c.name, m.W, m.H, m.Pix, c.want)
		}
	}
}

func TestReadMask(t *testing.T) {
	gray := image.NewGray(image.Rect(0, 0, 4, 2))
	copy(gray.Pix, []uint8{0, 255, 1, 0, 128, 0, 0, 7})
	m, err := ReadMask(tempPNG(t, gray))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(m.Pix, gray.Pix) || m.W != 4 || m.H != 2 {
		t.Errorf("gray mask read as %v", m.Pix)
	}

	// A colour mask becomes Pillow's luma: 255 red is 76, and a dim blue
	// rounds down to 0, outside.
	rgb := image.NewRGBA(image.Rect(0, 0, 3, 1))
	copy(rgb.Pix, []uint8{255, 0, 0, 255, 255, 255, 255, 255, 0, 0, 8, 255})
	m, err = ReadMask(tempPNG(t, rgb))
	if err != nil {
		t.Fatal(err)
	}
	if want := []uint8{76, 255, 1}; !bytes.Equal(m.Pix, want) {
		t.Errorf("colour mask read as %v, want %v", m.Pix, want)
	}

	_, err = ReadMask(tempImageFile(t, "mask.txt", []byte("hello")))
	if err == nil || !strings.Contains(err.Error(), "mask.txt") {
		t.Errorf("text file: error %v", err)
	}
}

func TestLuma(t *testing.T) {
	// Values from Pillow 9.4: Image.new("RGB", (1, 1), c).convert("L").
	for _, c := range []struct{ r, g, b, want uint8 }{
		{255, 0, 0, 76}, {0, 255, 0, 150}, {0, 0, 255, 29}, {255, 255, 255, 255},
		{0, 0, 8, 1}, {0, 0, 4, 0}, {12, 34, 56, 30}, {200, 100, 50, 124},
	} {
		if got := pillowLuma(c.r, c.g, c.b); got != c.want {
			t.Errorf("pillowLuma(%d, %d, %d) = %d, want %d", c.r, c.g, c.b, got, c.want)
		}
	}
}

func TestCrop(t *testing.T) {
	m := &RGB{W: 4, H: 3, Pix: patternPix(4, 3, 3)}
	c := m.Crop(image.Rect(1, 1, 3, 3))
	for y := range 2 {
		for x := range 2 {
			r, g, b := c.At(x, y)
			wr, wg, wb := m.At(x+1, y+1)
			if r != wr || g != wg || b != wb {
				t.Fatalf("crop (%d, %d) = %d %d %d, want %d %d %d", x, y, r, g, b, wr, wg, wb)
			}
		}
	}
	// Outside the image is black, as in Pillow.
	c = m.Crop(image.Rect(-1, 2, 2, 4))
	want := []uint8{0, 0, 0}
	want = append(want, m.Pix[(2*4+0)*3:(2*4+2)*3]...)
	want = append(want, make([]uint8, 9)...)
	if !bytes.Equal(c.Pix, want) {
		t.Errorf("crop over the edge = %v, want %v", c.Pix, want)
	}
}

func countDiffering(a, b []uint8) int {
	n := 0
	for i := range a {
		if a[i] != b[i] {
			n++
		}
	}
	return n
}

func levelDiff(a, b uint8) int {
	if a > b {
		return int(a - b)
	}
	return int(b - a)
}

// rgbOf flattens any image to RGB bytes through Go's colour conversion.
func flattenRGB(img image.Image) []uint8 {
	r := img.Bounds()
	out := make([]uint8, 0, r.Dx()*r.Dy()*3)
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			c := color.RGBAModel.Convert(img.At(x, y)).(color.RGBA)
			out = append(out, c.R, c.G, c.B)
		}
	}
	return out
}

func tempImageFile(t *testing.T, name string, b []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func tempPNG(t *testing.T, img image.Image) string {
	t.Helper()
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return tempImageFile(t, "image.png", buf.Bytes())
}
