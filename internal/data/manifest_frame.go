package data

import "fmt"

// Frame is one frame of a record, decoded: the image and every subject's
// mask and box in it.
type Frame struct {
	Index int     // which of the record's frames
	Image *RGB    // at the file's own size
	Masks []*Gray // per subject, the image's size, 255 inside
	Boxes []Box   // per subject
}

// LoadFrame decodes frame i and its subjects' masks. Masks are decoded
// only here, not when the manifest loads, because a large manifest's masks
// would not fit in memory; so this is where a mask of the wrong size, or an
// empty one, is found, and the error names the record and the field.
func (r *Record) LoadFrame(i int) (*Frame, error) {
	field := fmt.Sprintf("frames[%d]", i)
	if !r.Clip {
		field = "image"
	}
	if i < 0 || i >= len(r.Frames) {
		return nil, r.errorf(field, "no such frame: the record has %d", len(r.Frames))
	}
	img, err := ReadImage(r.Frames[i])
	if err != nil {
		return nil, r.errorf(field, "%v", err)
	}
	f := &Frame{Index: i, Image: img}
	for k, s := range r.Subjects {
		mf := fmt.Sprintf("subjects[%d].masks[%d]", k, i)
		m, err := s.Masks[i].Decode(img.W, img.H)
		if err != nil {
			return nil, r.errorf(mf, "%v", err)
		}
		// An empty mask would make an all-white reference, which teaches
		// the model nothing about the subject.
		if !hasInside(m) {
			return nil, r.errorf(mf, "empty mask")
		}
		f.Masks = append(f.Masks, m)
		f.Boxes = append(f.Boxes, s.Boxes[i])
	}
	return f, nil
}

func hasInside(m *Gray) bool {
	for _, v := range m.Pix {
		if v != 0 {
			return true
		}
	}
	return false
}
