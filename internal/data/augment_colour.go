package data

import (
	"math"
	"math/rand/v2"
)

// Jitter is one draw of the colour augmentation: torchvision's ColorJitter
// on a PIL image, which is Pillow's ImageEnhance for brightness, contrast
// and saturation and an HSV round trip for hue, applied in Order. The
// arithmetic follows Pillow's C (Image.blend in float32 with truncation,
// its RGB<->HSV conversion in Convert.c) but has not been compared with
// Pillow's output: shared/golden has no augmented images.
type Jitter struct {
	Order                            [4]int // 0 brightness, 1 contrast, 2 saturation, 3 hue
	Brightness, Contrast, Saturation float64
	Hue                              float64 // turns, in [-0.5, 0.5]
}

func (a Augment) drawJitter(r *rand.Rand) Jitter {
	factor := func(v float64) float64 { return max(0, 1-v) + r.Float64()*(1+v-max(0, 1-v)) }
	j := Jitter{Brightness: factor(a.Brightness), Contrast: factor(a.Contrast), Saturation: factor(a.Saturation)}
	j.Hue = symmetric(r, min(a.Hue, 0.5))
	copy(j.Order[:], r.Perm(4))
	return j
}

// Apply jitters a reference's colours and whitens its background again,
// which the adjustments would have greyed or tinted: the DA-Encoder must
// always see the subject on white.
func (j Jitter) Apply(ref Ref) Ref {
	img := &RGB{W: ref.Image.W, H: ref.Image.H, Pix: append([]uint8(nil), ref.Image.Pix...)}
	for _, op := range j.Order {
		switch op {
		case 0:
			brightness(img, j.Brightness)
		case 1:
			contrast(img, j.Contrast)
		case 2:
			saturation(img, j.Saturation)
		case 3:
			hue(img, j.Hue)
		}
	}
	return Ref{Image: whiten(img, ref.Mask), Mask: ref.Mask, Box: ref.Box}
}

// blend is Pillow's Image.blend of one value: from towards to by alpha, in
// float32, truncated and clipped.
func blend(from, to uint8, alpha float32) uint8 {
	t := float32(from) + float32(alpha*float32(int(to)-int(from)))
	switch {
	case t <= 0:
		return 0
	case t >= 255:
		return 255
	}
	return uint8(t)
}

// brightness is ImageEnhance.Brightness: a blend from black.
func brightness(m *RGB, f float64) {
	for i, v := range m.Pix {
		m.Pix[i] = blend(0, v, float32(f))
	}
}

// contrast is ImageEnhance.Contrast: a blend from the mean luma, rounded.
func contrast(m *RGB, f float64) {
	sum := 0
	l := m.Luma()
	for _, v := range l.Pix {
		sum += int(v)
	}
	mean := uint8(float64(sum)/float64(len(l.Pix)) + .5)
	for i, v := range m.Pix {
		m.Pix[i] = blend(mean, v, float32(f))
	}
}

// saturation is ImageEnhance.Color: a blend from each pixel's own luma.
func saturation(m *RGB, f float64) {
	for i := 0; i < len(m.Pix); i += 3 {
		l := pillowLuma(m.Pix[i], m.Pix[i+1], m.Pix[i+2])
		for c := range 3 {
			m.Pix[i+c] = blend(l, m.Pix[i+c], float32(f))
		}
	}
}

// hue is torchvision's adjust_hue on a PIL image: to 8-bit HSV, the hue
// channel shifted by int8(turns*255) with wrap-around, and back.
func hue(m *RGB, turns float64) {
	shift := uint8(int8(turns * 255))
	for i := 0; i < len(m.Pix); i += 3 {
		h, s, v := rgbToHSV(m.Pix[i], m.Pix[i+1], m.Pix[i+2])
		m.Pix[i], m.Pix[i+1], m.Pix[i+2] = hsvToRGB(h+shift, s, v)
	}
}

// rgbToHSV is Pillow's rgb2hsv (Convert.c): float32 variables, the double
// constants of the C making some steps float64.
func rgbToHSV(r, g, b uint8) (h, s, v uint8) {
	maxc, minc := max(r, g, b), min(r, g, b)
	if maxc == minc {
		return 0, 0, maxc
	}
	cr := float32(maxc - minc)
	sf := cr / float32(maxc)
	rc := float32(maxc-r) / cr
	gc := float32(maxc-g) / cr
	bc := float32(maxc-b) / cr
	var hf float32
	switch {
	case r == maxc:
		hf = bc - gc
	case g == maxc:
		hf = float32(2.0 + float64(rc) - float64(bc))
	default:
		hf = float32(4.0 + float64(gc) - float64(rc))
	}
	hf = float32(math.Mod(float64(hf)/6.0+1.0, 1.0))
	return clipByte(int(float64(hf) * 255.0)), clipByte(int(float64(sf) * 255.0)), maxc
}

// hsvToRGB is Pillow's hsv2rgb (Convert.c).
func hsvToRGB(h, s, v uint8) (r, g, b uint8) {
	if s == 0 {
		return v, v, v
	}
	hh := float64(float32(h)) * 6.0 / 255.0
	i := int(math.Floor(hh))
	f := float32(hh - float64(float32(i)))
	fs := float32(float64(float32(s)) / 255.0)
	fv := float64(float32(v))
	p := clipByte(int(math.Round(fv * (1.0 - float64(fs)))))
	q := clipByte(int(math.Round(fv * (1.0 - float64(float32(fs*f))))))
	t := clipByte(int(math.Round(fv * (1.0 - float64(float64(fs)*(1.0-float64(f)))))))
	switch i % 6 {
	case 0:
		return v, t, p
	case 1:
		return q, v, p
	case 2:
		return p, v, t
	case 3:
		return p, q, v
	case 4:
		return t, p, v
	}
	return v, p, q
}

// clipByte is Pillow's CLIP8.
func clipByte(x int) uint8 { return uint8(min(max(x, 0), 255)) }
