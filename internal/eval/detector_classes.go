package eval

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
)

// A class map says, per benchmark subject, which detector classes stand for
// it (shared/spec/detector.md, "Matching"): DreamBench's backpack_dog is a
// backpack, its stuffed animals are COCO's "teddy bear". A subject no
// detector class stands for cannot be found by that detector, so it is
// left out of AP (and the summary says so) rather than counted as missed.

// ClassMap resolves subjects to detector classes.
type ClassMap struct {
	// Classes are the detector's class names (DetectorConfig.Classes);
	// nil for a bench's own detector, whose subjects name their classes.
	Classes []string
	// Override maps a subject name, or a class noun, to detector classes;
	// a subject's own name wins over its class noun. From --class-map.
	Override map[string][]string
}

// classSynonyms are detector class names that stand for a DreamBench class
// noun, in the vocabularies of the detectors people export: COCO (LW-DETR,
// DETR, YOLO), Objects365 and LVIS. Only names the detector has are used.
var classSynonyms = map[string][]string{
	"stuffed animal": {"teddy bear", "stuffed toy", "stuffed animal", "teddy_bear"},
	"sneaker":        {"sneakers", "shoe", "shoes"},
	"boot":           {"boots", "shoe", "shoes"},
	"glasses":        {"sunglasses", "eyeglasses", "glasses"},
	"teapot":         {"teapot", "tea pot", "kettle"},
	"bowl":           {"bowl"},
	"can":            {"can", "canned", "beverage can"},
	"toy":            {"toy", "teddy bear"},
}

// Resolve is the detector classes that stand for subject s, in the
// detector's order and spelling: the subject's own list when its bench
// gives one, else the override for its name or class, else its class noun
// and the synonyms of classSynonyms that the detector has. Names compare
// case-insensitively. An empty result means the detector cannot find s.
func (m ClassMap) Resolve(s *ItemSubject) []string {
	var want []string
	switch {
	case len(s.DetectorClasses) > 0:
		want = s.DetectorClasses
	case m.Override[s.Name] != nil:
		want = m.Override[s.Name]
	case m.Override[s.Class] != nil:
		want = m.Override[s.Class]
	default:
		want = append([]string{s.Class}, classSynonyms[normClass(s.Class)]...)
	}
	if m.Classes == nil {
		return want // a bench's own detector: its names are the truth
	}
	var out []string
	for _, c := range m.Classes {
		if slices.ContainsFunc(want, func(w string) bool { return normClass(w) == normClass(c) }) {
			out = append(out, c)
		}
	}
	return out
}

func normClass(s string) string { return strings.ToLower(strings.TrimSpace(s)) }

// LoadClassMapOverride reads a --class-map file: a JSON object from subject
// name or class noun to a list of detector class names, e.g.
// {"backpack_dog": ["backpack"], "toy": ["teddy bear"]}. Every class named
// must be one of the detector's, so a typo is an error, not a subject
// silently left out of AP.
func LoadClassMapOverride(path string, classes []string) (map[string][]string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("class map: %w", err)
	}
	var m map[string][]string
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("class map %s: want a JSON object of subject or class -> [detector classes]: %w", path, err)
	}
	for key, list := range m {
		if list == nil {
			m[key] = []string{} // null: explicitly none
		}
		for _, c := range list {
			if !slices.ContainsFunc(classes, func(d string) bool { return normClass(d) == normClass(c) }) {
				return nil, fmt.Errorf("class map %s: %q -> %q: the detector has no class %q", path, key, c, c)
			}
		}
	}
	return m, nil
}
