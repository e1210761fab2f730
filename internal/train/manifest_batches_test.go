package train

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/data"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// toyManifest writes a small toy world (20 training records of 32 px) and
// loads its training manifest.
func toyManifest(t *testing.T) *data.Manifest {
	t.Helper()
	dir := t.TempDir()
	if _, err := data.WriteToyWorld(dir, data.ToyWorldConfig{Seed: 1, Clips: 12, Images: 8, Size: 32, Frames: 3}); err != nil {
		t.Fatal(err)
	}
	m, err := data.LoadManifest(filepath.Join(dir, "train.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func manifestBatches(t *testing.T, m *data.Manifest, seed uint64) *ManifestBatches {
	t.Helper()
	cfg := Defaults()
	cfg.BatchSize, cfg.Resolution, cfg.Seed = 3, 32, seed
	b, err := NewManifestBatches(m, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

func nextBatches(t *testing.T, b *ManifestBatches, n int) []*Batch {
	t.Helper()
	var out []*Batch
	for range n {
		batch, err := b.Next()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, batch)
	}
	return out
}

// sameBatch compares two batches bit for bit, subjects included.
func sameBatch(a, b *Batch) bool {
	if !sameBits(a.Images, b.Images) || !sameBits(a.Masks, b.Masks) || !slices.Equal(a.Captions, b.Captions) || len(a.Subjects) != len(b.Subjects) {
		return false
	}
	for i := range a.Subjects {
		if len(a.Subjects[i]) != len(b.Subjects[i]) {
			return false
		}
		for k, s := range a.Subjects[i] {
			o := b.Subjects[i][k]
			if s.Box != o.Box || s.Phrase != o.Phrase || s.Category != o.Category ||
				!sameBits(s.Static, o.Static) || !sameBits(s.Mask, o.Mask) || !sameBits(s.Dynamic, o.Dynamic) {
				return false
			}
		}
	}
	return true
}

// checkSubjectMasks: a batch's masks are [B, 1, size, size], each image's
// every pixel at 1 inside one of its subjects' boxes (within a pixel and a
// half) and every box holding some.
func checkSubjectMasks(t *testing.T, b *Batch, size int) {
	t.Helper()
	n := int64(len(b.Subjects))
	if got := b.Masks.Shape(); !slices.Equal(got, []int64{n, 1, int64(size), int64(size)}) {
		t.Fatalf("masks are %v, want [%d 1 %d %d]", got, n, size, size)
	}
	pix := b.Masks.Float32s()
	slack := 1.5 / float64(size)
	for i, subjects := range b.Subjects {
		hits := make([]int, len(subjects))
		for p, v := range pix[i*size*size : (i+1)*size*size] {
			if v == 0 {
				continue
			}
			if v != 1 {
				t.Fatalf("image %d: mask value %g", i, v)
			}
			x, y := (float64(p%size)+0.5)/float64(size), (float64(p/size)+0.5)/float64(size)
			inside := false
			for k, sub := range subjects {
				if x > sub.Box[0]-slack && x < sub.Box[2]+slack && y > sub.Box[1]-slack && y < sub.Box[3]+slack {
					hits[k]++
					inside = true
				}
			}
			if !inside {
				t.Fatalf("image %d: mask pixel (%.3f, %.3f) in no subject's box", i, x, y)
			}
		}
		for k, h := range hits {
			if h == 0 {
				t.Errorf("image %d: subject %d's box %v holds no mask pixel", i, k, subjects[k].Box)
			}
		}
	}
}

func TestManifestBatchesShapesAndDeterminism(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	m := toyManifest(t)
	first := nextBatches(t, manifestBatches(t, m, 5), 3)
	again := nextBatches(t, manifestBatches(t, m, 5), 3)
	other := nextBatches(t, manifestBatches(t, m, 6), 1)

	b := first[0]
	if got := b.Images.Shape(); !slices.Equal(got, []int64{3, 3, 32, 32}) {
		t.Fatalf("images are %v, want [3 3 32 32]", got)
	}
	if lo, hi := b.Images.Amin().Item(), b.Images.Amax().Item(); lo < -1 || hi > 1 || hi-lo < 0.5 {
		t.Errorf("images in [%g, %g], want a spread within [-1, 1]", lo, hi)
	}
	if len(b.Captions) != 3 || b.Captions[0] == "" || len(b.Subjects) != 3 {
		t.Fatalf("%d captions (first %q), %d subject lists", len(b.Captions), b.Captions[0], len(b.Subjects))
	}
	for i, subjects := range b.Subjects {
		if len(subjects) == 0 {
			t.Fatalf("sample %d has no subjects", i)
		}
		sub := subjects[0]
		if !strings.Contains(b.Captions[i], sub.Phrase) || sub.Category == "" {
			t.Errorf("sample %d: phrase %q not in caption %q (category %q)", i, sub.Phrase, b.Captions[i], sub.Category)
		}
		if got := sub.Static.Shape(); !slices.Equal(got, []int64{3, 32, 32}) {
			t.Errorf("static reference is %v, want [3 32 32]", got)
		}
		if got := sub.Mask.Shape(); !slices.Equal(got, []int64{1, 32, 32}) || sub.Mask.Amax().Item() != 1 {
			t.Errorf("mask is %v with max %g, want [1 32 32] with the subject at 1", got, sub.Mask.Amax().Item())
		}
		if sub.Dynamic.Dim() != 3 || !(sub.Box[0] < sub.Box[2] && sub.Box[1] < sub.Box[3]) {
			t.Errorf("dynamic reference %v, box %v", sub.Dynamic.Shape(), sub.Box)
		}
	}

	checkSubjectMasks(t, b, 32)

	for i := range first {
		if !sameBatch(first[i], again[i]) {
			t.Errorf("batch %d differs between two sources with the same seed", i)
		}
	}
	if sameBatch(first[0], first[1]) {
		t.Error("consecutive batches are equal")
	}
	if sameBatch(first[0], other[0]) {
		t.Error("another seed gives the same first batch")
	}
}

func TestManifestBatchesRestore(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	m := toyManifest(t)
	a := manifestBatches(t, m, 7)
	nextBatches(t, a, 2)
	state, err := a.State()
	if err != nil {
		t.Fatal(err)
	}
	if string(state) != "6" {
		t.Errorf("state after two batches of 3 is %q, want the sample index 6", state)
	}
	want := nextBatches(t, a, 2)

	// A fresh source that has read ahead elsewhere returns to the position.
	b := manifestBatches(t, m, 7)
	nextBatches(t, b, 1)
	if err := b.Restore(state); err != nil {
		t.Fatal(err)
	}
	got := nextBatches(t, b, 2)
	for i := range want {
		if !sameBatch(want[i], got[i]) {
			t.Errorf("batch %d after Restore differs from the uninterrupted run's", i)
		}
	}
	// Close then Next starts the prefetcher again where it stopped.
	b.Close()
	after := nextBatches(t, b, 1)
	if st, _ := b.State(); string(st) != "15" || sameBatch(after[0], got[1]) {
		t.Errorf("after Close: state %q, want 15, and a new batch", st)
	}
	for _, bad := range []string{"", "-1", "x"} {
		if err := b.Restore([]byte(bad)); err == nil {
			t.Errorf("Restore(%q) succeeded", bad)
		}
	}
}

// Ranks of a data-parallel job read disjoint shards whose union, step by
// step, is the single process's batch; a resumed job may have another
// number of ranks.
func TestManifestBatchesShard(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	m := toyManifest(t)
	whole := nextBatches(t, manifestBatches(t, m, 7), 2) // 3 samples a batch: global samples 0..5
	ranks := make([]*ManifestBatches, 3)
	for r := range ranks {
		ranks[r] = manifestBatches(t, m, 7)
		ranks[r].batchSize = 1
		if err := ranks[r].Shard(r, 3); err != nil {
			t.Fatal(err)
		}
	}
	for step, want := range whole {
		for r, src := range ranks {
			got := nextBatches(t, src, 1)[0]
			if got.Index[0] != want.Index[r] || !sameBits(got.Images, want.Images.Narrow(0, int64(r), 1)) || got.Captions[0] != want.Captions[r] {
				t.Fatalf("step %d: rank %d read sample %v, want the whole batch's row %d (%v)", step, r, got.Index, r, want.Index)
			}
		}
	}
	state, err := ranks[2].State()
	if err != nil || string(state) != "6" {
		t.Fatalf("rank 2's state %q (%v), want the job's position 6", state, err)
	}
	// Resumed on two ranks of 2 samples, the job goes on with sample 6.
	b := manifestBatches(t, m, 7)
	b.batchSize = 2
	if err := b.Restore(state); err != nil {
		t.Fatal(err)
	}
	if err := b.Shard(1, 2); err != nil {
		t.Fatal(err)
	}
	if got := nextBatches(t, b, 1)[0].Index; !slices.Equal(got, []int{7, 9}) {
		t.Errorf("rank 1 of 2 after the resume read %v, want [7 9]", got)
	}
}
