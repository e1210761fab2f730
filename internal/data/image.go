// Package data reads what generation and training take from disk: images,
// masks, boxes and manifests.
//
// Images are decoded the way the Python reference reads them, with Pillow
// (Image.open(path).convert("RGB")), because every IP-Adapter user
// preprocesses with Pillow and the golden data was made that way: JPEG goes
// through libjpeg-turbo itself, PNG through Go's decoder followed by
// Pillow's mode conversions, and resizing is Pillow's (image_resize.go).
package data

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"os"
)

// maxImagePixels is the largest image decoded, Pillow's limit (twice
// Image.MAX_IMAGE_PIXELS), past which it suspects a decompression bomb.
const maxImagePixels = 2 * 89478485

// RGB is an 8-bit RGB image stored row-major, three bytes per pixel: the
// H x W x 3 array numpy.asarray(PIL.Image) gives.
type RGB struct {
	W, H int
	Pix  []uint8
}

// Gray is an 8-bit single-channel image, Pillow's mode "L".
type Gray struct {
	W, H int
	Pix  []uint8
}

// NewRGB is a black w x h image.
func NewRGB(w, h int) *RGB { return &RGB{W: w, H: h, Pix: make([]uint8, w*h*3)} }

// NewGray is a black w x h image.
func NewGray(w, h int) *Gray { return &Gray{W: w, H: h, Pix: make([]uint8, w*h)} }

// At is the pixel at column x, row y.
func (m *RGB) At(x, y int) (r, g, b uint8) {
	i := (y*m.W + x) * 3
	return m.Pix[i], m.Pix[i+1], m.Pix[i+2]
}

// At is the pixel at column x, row y.
func (m *Gray) At(x, y int) uint8 { return m.Pix[y*m.W+x] }

// Crop is Pillow's Image.crop((r.Min.X, r.Min.Y, r.Max.X, r.Max.Y)): the
// part of r outside the image is black.
func (m *RGB) Crop(r image.Rectangle) *RGB {
	out := NewRGB(r.Dx(), r.Dy())
	copyRect(m.Pix, m.W, m.H, out.Pix, r, 3)
	return out
}

// Crop is Pillow's Image.crop, as for RGB.
func (m *Gray) Crop(r image.Rectangle) *Gray {
	out := NewGray(r.Dx(), r.Dy())
	copyRect(m.Pix, m.W, m.H, out.Pix, r, 1)
	return out
}

// copyRect copies the part of r inside a w x h image src with c channels into
// dst, an r-sized image.
func copyRect(src []uint8, w, h int, dst []uint8, r image.Rectangle, c int) {
	in := r.Intersect(image.Rect(0, 0, w, h))
	if in.Empty() {
		return
	}
	n := in.Dx() * c
	for y := in.Min.Y; y < in.Max.Y; y++ {
		from := (y*w + in.Min.X) * c
		to := ((y-r.Min.Y)*r.Dx() + in.Min.X - r.Min.X) * c
		copy(dst[to:to+n], src[from:from+n])
	}
}

// ReadImage decodes a JPEG or PNG file (recognised by its first bytes, as
// Pillow does) to RGB, as Image.open(path).convert("RGB") does: JPEG
// decoded by libjpeg-turbo with Pillow's settings, the alpha of a PNG
// dropped, and no EXIF rotation (Pillow applies none unless asked).
func ReadImage(path string) (*RGB, error) {
	m, err := readImage(path)
	if err != nil {
		return nil, fmt.Errorf("read image %s: %w", path, err)
	}
	return m, nil
}

func readImage(path string) (*RGB, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, unwrapPathError(err)
	}
	switch {
	case isJPEG(b):
		return decodeJPEG(b)
	case isPNG(b):
		img, err := decodePNG(b)
		if err != nil {
			return nil, err
		}
		return rgbFromPNG(img), nil
	}
	return nil, errors.New("not a JPEG or PNG file")
}

// ReadMask decodes a mask image to one channel, as
// Image.open(path).convert("L") does: a grayscale mask keeps its values,
// a colour one becomes its luma. Pixels that are not zero are inside.
func ReadMask(path string) (*Gray, error) {
	m, err := readMask(path)
	if err != nil {
		return nil, fmt.Errorf("read mask %s: %w", path, err)
	}
	return m, nil
}

func readMask(path string) (*Gray, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, unwrapPathError(err)
	}
	switch {
	case isPNG(b):
		img, err := decodePNG(b)
		if err != nil {
			return nil, err
		}
		return grayFromPNG(img), nil
	case isJPEG(b):
		// A JPEG mask is rare and lossy; its luma is what Pillow's
		// convert("L") of the decoded RGB gives.
		m, err := decodeJPEG(b)
		if err != nil {
			return nil, err
		}
		return m.Luma(), nil
	}
	return nil, errors.New("not a PNG or JPEG file")
}

// Luma is Pillow's convert("L"): ITU-R 601-2 luma in Pillow's 16-bit fixed
// point, (19595 R + 38470 G + 7471 B + 2^15) >> 16.
func (m *RGB) Luma() *Gray {
	out := NewGray(m.W, m.H)
	for i := range out.Pix {
		out.Pix[i] = pillowLuma(m.Pix[3*i], m.Pix[3*i+1], m.Pix[3*i+2])
	}
	return out
}

func pillowLuma(r, g, b uint8) uint8 {
	return uint8((uint32(r)*19595 + uint32(g)*38470 + uint32(b)*7471 + 0x8000) >> 16)
}

func isJPEG(b []byte) bool { return bytes.HasPrefix(b, []byte{0xFF, 0xD8, 0xFF}) }
func isPNG(b []byte) bool  { return bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")) }

// unwrapPathError drops the path an *os.PathError repeats, since the
// caller's message names the file already.
func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
