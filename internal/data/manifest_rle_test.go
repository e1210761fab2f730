package data

import (
	"bytes"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// TestRLEDocumentedExamples: pycocotools' mask.py documents RLE with two
// vectors, M=[0 0 1 1 1 0 1] -> [2 3 1 1] and M=[1 1 1 1 1 1 0] -> [0 6 1]
// (a one-column image reads the same in either order).
func TestRLEDocumentedExamples(t *testing.T) {
	for _, c := range []struct {
		m      []uint8
		counts []uint32
	}{
		{[]uint8{0, 0, 1, 1, 1, 0, 1}, []uint32{2, 3, 1, 1}},
		{[]uint8{1, 1, 1, 1, 1, 1, 0}, []uint32{0, 6, 1}},
	} {
		g := NewGray(1, len(c.m))
		for i, v := range c.m {
			g.Pix[i] = v * 255
		}
		if r := EncodeRLE(g); !slices.Equal(r.Counts, c.counts) || r.H != 7 || r.W != 1 {
			t.Errorf("%v: encoded %+v, want counts %v", c.m, r, c.counts)
		}
		if d := (RLE{H: 7, W: 1, Counts: c.counts}).Decode(); !bytes.Equal(d.Pix, g.Pix) {
			t.Errorf("%v decodes to %v", c.counts, d.Pix)
		}
	}
}

// TestRLEColumnMajor: a 3 x 2 mask worked by hand. Rows [0 1 1] and
// [0 0 1] read down the columns are 0 0 | 1 0 | 1 1, so the runs are
// 2 zeros, 1 one, 1 zero, 2 ones; compressed, each count under 16 is one
// character '0'+count, the fourth less the second: "2111".
func TestRLEColumnMajor(t *testing.T) {
	g := NewGray(3, 2)
	copy(g.Pix, []uint8{0, 255, 255, 0, 0, 255})
	r := EncodeRLE(g)
	if !slices.Equal(r.Counts, []uint32{2, 1, 1, 2}) {
		t.Fatalf("counts %v, want [2 1 1 2]", r.Counts)
	}
	if s := r.String(); s != "2111" {
		t.Fatalf("compressed %q, want \"2111\"", s)
	}
	back, err := ParseRLE(2, 3, "2111")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(back.Decode().Pix, g.Pix) || back.Area() != 3 {
		t.Fatalf("decoded %v (area %d), want %v", back.Decode().Pix, back.Area(), g.Pix)
	}
}

// TestRLEStringByHand checks the compressed form against counts worked
// through rleToString by hand: 5 bits a character, bit 0x20 "more
// follows", bit 0x10 of the last character the sign, offset by '0'.
func TestRLEStringByHand(t *testing.T) {
	for _, c := range []struct {
		h, w   int
		counts []uint32
		s      string
	}{
		// 100 = 3<<5 | 4: 'T' ('0'+4+0x20), then '3'.
		{10, 10, []uint32{100}, "T3"},
		// The fourth count goes in as 1-3 = -2: 0x1e, sign bit set, 'N'.
		{2, 3, []uint32{0, 3, 2, 1}, "032N"},
		// 50 = 1<<5 | 18: 18 has bit 0x10, so a second character must
		// say the number is positive: 'b' '1'. 10 is ':', 2 is '2', and
		// the fourth count 38 goes in as 38-10 = 28 = 0x1c, which needs
		// a second, zero, character for the same reason: 'l' '0'.
		{10, 10, []uint32{50, 10, 2, 38}, "b1:2l0"},
	} {
		r := RLE{H: c.h, W: c.w, Counts: c.counts}
		if s := r.String(); s != c.s {
			t.Errorf("%v: compressed %q, want %q", c.counts, s, c.s)
		}
		back, err := ParseRLE(c.h, c.w, c.s)
		if err != nil || !slices.Equal(back.Counts, c.counts) {
			t.Errorf("%q: parsed %v, %v; want %v", c.s, back.Counts, err, c.counts)
		}
	}
}

func TestRLERoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 50 {
		w, h := 1+r.IntN(40), 1+r.IntN(40)
		g := NewGray(w, h)
		p := r.Float64()
		for i := range g.Pix {
			// Runs of varied length: repeat the last value most of the
			// time.
			if i > 0 && r.Float64() < p {
				g.Pix[i] = g.Pix[i-1]
			} else if r.IntN(2) == 1 {
				g.Pix[i] = 255
			}
		}
		enc := EncodeRLE(g)
		back, err := ParseRLE(h, w, enc.String())
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(back.Decode().Pix, g.Pix) {
			t.Fatalf("%dx%d mask does not survive encode, compress, parse, decode", w, h)
		}
	}
}

func TestParseRLEErrors(t *testing.T) {
	for _, c := range []struct {
		s, want string
	}{
		{"b", "ends inside a number"},
		{"2 11", "character ' ' at 1"},
		{"0N", "count 1 is -2"},
		{"2112", "add up to 7 pixels"},
		{"ooooooo1", "too long"},
	} {
		_, err := ParseRLE(2, 3, c.s)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: got %v, want %q", c.s, err, c.want)
		}
	}
}
