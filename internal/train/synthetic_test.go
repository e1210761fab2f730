package train

import (
	"slices"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/torch"
)

func TestSyntheticIsDeterministicAndRestores(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	a := tinyData(0)
	var batches []*Batch
	for range 3 {
		b, err := a.Next()
		if err != nil {
			t.Fatal(err)
		}
		batches = append(batches, b)
	}
	if sameBits(batches[0].Images, batches[1].Images) {
		t.Error("consecutive batches are equal")
	}
	if min, max := batches[0].Images.Amin().Item(), batches[0].Images.Amax().Item(); min < -1 || max > 1 {
		t.Errorf("images in [%g, %g], want [-1, 1]", min, max)
	}
	state, err := a.State()
	if err != nil {
		t.Fatal(err)
	}

	b := tinyData(0)
	b.Next()
	if err := b.Restore([]byte("2")); err != nil {
		t.Fatal(err)
	}
	third, _ := b.Next()
	if !sameBits(third.Images, batches[2].Images) || !slices.Equal(third.Captions, batches[2].Captions) {
		t.Error("a restored source does not give the same batch")
	}
	if string(state) != "3" || b.Restore([]byte("x")) == nil {
		t.Errorf("state %q; a bad position must fail", state)
	}

	fixed := tinyData(1)
	x, _ := fixed.Next()
	y, _ := fixed.Next()
	if !sameBits(x.Images, y.Images) || !slices.Equal(x.Captions, y.Captions) {
		t.Error("Distinct 1 does not repeat its batch")
	}
}
