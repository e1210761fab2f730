package eval

import (
	"fmt"
	"strings"
)

// DefaultImagesPerPrompt is the number of images per (subject, prompt)
// when CaseOptions leaves it zero. The paper (IV-A) names DreamBench but
// not the count; 4 is DreamBench's own protocol from DreamBooth (25
// prompts x 4 images per subject, 3,000 images over the 30 subjects).
const DefaultImagesPerPrompt = 4

// CaseOptions configures Cases and MultiCases. The zero value is the
// default protocol.
type CaseOptions struct {
	// ImagesPerPrompt is the number of images per (subject, prompt);
	// zero or less means DefaultImagesPerPrompt.
	ImagesPerPrompt int
	// BaseSeed is the seed of image 0; image k uses BaseSeed + k.
	BaseSeed uint64
	// Limit, when positive, keeps only the first Limit cases (for quick
	// runs); the cases kept are the same as in a full run.
	Limit int
}

func (o CaseOptions) images() int {
	if o.ImagesPerPrompt <= 0 {
		return DefaultImagesPerPrompt
	}
	return o.ImagesPerPrompt
}

// Layout is a named requested box, normalised x0, y0, x1, y1 with the
// origin at the top left (the project's convention; PixelBox converts).
type Layout struct {
	Name string
	Box  [4]float64
}

// DreamBenchLayouts are the single-subject layouts. The coordinates are
// multiples of 1/32, so on a 512 x 512 image every edge is a whole pixel.
var DreamBenchLayouts = []Layout{
	{"centre", [4]float64{0.25, 0.25, 0.75, 0.75}},
	{"left", [4]float64{0.0625, 0.25, 0.5, 0.75}},
	{"right", [4]float64{0.5, 0.25, 0.9375, 0.75}},
	{"small", [4]float64{0.375, 0.375, 0.625, 0.625}},
	{"large", [4]float64{0.0625, 0.0625, 0.9375, 0.9375}},
	// Lower half: where a subject standing on the ground of a scene
	// ("on the beach", "on top of a white rug") usually is.
	{"bottom", [4]float64{0.25, 0.4375, 0.75, 0.9375}},
}

// MultiLayout is a named pair of requested boxes, the live subject's
// first, that do not overlap.
type MultiLayout struct {
	Name  string
	Boxes [2][4]float64
}

// DreamBenchMultiLayouts are the two-subject layouts; the boxes of each
// are separated by a gap of 1/16 along x, so neither subject's box
// touches the other's.
var DreamBenchMultiLayouts = []MultiLayout{
	{"live-left", [2][4]float64{{0.0625, 0.25, 0.46875, 0.75}, {0.53125, 0.25, 0.9375, 0.75}}},
	{"live-right", [2][4]float64{{0.53125, 0.25, 0.9375, 0.75}, {0.0625, 0.25, 0.46875, 0.75}}},
	// A large live subject beside a small object: unequal sizes test
	// the scale constraint as well as the position.
	{"live-large", [2][4]float64{{0.0625, 0.1875, 0.5625, 0.8125}, {0.625, 0.4375, 0.9375, 0.75}}},
}

// DreamBenchPairs are the multi-subject pairs: {live subject, object},
// by DreamBench folder name. Each live subject appears once; the objects
// are of different classes from each other and from the live subjects, so
// that a detector can tell the two apart, and their class nouns take "a"
// (no "glasses"), so the prompts read naturally.
var DreamBenchPairs = [][2]string{
	{"dog", "backpack"},
	{"dog2", "teapot"},
	{"dog3", "clock"},
	{"dog5", "berry_bowl"},
	{"dog6", "vase"},
	{"dog7", "robot_toy"},
	{"dog8", "candle"},
	{"cat", "bear_plushie"},
	{"cat2", "colorful_sneaker"},
}

// DreamBenchMultiPrompts are the multi-subject prompt templates: {live}
// and {object} are replaced by the two class nouns. They are DreamBench's
// ten scene prompts (1-10, shared by the object and live lists) with both
// subjects named, so single- and multi-subject scores compare on the same
// scenes.
var DreamBenchMultiPrompts = []string{
	"a {live} and a {object} in the jungle",
	"a {live} and a {object} in the snow",
	"a {live} and a {object} on the beach",
	"a {live} and a {object} on a cobblestone street",
	"a {live} and a {object} on top of pink fabric",
	"a {live} and a {object} on top of a wooden floor",
	"a {live} and a {object} with a city in the background",
	"a {live} and a {object} with a mountain in the background",
	"a {live} and a {object} with a blue house in the background",
	"a {live} and a {object} on top of a purple rug in a forest",
}

// Case is one single-subject image to generate.
type Case struct {
	Subject *Subject
	// Prompt is the tuning-free prompt; PromptIndex its index in the
	// subject's prompt list.
	Prompt      string
	PromptIndex int
	// Box is the requested box (normalised x0, y0, x1, y1), Layout its
	// name in DreamBenchLayouts.
	Box    [4]float64
	Layout string
	Seed   uint64
	// ImageIndex counts the images of one (subject, prompt) from 0.
	ImageIndex int
}

// Cases lists the single-subject cases, by subject, then prompt, then
// image. The protocol:
//
//   - every subject is generated with every prompt of its kind in the
//     tuning-free form (TuningFreePrompt: "a dog in the jungle"),
//     ImagesPerPrompt times: 30 subjects x 25 prompts x 4 images = 3,000
//     images by default;
//   - each (subject, prompt) asks for one box, the layout
//     DreamBenchLayouts[(subject index + prompt index) mod 6], so a
//     subject's consecutive prompts cycle through the layouts and every
//     subject is tried in every layout;
//   - image k of every (subject, prompt) uses seed BaseSeed + k: the same
//     starting noise for every prompt and every method compared, so the
//     methods differ only in what they do with it.
//
// The same options give the same cases, in the same order.
func (d *DreamBench) Cases(opts CaseOptions) []Case {
	var cases []Case
	for si := range d.Subjects {
		s := &d.Subjects[si]
		for pi, t := range d.Prompts(s) {
			l := DreamBenchLayouts[(si+pi)%len(DreamBenchLayouts)]
			for k := range opts.images() {
				if opts.Limit > 0 && len(cases) == opts.Limit {
					return cases
				}
				cases = append(cases, Case{
					Subject: s, Prompt: TuningFreePrompt(t, s.Class), PromptIndex: pi,
					Box: l.Box, Layout: l.Name, Seed: opts.BaseSeed + uint64(k), ImageIndex: k,
				})
			}
		}
	}
	return cases
}

// MultiCase is one two-subject image to generate.
type MultiCase struct {
	// Subjects are the live subject and the object, in the order the
	// prompt names them; Boxes their requested boxes.
	Subjects [2]*Subject
	Boxes    [2][4]float64
	// Pair is the index in DreamBenchPairs, PromptIndex in
	// DreamBenchMultiPrompts, Layout the name in DreamBenchMultiLayouts.
	Pair, PromptIndex int
	Prompt            string
	Layout            string
	Seed              uint64
	ImageIndex        int
}

// MultiCases lists the multi-subject cases, by pair, then prompt, then
// image. MultiBench (from lambda-ECLIPSE), the paper's multi-subject
// benchmark, is not public, so this protocol pairs DreamBench subjects
// instead:
//
//   - the fixed pairs DreamBenchPairs, a live subject and an object, each
//     with every prompt of DreamBenchMultiPrompts, ImagesPerPrompt times:
//     9 pairs x 10 prompts x 4 images = 360 images by default;
//   - the boxes of (pair, prompt) are
//     DreamBenchMultiLayouts[(pair index + prompt index) mod 3], two boxes
//     that never overlap;
//   - seeds are as in Cases: BaseSeed + image index.
//
// It fails, naming the subject, if a
// pair's subject is not in d or is of the wrong kind.
func (d *DreamBench) MultiCases(opts CaseOptions) ([]MultiCase, error) {
	var cases []MultiCase
	for pi, pair := range DreamBenchPairs {
		var subs [2]*Subject
		for j, name := range pair {
			s := d.Subject(name)
			if s == nil {
				return nil, fmt.Errorf("dreambench: pair subject %q not in %s", name, d.Dir)
			}
			if s.Live != (j == 0) {
				return nil, fmt.Errorf("dreambench: pair %d wants a live subject then an object, %q is not", pi, name)
			}
			subs[j] = s
		}
		r := strings.NewReplacer("{live}", subs[0].Class, "{object}", subs[1].Class)
		for ti, t := range DreamBenchMultiPrompts {
			l := DreamBenchMultiLayouts[(pi+ti)%len(DreamBenchMultiLayouts)]
			for k := range opts.images() {
				if opts.Limit > 0 && len(cases) == opts.Limit {
					return cases, nil
				}
				cases = append(cases, MultiCase{
					Subjects: subs, Boxes: l.Boxes, Pair: pi, PromptIndex: ti,
					Prompt: r.Replace(t), Layout: l.Name,
					Seed: opts.BaseSeed + uint64(k), ImageIndex: k,
				})
			}
		}
	}
	return cases, nil
}

// Subject returns the subject of that folder name, or nil.
func (d *DreamBench) Subject(name string) *Subject {
	for i := range d.Subjects {
		if d.Subjects[i].Name == name {
			return &d.Subjects[i]
		}
	}
	return nil
}
