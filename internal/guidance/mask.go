package guidance

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/lcpdiff/lcpdiff/internal/model/clip"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// Bounds are the cells [LoX, HiX) x [LoY, HiY) a box covers on a layer's
// grid: columns j (x, to the right) and rows i (y, downwards).
type Bounds struct {
	LoX, HiX, LoY, HiY int
}

// BoxBounds places a normalised box (x0, y0, x1, y1) on an h x w grid with
// the spec's rule: the low edge rounds down and the high edge up, both
// clamped to the grid, and a box that covers no cell keeps one, so that
// no subject vanishes at a coarse layer.
func BoxBounds(box [4]float64, h, w int) Bounds {
	loX, hiX := cells(box[0], box[2], w)
	loY, hiY := cells(box[1], box[3], h)
	return Bounds{LoX: loX, HiX: hiX, LoY: loY, HiY: hiY}
}

// cells is the interval [lo, hi) of n cells that the normalised interval
// (a, b) covers.
func cells(a, b float64, n int) (lo, hi int) {
	// Clamping before the conversion keeps huge values from overflowing int.
	clamp := func(v float64) int { return int(min(max(v, 0), float64(n))) }
	lo, hi = clamp(math.Floor(a*float64(n))), clamp(math.Ceil(b*float64(n)))
	if hi <= lo {
		hi = min(lo+1, n)
		if hi <= lo { // lo was n: take the last cell
			lo = hi - 1
		}
	}
	return lo, hi
}

// Mask is M_k [h, w]: 1 inside the bounds, 0 elsewhere.
func (b Bounds) Mask(h, w int) *torch.Tensor {
	m := make([]float32, h*w)
	for i := b.LoY; i < b.HiY; i++ {
		for j := b.LoX; j < b.HiX; j++ {
			m[i*w+j] = 1
		}
	}
	return torch.New(m, int64(h), int64(w))
}

// ProjX is m_x [w] = max_i M(i, j): 1 on the box's columns.
func (b Bounds) ProjX(w int) *torch.Tensor { return indicator(w, b.LoX, b.HiX) }

// ProjY is m_y [h] = max_j M(i, j): 1 on the box's rows.
func (b Bounds) ProjY(h int) *torch.Tensor { return indicator(h, b.LoY, b.HiY) }

// cornerWidth is L, the half-width in cells of the band around each box
// edge where the scale loss looks.
const cornerWidth = 1

// CornerX is v_x [w]: 1 within cornerWidth cells of the box's first or
// last column.
func (b Bounds) CornerX(w int) *torch.Tensor { return corners(w, b.LoX, b.HiX) }

// CornerY is v_y [h]: 1 within cornerWidth cells of the box's first or
// last row.
func (b Bounds) CornerY(h int) *torch.Tensor { return corners(h, b.LoY, b.HiY) }

func indicator(n, lo, hi int) *torch.Tensor {
	v := make([]float32, n)
	for j := lo; j < hi; j++ {
		v[j] = 1
	}
	return torch.New(v)
}

func corners(n, lo, hi int) *torch.Tensor {
	v := make([]float32, n)
	for j := range v {
		if abs(j-lo) <= cornerWidth || abs(j-(hi-1)) <= cornerWidth {
			v[j] = 1
		}
	}
	return torch.New(v)
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// TokenPositions finds words (one or more) in the tokenised prompt and
// returns their token positions, counting the start token as 0: the
// positions of the words' own tokens (tokenised alone, without start and
// end tokens) where they first occur in the prompt's 77 ids. When they do
// not occur, the error lists the prompt's words with their positions.
func TokenPositions(tok *clip.Tokenizer, prompt, words string) ([]int64, error) {
	want := tok.Encode(words)
	want = want[1 : len(want)-1] // without start and end
	if len(want) == 0 {
		return nil, fmt.Errorf("subject words %q have no tokens", words)
	}
	ids, _ := tok.EncodePadded(prompt)
	for at := range len(ids) - len(want) + 1 {
		if slices.Equal(ids[at:at+len(want)], want) {
			pos := make([]int64, len(want))
			for k := range pos {
				pos[k] = int64(at + k)
			}
			return pos, nil
		}
	}
	return nil, fmt.Errorf("subject words %q are not among the prompt's tokens: %s", words, promptTokens(tok, prompt))
}

// promptTokens lists the prompt's words with their token positions, as
// "a@1 dog@2 grassland@8-9". CLIP tokenises whitespace-separated words
// independently, so the words' tokens add up to the prompt's; if they do
// not (exotic whitespace), the ids themselves are listed.
func promptTokens(tok *clip.Tokenizer, prompt string) string {
	ids := tok.Encode(prompt)
	ids = ids[1 : len(ids)-1]
	var list []string
	pos := 1 // after the start token
	for _, word := range strings.Fields(prompt) {
		n := len(tok.Encode(word)) - 2
		if n <= 0 {
			continue
		}
		span := fmt.Sprint(pos)
		if n > 1 {
			span = fmt.Sprintf("%d-%d", pos, pos+n-1)
		}
		list = append(list, word+"@"+span)
		pos += n
	}
	if pos-1 != len(ids) {
		return fmt.Sprintf("ids %v from position 1", ids)
	}
	if room := tok.MaxLength - 2; len(ids) > room {
		return strings.Join(list, " ") + fmt.Sprintf(" (truncated after position %d)", room)
	}
	return strings.Join(list, " ")
}
