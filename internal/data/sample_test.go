package data

import (
	"bytes"
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"
)

// smallToyWorld writes a few toy-world records and loads the training
// manifest.
func smallToyWorld(t *testing.T) *Manifest {
	t.Helper()
	dir := t.TempDir()
	if _, err := WriteToyWorld(dir, ToyWorldConfig{Seed: 1, Clips: 6, Images: 6, Size: 48, Frames: 4}); err != nil {
		t.Fatal(err)
	}
	m, err := LoadManifest(filepath.Join(dir, "train.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

var testOptions = SampleOptions{Size: 64, RefSize: 40, Augment: DefaultAugment()}

func TestSampleClip(t *testing.T) {
	m := smallToyWorld(t)
	rec := m.Records[0]
	if !rec.Clip {
		t.Fatal("record 0 is not a clip")
	}
	r := rand.New(rand.NewPCG(5, 6))
	for range 10 {
		s, err := SampleRecord(rec, r, testOptions)
		if err != nil {
			t.Fatal(err)
		}
		if s.FrameA == s.FrameB || s.FrameA < 0 || s.FrameB >= len(rec.Frames) {
			t.Fatalf("frames %d and %d", s.FrameA, s.FrameB)
		}
		if s.Target.W != 64 || s.Target.H != 64 || s.Caption != rec.Caption || len(s.Subjects) != len(rec.Subjects) {
			t.Fatalf("target %dx%d, %d subjects", s.Target.W, s.Target.H, len(s.Subjects))
		}
		fa, _ := rec.LoadFrame(s.FrameA)
		fb, _ := rec.LoadFrame(s.FrameB)
		if !bytes.Equal(s.Target.Pix, fa.Image.Resize(64, 64, Bicubic).Pix) {
			t.Fatal("the target is not frame a")
		}
		for k, sub := range s.Subjects {
			if sub.Box != rec.Subjects[k].Boxes[s.FrameA] || sub.Phrase != rec.Subjects[k].Phrase {
				t.Fatalf("subject %d: box %v, want frame a's %v", k, sub.Box, rec.Subjects[k].Boxes[s.FrameA])
			}
			checkTargetMask(t, sub, 64)
			checkRef(t, sub.Static, 40)
			checkRef(t, sub.Dynamic, 40)
			if want := segment(fb, k, 40); !bytes.Equal(sub.Dynamic.Image.Pix, want.Image.Pix) {
				t.Fatalf("subject %d: the dynamic reference is not its segment in frame b", k)
			}
			if want := segment(fa, k, 40); !bytes.Equal(sub.Static.Image.Pix, want.Image.Pix) {
				t.Fatalf("subject %d: the static reference is not its segment in frame a", k)
			}
		}
	}
}

// checkTargetMask: a subject's mask in the target is size x size and
// lies where its box is (within a pixel and a half, as checkRef).
func checkTargetMask(t *testing.T, sub SampleSubject, size int) {
	t.Helper()
	if sub.Mask == nil || sub.Mask.W != size || sub.Mask.H != size {
		t.Fatalf("subject %s: target mask %+v, want %dx%d", sub.ID, sub.Mask, size, size)
	}
	box, ok := maskBox(sub.Mask)
	if !ok {
		t.Fatalf("subject %s: empty target mask", sub.ID)
	}
	for i := range 4 {
		if math.Abs(box[i]-sub.Box[i]) > 1.5/float64(size) {
			t.Fatalf("subject %s: box %v, its target mask's %v", sub.ID, sub.Box, box)
		}
	}
}

func TestSampleImage(t *testing.T) {
	m := smallToyWorld(t)
	var rec *Record
	for _, r := range m.Records {
		if !r.Clip {
			rec = r
			break
		}
	}
	s, err := SampleRecord(rec, rand.New(rand.NewPCG(7, 8)), testOptions)
	if err != nil {
		t.Fatal(err)
	}
	if s.FrameA != 0 || s.FrameB != 0 {
		t.Fatalf("frames %d, %d of an image", s.FrameA, s.FrameB)
	}
	for _, sub := range s.Subjects {
		checkTargetMask(t, sub, 64)
		checkRef(t, sub.Static, 40)
		checkRef(t, sub.Dynamic, 40)
		if bytes.Equal(sub.Static.Image.Pix, sub.Dynamic.Image.Pix) {
			t.Fatal("the dynamic reference of an image is not augmented")
		}
	}
}

// checkRef: a reference is size x size, white off the subject, and its box
// is where its mask is (within a pixel: the mask is resized by nearest).
func checkRef(t *testing.T, ref Ref, size int) {
	t.Helper()
	if ref.Image.W != size || ref.Mask.W != size || ref.Image.H != size || ref.Mask.H != size {
		t.Fatalf("reference %dx%d, mask %dx%d, want %d", ref.Image.W, ref.Image.H, ref.Mask.W, ref.Mask.H, size)
	}
	box, ok := maskBox(ref.Mask)
	if !ok {
		t.Fatal("empty reference mask")
	}
	for i := range 4 {
		if math.Abs(box[i]-ref.Box[i]) > 1.5/float64(size) {
			t.Fatalf("reference box %v, its mask's %v", ref.Box, box)
		}
	}
	// Away from the subject the bicubic resize (which reaches two source
	// pixels, 6 output pixels at the toy world's scale) has only seen
	// white.
	const reach = 6
	for y := range size {
		for x := range size {
			near := false
			for dy := -reach; dy <= reach; dy++ {
				for dx := -reach; dx <= reach; dx++ {
					xx, yy := x+dx, y+dy
					near = near || (xx >= 0 && xx < size && yy >= 0 && yy < size && ref.Mask.At(xx, yy) != 0)
				}
			}
			if r, g, b := ref.Image.At(x, y); !near && (r != 255 || g != 255 || b != 255) {
				t.Fatalf("background (%d,%d) is (%d,%d,%d), not white", x, y, r, g, b)
			}
		}
	}
}

// TestSamplerDeterministic: sample i is a function of the seed and i,
// whatever was sampled before.
func TestSamplerDeterministic(t *testing.T) {
	m := smallToyWorld(t)
	a, _ := NewSampler(m, 42, testOptions)
	b, _ := NewSampler(m, 42, testOptions)
	c, _ := NewSampler(m, 43, testOptions)
	var forward []*Sample
	for i := range 10 {
		s, err := a.Sample(i)
		if err != nil {
			t.Fatal(err)
		}
		forward = append(forward, s)
	}
	differs := false
	for i := 9; i >= 0; i-- {
		s, err := b.Sample(i)
		if err != nil {
			t.Fatal(err)
		}
		if !sameSample(forward[i], s) || s.Index != i {
			t.Fatalf("sample %d differs between two samplers with one seed", i)
		}
		other, _ := c.Sample(i)
		differs = differs || !sameSample(s, other)
	}
	if !differs {
		t.Fatal("seeds 42 and 43 give the same samples")
	}
}

func sameSample(a, b *Sample) bool {
	if a.Record != b.Record || a.FrameA != b.FrameA || a.FrameB != b.FrameB || !bytes.Equal(a.Target.Pix, b.Target.Pix) {
		return false
	}
	for k := range a.Subjects {
		x, y := a.Subjects[k], b.Subjects[k]
		if x.Box != y.Box || x.Dynamic.Box != y.Dynamic.Box ||
			!bytes.Equal(x.Static.Image.Pix, y.Static.Image.Pix) || !bytes.Equal(x.Dynamic.Image.Pix, y.Dynamic.Image.Pix) ||
			!bytes.Equal(x.Dynamic.Mask.Pix, y.Dynamic.Mask.Pix) {
			return false
		}
	}
	return true
}

// TestSamplerMix: 70% clips, and only the kind there is when the manifest
// has one kind.
func TestSamplerMix(t *testing.T) {
	m := smallToyWorld(t)
	s, _ := NewSampler(m, 1, testOptions)
	clips := 0
	const n = 4000
	for i := range n {
		if s.pick(rand.New(rand.NewPCG(1, splitMix64(uint64(i))))).Clip {
			clips++
		}
	}
	// 0.7 +- 4 standard deviations (0.007).
	if f := float64(clips) / n; math.Abs(f-VideoFraction) > 0.03 {
		t.Fatalf("%.3f clips, want %.1f", f, VideoFraction)
	}
	onlyClips, _ := NewSampler(&Manifest{Records: s.Clips}, 1, testOptions)
	for i := range 50 {
		if !onlyClips.pick(rand.New(rand.NewPCG(2, uint64(i)))).Clip {
			t.Fatal("an image from a manifest of clips")
		}
	}
	if _, err := NewSampler(&Manifest{}, 1, testOptions); err == nil {
		t.Fatal("a sampler over nothing")
	}
}
