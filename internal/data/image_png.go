package data

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/png"
)

// decodePNG decodes a whole PNG; Go's decoder and Pillow's agree on every
// pixel value (both unpack 1-, 2- and 4-bit gray to the full 0..255 range).
func decodePNG(b []byte) (image.Image, error) {
	cfg, err := png.DecodeConfig(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	if int64(cfg.Width)*int64(cfg.Height) > maxImagePixels {
		return nil, fmt.Errorf("%dx%d pixels is more than %d", cfg.Width, cfg.Height, maxImagePixels)
	}
	return png.Decode(bytes.NewReader(b))
}

// rgbFromPNG is Pillow's convert("RGB") of a decoded PNG.
func rgbFromPNG(img image.Image) *RGB {
	at := pillowRGB(img)
	r := img.Bounds()
	out := NewRGB(r.Dx(), r.Dy())
	i := 0
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			out.Pix[i], out.Pix[i+1], out.Pix[i+2] = at(x, y)
			i += 3
		}
	}
	return out
}

// grayFromPNG is Pillow's convert("L") of a decoded PNG. The luma of a gray
// pixel replicated to R, G and B is that gray value, so one path serves
// grayscale and colour files.
func grayFromPNG(img image.Image) *Gray {
	at := pillowRGB(img)
	r := img.Bounds()
	out := NewGray(r.Dx(), r.Dy())
	i := 0
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			out.Pix[i] = pillowLuma(at(x, y))
			i++
		}
	}
	return out
}

// pillowRGB reads a pixel of a decoded PNG as Pillow's convert("RGB") sees
// it: alpha dropped (not composited), the high byte of 16-bit colour, a
// palette index looked up, and 16-bit gray clipped to 255 rather than
// scaled, because Pillow opens such a file in mode "I" and converts by
// clipping.
func pillowRGB(img image.Image) func(x, y int) (r, g, b uint8) {
	switch m := img.(type) {
	case *image.Gray:
		return func(x, y int) (r, g, b uint8) {
			v := m.GrayAt(x, y).Y
			return v, v, v
		}
	case *image.Gray16:
		return func(x, y int) (r, g, b uint8) {
			v := uint8(min(m.Gray16At(x, y).Y, 255))
			return v, v, v
		}
	case *image.RGBA: // opaque, so not premultiplied in effect
		return func(x, y int) (r, g, b uint8) {
			c := m.RGBAAt(x, y)
			return c.R, c.G, c.B
		}
	case *image.NRGBA:
		return func(x, y int) (r, g, b uint8) {
			c := m.NRGBAAt(x, y)
			return c.R, c.G, c.B
		}
	case *image.RGBA64:
		return func(x, y int) (r, g, b uint8) {
			c := m.RGBA64At(x, y)
			return uint8(c.R >> 8), uint8(c.G >> 8), uint8(c.B >> 8)
		}
	case *image.NRGBA64:
		return func(x, y int) (r, g, b uint8) {
			c := m.NRGBA64At(x, y)
			return uint8(c.R >> 8), uint8(c.G >> 8), uint8(c.B >> 8)
		}
	case *image.Paletted:
		return func(x, y int) (r, g, b uint8) { return paletteRGB(m.Palette[m.ColorIndexAt(x, y)]) }
	}
	// Not produced by image/png; the generic path un-premultiplies.
	return func(x, y int) (r, g, b uint8) {
		c := color.NRGBAModel.Convert(img.At(x, y)).(color.NRGBA)
		return c.R, c.G, c.B
	}
}

// paletteRGB is a palette entry's colour without its transparency (image/png
// stores opaque entries as color.RGBA and translucent ones as color.NRGBA).
func paletteRGB(c color.Color) (r, g, b uint8) {
	switch c := c.(type) {
	case color.NRGBA:
		return c.R, c.G, c.B
	case color.RGBA:
		return c.R, c.G, c.B
	}
	n := color.NRGBAModel.Convert(c).(color.NRGBA)
	return n.R, n.G, n.B
}
