package data

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
)

// sceneKind is what a scene may contain: training scenes only training
// identities in training layouts; test scenes change one of the two, so
// that an evaluation can tell a model that fails on new subjects from one
// that fails on new arrangements.
type sceneKind int

const (
	sceneTrain       sceneKind = iota
	sceneNewIdentity           // at least one held-out identity, a training layout
	sceneNewLayout             // training identities in a held-out layout
)

// The scene's layout is which cells of a 3 x 3 grid its subjects start
// in, one subject per cell.
const toyGrid = 3

// heldOutLayout says whether a layout is kept for the test set: two or
// more subjects stacked in one column, an arrangement training never shows.
func heldOutLayout(cells []int) bool {
	if len(cells) < 2 {
		return false
	}
	for _, c := range cells[1:] {
		if c%toyGrid != cells[0]%toyGrid {
			return false
		}
	}
	return true
}

// toyScene is one record before it is drawn.
type toyScene struct {
	background int
	ids        []int    // indices into the identity table, distinct
	poses      [][]pose // [subject][frame]
}

// newToyScene draws a scene of kind with frames frames (1 for an image).
// With pairsSeen a training scene may hold the held-out identities too
// (ToyWorldConfig.HoldOutPalette: the caller draws them in other palettes).
func newToyScene(r *rand.Rand, ids []Identity, kind sceneKind, size, frames int, pairsSeen bool) toyScene {
	var train, held []int
	for i, id := range ids {
		if id.HeldOut {
			held = append(held, i)
		} else {
			train = append(train, i)
		}
	}
	n := []int{1, 1, 2, 2, 3}[r.IntN(5)]
	if kind == sceneNewLayout {
		n = 2 + r.IntN(2)
	}
	s := toyScene{background: r.IntN(len(toyBackgrounds))}
	switch kind {
	case sceneNewIdentity:
		first := []int{held[r.IntN(len(held))]}
		s.ids = append(first, pickDistinct(r, slices.Concat(train, held), n-1, first)...)
		r.Shuffle(n, func(i, j int) { s.ids[i], s.ids[j] = s.ids[j], s.ids[i] })
	case sceneTrain:
		pool := train
		if pairsSeen {
			pool = slices.Concat(train, held)
		}
		s.ids = pickDistinct(r, pool, n, nil)
	default:
		s.ids = pickDistinct(r, train, n, nil)
	}

	var cells []int
	if kind == sceneNewLayout {
		col := r.IntN(toyGrid)
		for _, row := range r.Perm(toyGrid)[:n] {
			cells = append(cells, row*toyGrid+col)
		}
	} else {
		for {
			if cells = r.Perm(toyGrid * toyGrid)[:n]; !heldOutLayout(cells) {
				break
			}
		}
	}
	s.poses = placeSubjects(r, cells, size, frames)
	return s
}

// pickDistinct is n members of pool, none of them in taken.
func pickDistinct(r *rand.Rand, pool []int, n int, taken []int) []int {
	var out []int
	for _, i := range r.Perm(len(pool)) {
		if len(out) == n {
			break
		}
		c := pool[i]
		if !slices.Contains(taken, c) && !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	return out
}

// placeSubjects draws each subject's pose in every frame: it starts near
// its cell's centre and, in a clip, moves in a straight line, spins and
// grows or shrinks. Draws in which a subject leaves the image or touches
// another in any frame are drawn again; after that the subjects stand
// still at their cells' centres, which always fits, since the largest
// radius is under a half cell less the gap.
func placeSubjects(r *rand.Rand, cells []int, size, frames int) [][]pose {
	s := float64(size)
	cell := s / toyGrid
	for range 50 {
		poses := make([][]pose, len(cells))
		for k, c := range cells {
			cx := (float64(c%toyGrid)+.5)*cell + symmetric(r, s/24)
			cy := (float64(c/toyGrid)+.5)*cell + symmetric(r, s/24)
			r0 := s * (0.1 + 0.05*r.Float64())
			dir, dist := r.Float64()*2*math.Pi, r.Float64()*0.2*s
			angle, spin := r.Float64()*2*math.Pi, symmetric(r, 0.3)
			grow := 0.8 + 0.4*r.Float64()
			for t := range frames {
				f := 0.0 // the clip's progress, 0 to 1
				if frames > 1 {
					f = float64(t) / float64(frames-1)
				}
				poses[k] = append(poses[k], pose{
					cx:    cx + f*dist*math.Cos(dir),
					cy:    cy + f*dist*math.Sin(dir),
					r:     r0 * (1 + (grow-1)*f),
					angle: angle + spin*float64(t),
				})
			}
		}
		if posesFit(poses, s) {
			return poses
		}
	}
	poses := make([][]pose, len(cells))
	for k, c := range cells {
		p := pose{cx: (float64(c%toyGrid) + .5) * cell, cy: (float64(c/toyGrid) + .5) * cell, r: 0.12 * s}
		for range frames {
			poses[k] = append(poses[k], p)
		}
	}
	return poses
}

// posesFit: in every frame every subject is inside the image with a
// pixel to spare and two pixels from every other, so that masks never
// overlap and boxes never touch the border.
func posesFit(poses [][]pose, s float64) bool {
	for t := range poses[0] {
		for k, ps := range poses {
			p := ps[t]
			if p.cx-p.r < 1 || p.cy-p.r < 1 || p.cx+p.r > s-1 || p.cy+p.r > s-1 {
				return false
			}
			for _, qs := range poses[k+1:] {
				q := qs[t]
				if math.Hypot(p.cx-q.cx, p.cy-q.cy) < p.r+q.r+2 {
					return false
				}
			}
		}
	}
	return true
}

// caption is "a P1, a P2 and a P3 on sand" for subjects that look as
// looks says: each phrase as it is in the caption, and the whole.
func (s toyScene) caption(looks []Identity) (string, []string) {
	var phrases, parts []string
	for _, look := range looks {
		p := look.Phrase()
		phrases = append(phrases, p)
		parts = append(parts, IndefiniteArticle(p)+" "+p)
	}
	list := parts[0]
	if n := len(parts); n > 1 {
		list = strings.Join(parts[:n-1], ", ") + " and " + parts[n-1]
	}
	return list + " " + toyBackgrounds[s.background].words, phrases
}

// IndefiniteArticle is "an" before a word that starts with a vowel letter,
// else "a": the spelling rule, which captions follow closely enough for a
// text encoder.
func IndefiniteArticle(word string) string {
	if word != "" && strings.ContainsRune("aeiouAEIOU", rune(word[0])) {
		return "an"
	}
	return "a"
}
