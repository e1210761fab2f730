package main

import (
	"fmt"
	"io"

	"github.com/lcpdiff/lcpdiff/internal/data"
	"github.com/lcpdiff/lcpdiff/internal/guidance"
	"github.com/lcpdiff/lcpdiff/internal/model/clip"
	"github.com/lcpdiff/lcpdiff/internal/pipeline"
)

// loadSubjects reads every subject's reference images and masks, saying on
// log which subjects go without a mask.
func loadSubjects(specs []subjectSpec, log io.Writer) ([]pipeline.Subject, error) {
	subjects := make([]pipeline.Subject, len(specs))
	for k, spec := range specs {
		s, err := loadSubject(spec, k+1, log)
		if err != nil {
			return nil, fmt.Errorf("subject %d: %w", k+1, err)
		}
		subjects[k] = s
	}
	return subjects, nil
}

// loadSubject reads subject n's views and the masks that go with them;
// Masks stays nil when no view has one.
func loadSubject(spec subjectSpec, n int, log io.Writer) (pipeline.Subject, error) {
	s := pipeline.Subject{
		Box:   [4]float64(spec.Box),
		Words: spec.Word, Category: spec.Category, Phrase: spec.Phrase,
	}
	masks := make([]*data.Gray, len(spec.Refs))
	var maskless []int
	for v, path := range spec.Refs {
		img, err := data.ReadImage(path)
		if err != nil {
			return s, err
		}
		s.References = append(s.References, img)
		if v >= len(spec.Masks) || spec.Masks[v] == "" || spec.Masks[v] == noMask {
			maskless = append(maskless, v+1)
			continue
		}
		mask, err := data.ReadMask(spec.Masks[v])
		if err != nil {
			return s, err
		}
		var ok bool
		if masks[v], ok = fitMask(mask, img); !ok {
			return s, fmt.Errorf("mask %s is %dx%d but its image %s is %dx%d, a different aspect ratio",
				spec.Masks[v], mask.W, mask.H, path, img.W, img.H)
		}
	}
	// A mask marks the subject's pixels for the static refiner and whitens
	// the background the image encoder sees; without one the whole view
	// counts as the subject, background included, which users should know.
	if len(maskless) == len(spec.Refs) {
		fmt.Fprintf(log, "subject %d: no mask, using the whole image\n", n)
		return s, nil
	}
	s.Masks = masks
	for _, v := range maskless {
		fmt.Fprintf(log, "subject %d, view %d: no mask, using the whole image\n", n, v)
	}
	return s, nil
}

// fitMask is mask at img's size. A mask of another size but the same
// aspect ratio is resized (nearest, so it stays binary); any other size
// means it was drawn for some other picture: not ok.
func fitMask(mask *data.Gray, img *data.RGB) (fitted *data.Gray, ok bool) {
	if mask.W == img.W && mask.H == img.H {
		return mask, true
	}
	if !sameAspect(mask.W, mask.H, img.W, img.H) {
		return nil, false
	}
	return mask.Resize(img.W, img.H, data.Nearest), true
}

// sameAspect says whether a w1 x h1 and a w2 x h2 picture have the same
// aspect ratio up to the rounding of a resize: scaling by s and rounding
// each side moves w2*h1 - h2*w1 by at most (w+h)/2 of the larger picture.
func sameAspect(w1, h1, w2, h2 int) bool {
	diff := w1*h2 - h1*w2
	return 2*max(diff, -diff) <= max(w1, w2)+max(h1, h2)
}

// checkWords makes sure every subject's words are in the tokenised prompt
// before any weights are loaded; the error lists the prompt's tokens.
func checkWords(tok *clip.Tokenizer, prompt string, subjects []pipeline.Subject) error {
	for k, s := range subjects {
		if _, err := guidance.TokenPositions(tok, prompt, s.Words); err != nil {
			return fmt.Errorf("subject %d: %w", k+1, err)
		}
	}
	return nil
}
