package dino

import (
	"image"
	"math"

	"github.com/lcpdiff/lcpdiff/internal/data"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// The evaluation transform of DINO's eval_knn.py / eval_linear.py, which
// DreamBench re-implementations use for the DINO score (DreamBooth
// publishes none): Resize(256, BICUBIC), CenterCrop(224), ToTensor,
// Normalize(ImageNet mean, std).
const (
	ResizeShort = 256
	CropSize    = 224
)

var (
	imagenetMean = [3]float32{0.485, 0.456, 0.406}
	imagenetStd  = [3]float32{0.229, 0.224, 0.225}
)

// Preprocess is that transform on one image, as torchvision 0.14 runs it on
// a PIL image, to the last bit: the shorter side resized to 256 by Pillow's
// bicubic on the uint8 pixels (the longer side truncated, int(256 * long /
// short)), the centre 224 x 224 (offsets rounded half to even, as Python's
// round), then x / 255 and (x - mean) / std, each in float32. It returns a
// float32 CPU tensor [1, 3, 224, 224].
func Preprocess(img *data.RGB) *torch.Tensor {
	w, h := resizedSize(img.W, img.H)
	img = img.Resize(w, h, data.Bicubic)
	img = img.Crop(centerCrop(img.W, img.H, CropSize))
	plane := img.W * img.H
	pix := make([]float32, 3*plane) // channels first
	for i := range plane {
		for ch := range 3 {
			x := float32(img.Pix[3*i+ch]) / 255
			pix[ch*plane+i] = (x - imagenetMean[ch]) / imagenetStd[ch]
		}
	}
	return torch.New(pix, 1, 3, int64(img.H), int64(img.W))
}

// resizedSize is torchvision's _compute_resized_output_size for an int
// size: the shorter side becomes ResizeShort, the longer one scales with it,
// truncated.
func resizedSize(w, h int) (ow, oh int) {
	if w <= h {
		return ResizeShort, int(float64(ResizeShort*h) / float64(w))
	}
	return int(float64(ResizeShort*w) / float64(h)), ResizeShort
}

// centerCrop is the s x s window torchvision's center_crop takes: its
// corner at int(round((size - s) / 2)), where Python rounds halves to even
// (an odd margin of 269 gives 134, not 135). After the resize both sides
// are at least 256, so the window always fits.
func centerCrop(w, h, s int) image.Rectangle {
	left := int(math.RoundToEven(float64(w-s) / 2))
	top := int(math.RoundToEven(float64(h-s) / 2))
	return image.Rect(left, top, left+s, top+s)
}
