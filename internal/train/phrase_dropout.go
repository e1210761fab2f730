package train

import (
	"slices"
	"strings"

	"github.com/lcpdiff/lcpdiff/internal/data"
)

// Phrase dropout names a sample's subjects by their category alone ("a
// green-red checked cross on grass" becomes "a cross on grass", and the
// grounding phrase "cross"), so that what the dropped words said (colour,
// texture) must come from the reference images. Without it a model can
// read a seen subject's look from its caption and ignore the images: the
// built-in toy-world model, with the colour words struck from its
// validation captions, missed 20% of its seen subjects against 8%, and its
// zero-shot subjects, whose captions name colours in an order never seen,
// are the ones it misses (internal/builtin/README.md).

// byCategory is the caption with each subject's phrase (its first
// mention) replaced by its category, an article just before it agreeing
// ("an orange square" becomes "a square"), and the subjects with their
// phrases so replaced. A phrase the caption does not contain leaves the
// caption as it is; its grounding phrase still becomes the category.
// subjects is not modified.
func byCategory(caption string, subjects []Subject) (string, []Subject) {
	named := make([]Subject, len(subjects))
	for i, s := range subjects {
		named[i] = s
		if s.Category == "" || s.Phrase == s.Category {
			continue
		}
		named[i].Phrase = s.Category
		k := strings.Index(caption, s.Phrase)
		if k < 0 {
			continue
		}
		before, after := caption[:k], caption[k+len(s.Phrase):]
		for _, article := range []string{"a ", "an ", "A ", "An "} {
			if rest, ok := strings.CutSuffix(before, article); ok && (rest == "" || strings.HasSuffix(rest, " ")) {
				agreeing := data.IndefiniteArticle(s.Category)
				if article[0] == 'A' {
					agreeing = strings.ToUpper(agreeing[:1]) + agreeing[1:]
				}
				before = rest + agreeing + " "
				break
			}
		}
		caption = before + s.Category + after
	}
	return caption, named
}

// dropPhrases is b with the subjects of the rows whose d.PhraseDropout()
// number is below p named by their category (byCategory); b itself is
// left as it is. p 0 returns b.
func dropPhrases(b *Batch, d Draws, p float64) *Batch {
	if p == 0 {
		return b
	}
	out := *b
	out.Captions = slices.Clone(b.Captions)
	out.Subjects = slices.Clone(b.Subjects)
	for row, u := range d.PhraseDropout() {
		if u < p {
			out.Captions[row], out.Subjects[row] = byCategory(b.Captions[row], b.Subjects[row])
		}
	}
	return &out
}
