package data

import (
	"fmt"
	"image"
	"math"
	"math/rand/v2"
)

// Sample is one training example (paper III-E): a target image with every
// subject's box, and per subject the two references the adapter learns
// from. Clearing the text or image conditions for classifier-free guidance
// is the training loop's business, not the sample's.
type Sample struct {
	Index          int // the Sampler's index; 0 from SampleRecord
	Record         *Record
	FrameA, FrameB int // the frames used; both 0 for an image
	Caption        string
	Target         *RGB // frame a, Size x Size
	Subjects       []SampleSubject
}

// SampleSubject is one subject of a sample.
type SampleSubject struct {
	Category, Phrase, ID string
	Box                  Box   // in the target
	Mask                 *Gray // in the target, Size x Size: 255 on the subject
	// Static is the static refiner's input: the subject in frame a.
	// Dynamic is the DA-Encoder's: the same subject in frame b of a clip,
	// or, for an image, Static after augmentation.
	Static, Dynamic Ref
}

// Ref is a subject's reference image: the square around its box, the
// background white, as a user's reference looks after masking (SAM).
type Ref struct {
	Image *RGB
	Mask  *Gray // M_s: 255 on the subject
	Box   Box   // the subject's box in Image
}

// SampleOptions sizes samples and sets the image augmentation.
type SampleOptions struct {
	Size    int // the target's side in pixels (512 in the paper)
	RefSize int // the references' side; 0 means Size, as generation feeds the static refiner
	Augment Augment
}

// DefaultSampleOptions is the paper's 512 x 512 with DefaultAugment.
func DefaultSampleOptions() SampleOptions {
	return SampleOptions{Size: 512, Augment: DefaultAugment()}
}

func (o SampleOptions) refSize() int {
	if o.RefSize == 0 {
		return o.Size
	}
	return o.RefSize
}

// refMargin enlarges a subject's box into its reference crop, so that the
// subject does not touch the edges and rotation has room.
const refMargin = 1.2

// SampleRecord makes a sample of rec. For a clip it draws two distinct
// frames a and b; the target is frame a (resized with Pillow's bicubic,
// masks with nearest), each subject's mask its mask in frame a, its static
// reference its segment in frame a and its dynamic reference its segment
// in frame b. For an image the dynamic reference is the static one
// augmented by opts.Augment. The same r state gives the same sample. A
// non-square frame is stretched to the square target, which keeps every
// normalised box valid.
func SampleRecord(rec *Record, r *rand.Rand, opts SampleOptions) (*Sample, error) {
	if opts.Size <= 0 || opts.RefSize < 0 {
		return nil, fmt.Errorf("sample sizes %d and %d: must be positive", opts.Size, opts.RefSize)
	}
	a, b := 0, 0
	if rec.Clip {
		n := len(rec.Frames)
		a, b = r.IntN(n), r.IntN(n-1)
		if b >= a {
			b++
		}
	}
	fa, err := rec.LoadFrame(a)
	if err != nil {
		return nil, err
	}
	fb := fa
	if rec.Clip {
		if fb, err = rec.LoadFrame(b); err != nil {
			return nil, err
		}
	}
	s := &Sample{
		Record: rec, FrameA: a, FrameB: b, Caption: rec.Caption,
		Target: fa.Image.Resize(opts.Size, opts.Size, Bicubic),
	}
	for k, sub := range rec.Subjects {
		ss := SampleSubject{
			Category: sub.Category, Phrase: sub.Phrase, ID: sub.ID,
			Box:    fa.Boxes[k],
			Mask:   fa.Masks[k].Resize(opts.Size, opts.Size, Nearest),
			Static: segment(fa, k, opts.refSize()),
		}
		if rec.Clip {
			ss.Dynamic = segment(fb, k, opts.refSize())
		} else {
			ss.Dynamic = opts.Augment.Apply(r, ss.Static)
		}
		s.Subjects = append(s.Subjects, ss)
	}
	return s, nil
}

// segment is subject k of f as a size x size reference: the square around
// its box enlarged by refMargin (white where it leaves the frame), the
// background white, resized.
func segment(f *Frame, k, size int) Ref {
	w, h := float64(f.Image.W), float64(f.Image.H)
	box := f.Boxes[k]
	cx, cy := (box[0]+box[2])/2*w, (box[1]+box[3])/2*h
	side := max(1, int(math.Ceil(refMargin*max((box[2]-box[0])*w, (box[3]-box[1])*h))))
	x0, y0 := int(math.Round(cx-float64(side)/2)), int(math.Round(cy-float64(side)/2))
	crop := image.Rect(x0, y0, x0+side, y0+side)
	// The crop's mask is 0 beyond the frame, so whitening covers that too.
	mask := f.Masks[k].Crop(crop)
	img := whiten(f.Image.Crop(crop), mask)
	rel := func(v, origin float64) float64 { return min(max((v-origin)/float64(side), 0), 1) }
	return Ref{
		Image: img.Resize(size, size, Bicubic),
		Mask:  mask.Resize(size, size, Nearest),
		Box: Box{
			rel(box[0]*w, float64(x0)), rel(box[1]*h, float64(y0)),
			rel(box[2]*w, float64(x0)), rel(box[3]*h, float64(y0)),
		},
	}
}

// whiten paints white where mask is 0.
func whiten(img *RGB, mask *Gray) *RGB {
	for i, v := range mask.Pix {
		if v == 0 {
			img.Pix[3*i], img.Pix[3*i+1], img.Pix[3*i+2] = 255, 255, 255
		}
	}
	return img
}
