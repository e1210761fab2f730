package data

import (
	"errors"
	"fmt"
	"strings"
)

// RLE is a binary mask in COCO's run-length encoding (pycocotools'
// maskApi.c): the pixels are read in column-major order (down the first
// column, then the second, ...), and Counts are the lengths of alternating
// runs of 0s and 1s, starting with 0s (so the first count may be 0).
// pycocotools documents it with the vectors [0 0 1 1 1 0 1] -> [2 3 1 1]
// and [1 1 1 1 1 1 0] -> [0 6 1].
type RLE struct {
	H, W   int
	Counts []uint32
}

// check makes sure the runs cover the mask exactly: pycocotools would leave
// the rest of its output uninitialised, or write past it.
func (r RLE) check() error {
	var sum uint64
	for _, c := range r.Counts {
		sum += uint64(c)
	}
	if sum != uint64(r.H)*uint64(r.W) {
		return fmt.Errorf("RLE counts add up to %d pixels, size [%d,%d] has %d", sum, r.H, r.W, r.H*r.W)
	}
	return nil
}

// Decode is the mask, 255 inside (pycocotools' rleDecode, whose 1 becomes
// 255 here, transposed to row-major).
func (r RLE) Decode() *Gray {
	g := NewGray(r.W, r.H)
	n := r.W * r.H
	j := 0 // column-major position
	for i, c := range r.Counts {
		if i%2 == 0 { // a run of 0s: nothing to write
			j += int(c)
			continue
		}
		// min: counts that overrun the mask (check would refuse them)
		// stop at its end.
		for end := min(j+int(c), n); j < end; j++ {
			g.Pix[(j%r.H)*r.W+j/r.H] = 255
		}
	}
	return g
}

// EncodeRLE is pycocotools' rleEncode of m != 0.
func EncodeRLE(m *Gray) RLE {
	r := RLE{H: m.H, W: m.W}
	var run uint32
	inside := false
	for x := range m.W {
		for y := range m.H {
			if (m.Pix[y*m.W+x] != 0) != inside {
				r.Counts = append(r.Counts, run)
				run, inside = 0, !inside
			}
			run++
		}
	}
	r.Counts = append(r.Counts, run)
	return r
}

// String is the compressed counts, pycocotools' rleToString: each count,
// less the count two before it from the fourth on, as a LEB128-like
// variable-length signed integer with 5 bits per character, the sixth bit
// meaning "more follows", offset into the ASCII range '0'..'o'.
func (r RLE) String() string {
	var b strings.Builder
	for i, c := range r.Counts {
		x := int64(c)
		if i > 2 {
			x -= int64(r.Counts[i-2])
		}
		for more := true; more; {
			ch := x & 0x1f
			x >>= 5
			if ch&0x10 != 0 {
				more = x != -1
			} else {
				more = x != 0
			}
			if more {
				ch |= 0x20
			}
			b.WriteByte(byte(ch + 48))
		}
	}
	return b.String()
}

// ParseRLE decodes compressed counts (pycocotools' rleFrString) of an h x w
// mask. Where pycocotools would read garbage without complaint (a character
// outside '0'..'o', a string ending inside a number, a count that comes out
// negative) this is an error.
func ParseRLE(h, w int, s string) (RLE, error) {
	r := RLE{H: h, W: w}
	for p := 0; p < len(s); {
		var x int64
		for k := 0; ; k++ {
			if p == len(s) {
				return RLE{}, errors.New("RLE counts string ends inside a number")
			}
			if s[p] < '0' || s[p] > 'o' {
				return RLE{}, fmt.Errorf("RLE counts string: character %q at %d is outside '0'..'o'", s[p], p)
			}
			if k == 7 { // 35 bits: more than any 32-bit count needs
				return RLE{}, fmt.Errorf("RLE counts string: number at %d too long", p)
			}
			c := int64(s[p] - '0')
			p++
			x |= (c & 0x1f) << (5 * k)
			if c&0x20 == 0 {
				if c&0x10 != 0 { // negative: extend the sign
					x |= -1 << (5 * (k + 1))
				}
				break
			}
		}
		if n := len(r.Counts); n > 2 {
			x += int64(r.Counts[n-2])
		}
		if x < 0 || x > 1<<32-1 {
			return RLE{}, fmt.Errorf("RLE counts string: count %d is %d", len(r.Counts), x)
		}
		r.Counts = append(r.Counts, uint32(x))
	}
	return r, r.check()
}

// Area is the number of pixels inside.
func (r RLE) Area() int {
	a := 0
	for i := 1; i < len(r.Counts); i += 2 {
		a += int(r.Counts[i])
	}
	return a
}
