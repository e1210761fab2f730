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
	if err := b.Restore([]byte("4")); err != nil { // the global index of the third batch's first sample
		t.Fatal(err)
	}
	third, _ := b.Next()
	if !sameBits(third.Images, batches[2].Images) || !slices.Equal(third.Captions, batches[2].Captions) {
		t.Error("a restored source does not give the same batch")
	}
	if string(state) != "6" || b.Restore([]byte("x")) == nil {
		t.Errorf("state %q; a bad position must fail", state)
	}

	fixed := tinyData(1)
	x, _ := fixed.Next()
	y, _ := fixed.Next()
	if !sameBits(x.Images, y.Images) || !slices.Equal(x.Captions, y.Captions) {
		t.Error("Distinct 1 does not repeat its batch")
	}
}

// Two ranks taking one sample a batch see, step by step, the samples one
// source taking two a batch sees, and either rank's state is the job's.
func TestSyntheticShards(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	whole := tinyData(0)
	ranks := []*Synthetic{tinyData(0), tinyData(0)}
	for r, src := range ranks {
		src.BatchSize = 1
		if err := src.Shard(r, 2); err != nil {
			t.Fatal(err)
		}
	}
	for step := range 3 {
		want, _ := whole.Next()
		for r, src := range ranks {
			got, _ := src.Next()
			if !sameBits(got.Images, want.Images.Narrow(0, int64(r), 1)) || got.Captions[0] != want.Captions[r] || got.Index[0] != want.Index[r] {
				t.Fatalf("step %d: rank %d's sample %v is not the whole batch's row %d (%v)", step, r, got.Index, r, want.Index)
			}
		}
	}
	for r, src := range ranks {
		if st, _ := src.State(); string(st) != "6" {
			t.Errorf("rank %d's state %q, want the job's position 6", r, st)
		}
	}
	// A restored rank keeps its share.
	if err := ranks[1].Restore([]byte("2")); err != nil {
		t.Fatal(err)
	}
	if b, _ := ranks[1].Next(); b.Index[0] != 3 {
		t.Errorf("rank 1 after Restore(2) took sample %d, want 3", b.Index[0])
	}
	if err := ranks[0].Shard(2, 2); err == nil {
		t.Error("rank 2 of 2 was accepted")
	}
}
