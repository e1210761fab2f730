package train

import (
	"math"
	"slices"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/torch"
)

func TestByCategory(t *testing.T) {
	square := Subject{Phrase: "orange-green checked square", Category: "square"}
	star := Subject{Phrase: "purple-green dotted star", Category: "star"}
	owl := Subject{Phrase: "brown owl", Category: "owl"}
	for _, c := range []struct {
		caption  string
		subjects []Subject
		want     string
	}{
		{"an orange-green checked square and a purple-green dotted star on water", []Subject{square, star}, "a square and a star on water"},
		{"A brown owl on a branch", []Subject{owl}, "An owl on a branch"},
		{"the brown owl on a branch", []Subject{owl}, "the owl on a branch"},                    // no article before it
		{"a dog on a purple-green dotted star", []Subject{star}, "a dog on a star"},             // mid-caption
		{"a photo of a cat", []Subject{{Phrase: "tabby", Category: "cat"}}, "a photo of a cat"}, // phrase not in the caption
		{"a square", []Subject{{Phrase: "square", Category: "square"}}, "a square"},
	} {
		orig := slices.Clone(c.subjects)
		got, named := byCategory(c.caption, c.subjects)
		if got != c.want {
			t.Errorf("%q: %q, want %q", c.caption, got, c.want)
		}
		for i, s := range named {
			if s.Phrase != c.subjects[i].Category || s.Category != c.subjects[i].Category {
				t.Errorf("%q: subject %d named %q (%q), want its category", c.caption, i, s.Phrase, s.Category)
			}
		}
		if !slices.Equal(orig, c.subjects) {
			t.Errorf("%q: the subjects passed in were changed", c.caption)
		}
	}
}

// Each row is decided by its own number from the phrase stream, which is
// not the caption dropout's; the batch given is left as it was.
func TestDropPhrases(t *testing.T) {
	star := Subject{Phrase: "purple-green dotted star", Category: "star"}
	captions := []string{"a purple-green dotted star on sand", "a purple-green dotted star on snow", "a purple-green dotted star on water", "a purple-green dotted star on grass"}
	b := &Batch{Captions: captions, Subjects: [][]Subject{{star}, {star}, {star}, {star}}}
	d := NewDraws(7, 3, []int{10, 11, 12, 13})
	u := d.PhraseDropout()
	if slices.Equal(u, d.TextDropout()) || slices.Equal(u, d.ImageDropout()) {
		t.Fatal("the phrase draws are another kind's")
	}
	if got := dropPhrases(b, d, 0); got != b {
		t.Error("phrase dropout 0 made a new batch")
	}
	p := (slices.Min(u) + slices.Max(u)) / 2 // some rows below, some above
	got := dropPhrases(b, d, p)
	for row, v := range u {
		named := v < p
		if (got.Captions[row] != captions[row]) != named || (got.Subjects[row][0].Phrase == "star") != named {
			t.Errorf("row %d (draw %.3f, p %.3f): caption %q, phrase %q", row, v, p, got.Captions[row], got.Subjects[row][0].Phrase)
		}
	}
	if b.Captions[0] != captions[0] || b.Subjects[0][0] != star || !slices.Equal(b.Captions, []string{"a purple-green dotted star on sand", "a purple-green dotted star on snow", "a purple-green dotted star on water", "a purple-green dotted star on grass"}) {
		t.Error("dropPhrases changed the batch it was given")
	}
}

// The conditioner reads the renamed captions: with every sample's
// subjects named by category the step's loss is not the step as written.
func TestLCPConditionerDropsPhrases(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	m, a := loadTiny(t)
	written := lcpConfig("", 1)
	written.ImageDropout, written.TextDropout = 0, 0
	lossWritten, _ := stepGrads(t, m, a, written)
	again, _ := stepGrads(t, m, a, written)
	renamed := written
	renamed.PhraseDropout = 1
	lossRenamed, _ := stepGrads(t, m, a, renamed)
	if again != lossWritten {
		t.Fatalf("the same step twice: loss %v then %v", lossWritten, again)
	}
	if math.Abs(lossRenamed-lossWritten) < 1e-7*lossWritten {
		t.Errorf("phrase_dropout 1: loss %v, as written %v", lossRenamed, lossWritten)
	}
}
